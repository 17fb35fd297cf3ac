"""A user's path through a running jobs service that executes jobs on Ray: `headforge serve jobs` (its own
Ray, services in-process inside each subject's actor, a declared fake GPU shared by subjects), then
`headforge submit`, `watch`, `fetch` and `status` as separate commands, with two tenants."""

from __future__ import annotations

import pytest

from services.common.process import ServiceProcess
from tests.helpers import headforge


@pytest.fixture(scope="module")
def jobs_with_ray(tmp_path_factory):
    d = tmp_path_factory.mktemp("jobs-ray")
    (d / "tokens.yaml").write_text("tokens: {tok-a: tenant-a, tok-b: tenant-b}\n")
    proc = ServiceProcess(["jobs", "--port", "0", "--store", str(d / "jobs.db"), "--artifacts", str(d / "artifacts"),
                           "--tokens-file", str(d / "tokens.yaml"), "--ray-resource", "fake_gpu=1",
                           "--subject-resource", "fake_gpu=0.5", "--subject-cpus", "0.5", "--grace-s", "5"],
                          d / "jobs.log")
    yield proc
    proc.stop()


def test_submit_watch_fetch(jobs_with_ray, tmp_path):
    target = ["--target", jobs_with_ray.address]
    sub = headforge("submit", "--recipe", "analytic_prior", "--option", "stages.optimise.iterations=20",
                    *target, "--token", "tok-a")
    assert sub.returncode == 0, sub.stderr
    job_id = sub.stdout.split()[-1]
    watch = headforge("watch", job_id, *target, "--token", "tok-a")
    assert watch.returncode == 0, watch.stdout + watch.stderr
    fetch = headforge("fetch", job_id, "--out", str(tmp_path), *target, "--token", "tok-a")
    assert fetch.returncode == 0, fetch.stderr
    assert (tmp_path / "export" / "head.ply").stat().st_size > 1000
    other = headforge("status", job_id, *target, "--token", "tok-b")
    assert other.returncode != 0 and "NOT_FOUND" in (other.stdout + other.stderr).upper().replace(" ", "_")
