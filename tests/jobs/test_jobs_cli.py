"""The `headforge` job commands as a user runs them, against a `headforge serve jobs` process on loopback.
The test process plays the runtime on the same store and artifact root (a real JobStore, not a mock)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from orchestrator.jobs.artifacts import ArtifactStore
from orchestrator.jobs.store import JobStore
from orchestrator.jobs.types import Progress
from services.common.process import ROOT
from tests.conftest import png_bytes
from tests.helpers import headforge as run_headforge


def headforge(server, *args: str, token: str = "tok-a", timeout: float = 120) -> subprocess.CompletedProcess:
    return run_headforge(*args, timeout=timeout, env={"HEADFORGE_JOBS": server.address, "HEADFORGE_TOKEN": token})


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photos") / "me.png"
    path.write_bytes(png_bytes(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)))
    return path


def test_recipes_without_a_server():
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "recipes"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env={**os.environ, "HEADFORGE_JOBS": "127.0.0.1:1"})
    assert r.returncode == 0, r.stderr
    assert "sds_gaussians: One photo to 3D Gaussians" in r.stdout and "images: 1" in r.stdout


def test_submit_status_cancel(jobs_server, photo):
    r = headforge(jobs_server, "submit", str(photo), "--recipe", "sds_gaussians", "--option",
                  "stages.optimise.iterations=20", "--label", "exp=cli", "--name", "cli job")
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    r = headforge(jobs_server, "status", job_id)
    assert r.returncode == 0 and job_id in r.stdout and "QUEUED" in r.stdout and "preprocess=pending" in r.stdout
    r = headforge(jobs_server, "status", "--json")
    assert r.returncode == 0 and job_id in [j["id"] for j in json.loads(r.stdout)]
    r = headforge(jobs_server, "status", job_id, token="tok-b")
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr and "Traceback" not in r.stderr
    r = headforge(jobs_server, "cancel", job_id)
    assert r.returncode == 0 and "CANCELLED" in r.stdout
    r = headforge(jobs_server, "watch", job_id)
    assert r.returncode == 1 and "CANCELLED" in r.stdout     # already terminal: not a success
    r = headforge(jobs_server, "submit", str(photo), "--recipe", "sds_gaussians", "--option",
                  "stages.optimise.iterations=-1")
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr and "stages[2].params.iterations" in r.stderr


def test_jobs_process_serves_job_gauges_from_the_store(jobs_server, photo):
    """The jobs process's /metrics counts jobs by state and tenant from the shared store, including jobs
    another process moved on (the runtime here is this test process)."""
    from tests.integration.test_server_runtime import sample, scrape

    r = headforge(jobs_server, "submit", str(photo), "--recipe", "sds_gaussians")
    assert r.returncode == 0, r.stderr
    store = JobStore(jobs_server.store_path)
    counts, _ = store.state_summary()
    samples = scrape(jobs_server.metrics_port)
    for (state, tenant), n in counts.items():
        assert sample(samples, "headforge_jobs", state=state, tenant=tenant) == n, (state, tenant)
    assert counts[("queued", "tenant-a")] >= 1
    assert sample(samples, "headforge_jobs_oldest_queued_age_seconds") > 0
    store.request_cancel("tenant-a", r.stdout.strip())   # the other tests here claim the oldest queued job
    after = scrape(jobs_server.metrics_port)
    assert sample(after, "headforge_jobs", state="cancelled", tenant="tenant-a") == \
        sample(samples, "headforge_jobs", state="cancelled", tenant="tenant-a") + 1


def test_watch_until_succeeded_then_fetch(jobs_server, photo, tmp_path):
    r = headforge(jobs_server, "submit", str(photo), "--recipe", "sds_gaussians")
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    store, arts = JobStore(jobs_server.store_path), ArtifactStore(str(jobs_server.artifacts_root))

    def runtime():
        time.sleep(1.0)
        assert store.claim_next(8).id == job_id
        for stage in ("preprocess", "init", "optimise"):
            store.set_stage_state(job_id, stage, "running")
            if stage == "optimise":
                for step in range(1, 11):
                    store.record_progress(job_id, Progress(stage, step, 10, metrics={"loss": 0.1 * step}))
                    time.sleep(0.05)
            store.set_stage_state(job_id, stage, "succeeded")
        store.add_artifact(job_id, arts.write(job_id, "export/head.ply", b"ply\n" * 1000, "export"))
        store.set_job_state(job_id, "succeeded")

    t = threading.Thread(target=runtime)
    t.start()
    r = headforge(jobs_server, "watch", job_id)
    t.join()
    assert r.returncode == 0, r.stderr
    assert "SUCCEEDED" in r.stdout and "export/head.ply" in r.stdout and "optimise" in r.stdout
    out = tmp_path / "out"
    r = headforge(jobs_server, "fetch", job_id, "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(out / "export/head.ply")]
    assert (out / "export/head.ply").read_bytes() == b"ply\n" * 1000
    store.close()


def _headforge_in(cwd, server, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`headforge ARGS` run from another directory than the checkout (imports from it all the same)."""
    env = {**os.environ, "HEADFORGE_JOBS": server.address, "HEADFORGE_TOKEN": "tok-a",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "protos"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_checkpoints_counted_fetch_into_a_job_folder_and_json_everywhere(jobs_server, photo, tmp_path):
    """watch shows checkpoints as one counter (not a line each); fetch without --out writes ./JOB_ID/; every
    jobs command has --json (watch: one JSON object per line)."""
    r = headforge(jobs_server, "submit", str(photo), "--recipe", "sds_gaussians", "--json")
    assert r.returncode == 0, r.stderr
    submitted = json.loads(r.stdout)
    job_id = submitted["id"]
    assert submitted["state"] == "queued" and submitted["recipe"] == "sds_gaussians"
    store, arts = JobStore(jobs_server.store_path), ArtifactStore(str(jobs_server.artifacts_root))
    n_checkpoints = 6

    def runtime():
        time.sleep(1.0)
        assert store.claim_next(8).id == job_id
        store.set_stage_state(job_id, "optimise", "running")
        for step in range(1, n_checkpoints + 1):
            store.record_progress(job_id, Progress("optimise", step, n_checkpoints))
            store.add_artifact(job_id, arts.write(job_id, f"checkpoints/optimise/{step:04d}.pt", b"c" * 64, "optimise"))
            time.sleep(0.05)
        store.set_stage_state(job_id, "optimise", "succeeded")
        store.add_artifact(job_id, arts.write(job_id, "export/head.ply", b"ply\n" * 100, "export"))
        store.set_job_state(job_id, "succeeded")

    t = threading.Thread(target=runtime)
    t.start()
    watch = headforge(jobs_server, "watch", job_id)
    t.join()
    assert watch.returncode == 0, watch.stderr
    assert "artifact checkpoints/" not in watch.stdout and watch.stdout.count("checkpoints/optimise/") <= 1
    assert f"{n_checkpoints} checkpoint(s) written" in watch.stdout and "artifact export/head.ply" in watch.stdout

    lines = headforge(jobs_server, "watch", job_id, "--json").stdout.splitlines()
    events = [json.loads(line) for line in lines]       # every line is one JSON object
    assert events[0]["kind"] == "snapshot" and events[0]["payload"]["id"] == job_id
    assert events[-1] == {"event": "finished", "state": "succeeded", "error_message": "", "warnings": []}

    r = _headforge_in(tmp_path, jobs_server, "fetch", job_id, "--name", "export/head.ply")
    assert r.returncode == 0, r.stderr
    assert [p.name for p in tmp_path.iterdir()] == [job_id]           # nothing loose in the current folder
    assert (tmp_path / job_id / "export" / "head.ply").read_bytes() == b"ply\n" * 100
    r = headforge(jobs_server, "fetch", job_id, "--out", str(tmp_path / "json"), "--json")
    fetched = {f["name"]: f for f in json.loads(r.stdout)}
    assert set(fetched) == {"export/head.ply", *(f"checkpoints/optimise/{i:04d}.pt" for i in range(1, 7))}
    record = next(a for a in store.get("tenant-a", job_id).artifacts if a.name == "export/head.ply")
    assert fetched["export/head.ply"]["sha256"] == record.sha256 and fetched["export/head.ply"]["size_bytes"] == 400

    status = json.loads(headforge(jobs_server, "status", job_id, "--json").stdout)
    assert status["state"] == "succeeded" and len(status["artifacts"]) == n_checkpoints + 1
    assert job_id in [j["id"] for j in json.loads(headforge(jobs_server, "status", "--json").stdout)]
    other = json.loads(headforge(jobs_server, "submit", str(photo), "--recipe", "sds_gaussians", "--json").stdout)
    cancelled = json.loads(headforge(jobs_server, "cancel", other["id"], "--json").stdout)
    assert cancelled["id"] == other["id"] and cancelled["state"] == "cancelled"
    recipes = json.loads(headforge(jobs_server, "recipes", "--json").stdout)
    assert {"fast", "sds_gaussians", "analytic_prior"} <= {r["name"] for r in recipes}
    store.close()
