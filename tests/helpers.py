"""Small helpers shared by the test suites."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from services.common import auth
from services.common.errors import NotFound, PermissionDenied
from services.common.process import ROOT


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Torch on one thread for a module: small CPU kernels on a shared 2-core machine run faster so and the
    timings do not depend on what else runs. Import it into a conftest.py to apply it to a folder."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


class Tenant:
    """A client acting for one tenant (in-process: the tenant context the gRPC interceptor would set) that
    remembers what it created (the `created_by` method's result attribute `id_field`) and closes it with
    `close_method` when the test ends, so tests sharing a server do not run into its caps."""

    def __init__(self, client, tenant: str | None = None, *, created_by: str, id_field: str, close_method: str):
        self.client, self.tenant, self.created = client, tenant, []
        self._created_by, self._id_field, self._close = created_by, id_field, close_method

    def __getattr__(self, name):
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def call(*args, **kw):
            token = auth.set_tenant(self.tenant) if self.tenant else None
            try:
                result = attr(*args, **kw)
            finally:
                if token is not None:
                    auth.reset_tenant(token)
            if name == self._created_by:
                self.created.append(getattr(result, self._id_field))
            return result
        return call

    def cleanup(self):
        for resource_id in self.created:
            try:
                getattr(self, self._close)(resource_id)
            except (NotFound, PermissionDenied):
                pass


def headforge(*args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the `headforge` command as a user would (a fresh process from the repository root)."""
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def job_on_cluster(tmp_path, up_args: list[str], submit_args: list[str], before_submit=None,
                   timeout: float = 900):
    """`headforge cluster up` (state in tmp_path/cluster, with up_args), submit (submit_args), watch until it
    ends, fetch into tmp_path/fetched and `cluster down`; returns the fetched folder. before_submit(target):
    called with the jobs address once the cluster is up (extra checks against the live cluster)."""
    from pathlib import Path

    from services.common.process import free_port

    d = str(Path(tmp_path) / "cluster")
    up = headforge("cluster", "up", "--dir", d, "--jobs-port", str(free_port()), *up_args)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        target = headforge("cluster", "status", "--dir", d, "--jobs-address").stdout.strip()
        if before_submit is not None:
            before_submit(target)
        sub = headforge("submit", *submit_args, "--target", target)
        assert sub.returncode == 0, sub.stderr
        job = sub.stdout.split()[-1]
        watch = headforge("watch", job, "--target", target, timeout=timeout)
        assert watch.returncode == 0, watch.stdout + watch.stderr
        out = Path(tmp_path) / "fetched"
        fetch = headforge("fetch", job, "--out", str(out), "--target", target)
        assert fetch.returncode == 0, fetch.stderr
        return out
    finally:
        headforge("cluster", "down", "--dir", d)


def write_random_lpips(models, widths=(8, 16, 32, 32, 32)) -> None:
    """Random VGG16 + lin weights in the LPIPS layout where the services and stages read them
    (models/lpips/vgg16.pth, models/lpips/vgg.pth). Random weights: tests and benchmarks only."""
    from pathlib import Path

    from services.core.lpips import random_vgg_state

    folder = Path(models) / "lpips"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(random_vgg_state(widths, seed=3), folder / "vgg16.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(widths)}, folder / "vgg.pth")
