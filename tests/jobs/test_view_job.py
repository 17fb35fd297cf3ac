"""`headforge view JOB_ID`: the job's artifacts fetched from a `headforge serve jobs` process into a cache
folder (checkpoints left out, files already there not fetched again), then served. The test process plays
the runtime on the jobs process's store and artifact root (real JobStore and ArtifactStore)."""

from __future__ import annotations

import io
import json
import urllib.request

import numpy as np
import pytest

from orchestrator.jobs.artifacts import ArtifactStore
from orchestrator.jobs.store import JobStore
from orchestrator.viewer.server import NODE_MODULES
from tests.conftest import png_bytes
from tests.helpers import headforge
from tests.viewer.viewer_process import ViewerProcess


@pytest.fixture
def finished_job(jobs_server, tmp_path):
    """A succeeded job of tenant-a with a GLB, a report, a contact sheet and a checkpoint; its id and the
    artifacts' bytes."""
    import trimesh

    if not (NODE_MODULES / "three" / "package.json").is_file():
        pytest.skip(f"the viewer's npm packages are not installed in {NODE_MODULES}: run `make install`")
    photo = tmp_path / "me.png"
    photo.write_bytes(png_bytes(np.full((32, 32, 3), 128, np.uint8)))
    env = {"HEADFORGE_JOBS": jobs_server.address, "HEADFORGE_TOKEN": "tok-a"}
    r = headforge("submit", str(photo), "--recipe", "fast", "--name", "viewed", env=env)
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    store, arts = JobStore(jobs_server.store_path), ArtifactStore(str(jobs_server.artifacts_root))
    buf = io.BytesIO()
    trimesh.creation.icosphere(subdivisions=2).export(buf, file_type="glb")
    files = {"asset.glb": buf.getvalue(), "contact_sheet.png": png_bytes(np.zeros((8, 8, 3), np.uint8)),
             "report.json": json.dumps({"recipe": "fast", "warnings": [], "result_is_real": True}).encode(),
             "checkpoints/state.json": b"{}"}
    store.set_job_state(job_id, "running")
    for name, data in files.items():
        store.add_artifact(job_id, arts.write(job_id, name, data, "export"))
    store.set_job_state(job_id, "succeeded")
    store.close()
    return job_id, files, env


def test_view_job_fetches_into_the_cache_and_serves(finished_job, tmp_path):
    job_id, files, env = finished_job
    cache = tmp_path / "cache"
    proc = ViewerProcess([job_id, "--cache-dir", str(cache)], env=env)
    try:
        with urllib.request.urlopen(proc.url + "manifest.json", timeout=30) as r:
            m = json.loads(r.read())
        with urllib.request.urlopen(proc.url + "files/asset.glb", timeout=30) as r:
            assert r.read() == files["asset.glb"]
    finally:
        proc.stop()
    assert m["title"] == f"job {job_id} (viewed)" and m["assets"] == [{"name": "asset.glb", "kind": "gltf"}]
    assert m["images"] == ["contact_sheet.png"] and m["not_a_result"] is False
    folder = cache / job_id
    assert sorted(p.name for p in folder.iterdir()) == ["asset.glb", "contact_sheet.png", "report.json"]
    # a second view finds the same files in the cache: nothing is fetched again
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    (folder / "contact_sheet.png").write_bytes(b"changed here")   # ... except what no longer matches
    ViewerProcess([job_id, "--cache-dir", str(cache)], env=env).stop()
    assert (folder / "asset.glb").stat().st_mtime_ns == mtimes["asset.glb"]
    assert (folder / "contact_sheet.png").read_bytes() == files["contact_sheet.png"]


def test_view_job_errors_are_messages(jobs_server, finished_job, tmp_path):
    job_id, _, env = finished_job
    r = headforge("view", job_id, "--no-browser", "--cache-dir", str(tmp_path), env={**env, "HEADFORGE_TOKEN": "tok-b"})
    assert r.returncode == 1 and "NOT_FOUND" in r.stderr and "Traceback" not in r.stderr   # another tenant's job
    store = JobStore(jobs_server.store_path)
    photo = tmp_path / "me.png"
    photo.write_bytes(png_bytes(np.full((32, 32, 3), 128, np.uint8)))
    queued = headforge("submit", str(photo), "--recipe", "fast", env=env).stdout.strip()
    try:
        r = headforge("view", queued, "--no-browser", "--cache-dir", str(tmp_path), env=env)
        assert r.returncode == 1 and "FAILED_PRECONDITION" in r.stderr and "no artifacts to view yet" in r.stderr
    finally:
        store.request_cancel("tenant-a", queued)   # the other tests here claim the oldest queued job
        store.close()
    r = headforge("view", str(tmp_path / "nowhere"), "--no-browser")
    assert r.returncode == 1 and "neither a folder nor a job id" in r.stderr and "Traceback" not in r.stderr
