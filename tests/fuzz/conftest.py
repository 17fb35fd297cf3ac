"""Servers the gRPC fuzzers call: one process each of render, guidance and jobs on loopback (local mode),
with small limits so that a generated request that is valid stays cheap on two cores."""

from __future__ import annotations

import pytest

from services.common.process import ServiceProcess
from tests.helpers import single_thread  # noqa: F401 - one torch thread in this process too

RENDER_LIMITS = ["--max-render-pixels", str(4 * 48 * 48), "--max-tenant-bytes", str(64 << 20),
                 "--max-gaussians", "20000", "--max-triangles", "20000", "--max-asset-bytes", str(4 << 20),
                 "--max-scenes-per-tenant", "12", "--max-pending-steps", "4"]


@pytest.fixture(scope="session")
def render_fuzz_server(tmp_path_factory):
    logs = tmp_path_factory.mktemp("render-fuzz")
    proc = ServiceProcess(["render", "--port", "0", "--max-workers", "4", "--device", "cpu", *RENDER_LIMITS],
                          logs / "render.log", env={"OMP_NUM_THREADS": "1"})
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def guidance_fuzz_server(tmp_path_factory):
    logs = tmp_path_factory.mktemp("guidance-fuzz")
    proc = ServiceProcess(["guidance", "--port", "0", "--max-workers", "4", "--device", "cpu",
                           "--max-queue-delay-ms", "0", "--max-batch-images", "8"], logs / "guidance.log",
                          env={"OMP_NUM_THREADS": "1"})
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def jobs_fuzz_server(tmp_path_factory):
    d = tmp_path_factory.mktemp("jobs-fuzz")
    (d / "models").mkdir()
    proc = ServiceProcess(["jobs", "--runtime", "none", "--port", "0", "--store", str(d / "jobs.db"),
                           "--artifacts", str(d / "artifacts"), "--max-active-jobs", "3",
                           "--max-watch-streams", "4", "--model-root", str(d / "models"), "--max-workers", "8",
                           "--grace-s", "1"], d / "jobs.log")
    proc.store_path, proc.models = d / "jobs.db", d / "models"
    yield proc
    proc.stop()
