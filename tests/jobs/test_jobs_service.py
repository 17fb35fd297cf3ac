"""The jobs service over both transports: a `headforge serve jobs` process on loopback (tokens file with
two tenants) and the in-process client on a JobsService in this process; the same tests run against each.

Nothing here is mocked. Jobs are executed by the test itself acting as the runtime: it opens the *same*
SQLite store and artifact root the service uses (a real JobStore / ArtifactStore, from this process for the
server's file) and claims jobs, moves stages, records progress and writes artifacts exactly as the Ray
runtime will; the service sees those writes through the store (WAL, across processes).
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass

import numpy as np
import pytest
import yaml

from orchestrator.jobs.artifacts import ArtifactStore
from orchestrator.jobs.client import GrpcJobsClient, InProcessJobsClient
from orchestrator.jobs.service import JobsConfig, JobsService
from orchestrator.jobs.store import JobStore
from orchestrator.jobs.types import Progress
from orchestrator.recipes import load_recipe
from services.common.errors import (FailedPrecondition, InvalidArgument, NotFound, PermissionDenied,
                                    ResourceExhausted)
from tests.conftest import png_bytes
from tests.jobs.conftest import MAX_ACTIVE, MAX_STREAMS

RECIPE = "sds_gaussians"
STAGES = ["preprocess", "init", "optimise", "export", "evaluate"]


@pytest.fixture(scope="module")
def photo() -> bytes:
    rng = np.random.default_rng(0)
    return png_bytes(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8))


@dataclass
class Setup:
    """Two tenants' clients on one transport, and the runtime's view of the same store and artifacts."""

    transport: str
    a: object
    b: object
    store: JobStore
    artifacts: ArtifactStore


@pytest.fixture(scope="module", params=["inprocess", "grpc"])
def setup(request, tmp_path_factory, models_root):
    if request.param == "inprocess":
        d = tmp_path_factory.mktemp("jobs-inprocess")
        service = JobsService(JobsConfig(store_path=str(d / "jobs.db"), artifacts_url=str(d / "artifacts"),
                                         model_roots=[str(models_root)], max_active_jobs=MAX_ACTIVE,
                                         max_watch_streams=MAX_STREAMS))
        yield Setup("inprocess", InProcessJobsClient(service, "tenant-a"), InProcessJobsClient(service, "tenant-b"),
                    service.store, service.artifacts)
        return
    server = request.getfixturevalue("jobs_server")
    a, b = GrpcJobsClient(server.address, token="tok-a"), GrpcJobsClient(server.address, token="tok-b")
    a.wait_ready()
    store = JobStore(server.store_path)
    yield Setup("grpc", a, b, store, ArtifactStore(str(server.artifacts_root)))
    a.close()
    b.close()
    store.close()


@pytest.fixture(autouse=True)
def finish_active_jobs(request):
    """Each test starts with no active jobs: whatever a test left QUEUED or RUNNING is ended afterwards."""
    yield
    if "setup" not in request.fixturenames:
        return
    s: Setup = request.getfixturevalue("setup")
    for job in s.store.running_jobs():
        s.store.set_job_state(job.id, "cancelled")
    for client in (s.a, s.b):
        for job in client.list(states=["queued"])[0]:
            client.cancel(job.id)


def run_as_runtime(s: Setup, job_id: str) -> None:
    claimed = s.store.claim_next(max_active_per_tenant=MAX_ACTIVE)
    assert claimed is not None and claimed.id == job_id


# -- Describe, Submit ------------------------------------------------------------------------------------

def test_describe(setup, models_root):
    d = setup.a.describe()
    r = next(r for r in d.recipes if r.name == RECIPE)
    assert (r.min_images, r.max_images, r.prompt_required, r.output) == (1, 1, False, "gaussians")
    assert [st["name"] for st in yaml.safe_load(r.yaml)["stages"]] == STAGES
    assert d.tenant == "tenant-a" and d.model_roots == [str(models_root)] and d.version
    assert d.max_active_jobs == MAX_ACTIVE and d.active_jobs == 0 and d.max_storage_bytes > 0


def test_submit_get_and_idempotency(setup, photo, models_root):
    options = {"stages.optimise.iterations": "50", "seed": "7"}
    job = setup.a.submit([photo], recipe=RECIPE, options=options, labels={"exp": "s1"}, priority=2,
                         display_name="me", models_dir=str(models_root / "sd15"), idempotency_key="key-1")
    assert job.state == "queued" and job.tenant == "tenant-a" and job.recipe == RECIPE and job.display_name == "me"
    assert [s.name for s in job.stages] == STAGES and all(s.state == "pending" for s in job.stages)
    assert job.recipe_sha256 == load_recipe(RECIPE, options=options).sha256 and job.queue_position == 0
    assert job.labels == {"exp": "s1"} and job.priority == 2 and job.started_at is None
    got = setup.a.get(job.id)
    assert (got.id, got.state, got.created_at) == (job.id, job.state, pytest.approx(job.created_at, abs=1e-6))
    images, prompt, recipe_yaml, models_dir = setup.store.inputs(job.id)     # what the runtime will read
    assert images == [photo] and models_dir == str(models_root / "sd15")
    assert yaml.safe_load(recipe_yaml)["stages"][2]["params"]["iterations"] == 50
    again = setup.a.submit([photo], recipe=RECIPE, idempotency_key="key-1")
    assert again.id == job.id
    assert setup.b.submit([photo], recipe=RECIPE, idempotency_key="key-1").id != job.id


def test_submit_inline_recipe_and_prompt(setup, photo):
    text = (yaml.safe_dump({**yaml.safe_load(load_recipe(RECIPE).yaml), "name": "mine",
                            "inputs": {"min_images": 0, "max_images": 2, "prompt_required": True}}))
    with pytest.raises(InvalidArgument) as e:
        setup.a.submit([], recipe_yaml=text)
    assert e.value.field == "prompt"
    job = setup.a.submit([photo, photo], recipe_yaml=text, prompt="an old sailor")
    assert job.recipe == "inline" and job.display_name == "mine"


@pytest.mark.parametrize("case", ["unknown_recipe", "bad_option", "undecodable", "too_many", "none", "priority",
                                  "bad_yaml_field", "key_too_long"])
def test_submit_invalid(setup, photo, case):
    kw = dict(recipe=RECIPE)
    images = [photo]
    field = {"unknown_recipe": "recipe_name", "bad_option": "stages[2].params.iterations",
             "undecodable": "images[1].data", "too_many": "images", "none": "images", "priority": "priority",
             "bad_yaml_field": "stages[1].params.num_points", "key_too_long": "idempotency_key"}[case]
    if case == "unknown_recipe":
        kw["recipe"] = "no_such_recipe"
    elif case == "bad_option":
        kw["options"] = {"stages.optimise.iterations": "-5"}
    elif case == "undecodable":
        kw["recipe_yaml"] = yaml.safe_dump({**yaml.safe_load(load_recipe(RECIPE).yaml),
                                            "inputs": {"min_images": 1, "max_images": 3}})
        kw["recipe"] = ""
        images = [photo, b"\x89PNG\r\n\x1a\n not really a png", photo]
    elif case == "too_many":
        images = [photo, photo]
    elif case == "none":
        images = []
    elif case == "priority":
        kw["priority"] = 11
    elif case == "bad_yaml_field":
        data = yaml.safe_load(load_recipe(RECIPE).yaml)
        data["stages"][1]["params"]["num_points"] = "lots"
        kw = dict(recipe_yaml=yaml.safe_dump(data))
    elif case == "key_too_long":
        kw["idempotency_key"] = "k" * 129
    with pytest.raises(InvalidArgument) as e:
        setup.a.submit(images, **kw)
    assert field in [v.field for v in e.value.violations], e.value.message
    if case == "undecodable":
        assert e.value.reason == "IMAGE_UNDECODABLE"
    assert setup.a.list()[0] == [] or all(j.state != "queued" for j in setup.a.list()[0])


def test_models_dir_outside_roots_is_permission_denied(setup, photo, models_root):
    for bad in ("/etc", str(models_root) + "-evil/x", str(models_root / ".." / "elsewhere")):
        with pytest.raises(PermissionDenied):
            setup.a.submit([photo], recipe=RECIPE, models_dir=bad)


# -- Get, List, Cancel, tenancy, quotas ------------------------------------------------------------------

def test_list_and_cancel(setup, photo):
    first = setup.a.submit([photo], recipe=RECIPE, labels={"k": "1"})
    second = setup.a.submit([photo], recipe=RECIPE, labels={"k": "2"}, priority=5)
    assert setup.a.get(first.id).queue_position == 1 and setup.a.get(second.id).queue_position == 0
    jobs, token = setup.a.list(page_size=1)
    assert [j.id for j in jobs] == [second.id] and token
    jobs, _ = setup.a.list(page_size=1, page_token=token)
    assert [j.id for j in jobs] == [first.id]
    assert [j.id for j in setup.a.list(labels={"k": "1"})[0]] == [first.id]
    with pytest.raises(InvalidArgument):
        setup.a.list(page_token="not-a-token")
    cancelled = setup.a.cancel(first.id)
    assert cancelled.state == "cancelled" and cancelled.finished_at
    assert setup.a.cancel(first.id).state == "cancelled"                  # no-op
    assert [j.id for j in setup.a.list(states=["queued"])[0]] == [second.id]
    run_as_runtime(setup, second.id)
    r = setup.a.cancel(second.id)
    assert r.state == "running" and r.cancel_requested                     # the runtime stops it
    setup.store.set_job_state(second.id, "succeeded")
    with pytest.raises(FailedPrecondition):
        setup.a.cancel(second.id)


def test_tenant_isolation(setup, photo):
    job = setup.a.submit([photo], recipe=RECIPE)
    run_as_runtime(setup, job.id)
    setup.store.add_artifact(job.id, setup.artifacts.write(job.id, "metrics.json", b"{}", "evaluate"))
    for call in (lambda: setup.b.get(job.id), lambda: setup.b.cancel(job.id),
                 lambda: list(setup.b.watch(job.id)), lambda: list(setup.b.fetch_chunks(job.id)),
                 lambda: setup.b.get("unknown-id")):
        with pytest.raises(NotFound) as e:
            call()
        assert "tenant-a" not in e.value.message
    assert job.id not in [j.id for j in setup.b.list()[0]]
    assert setup.a.get(job.id).state == "running"


def test_active_jobs_quota(setup, photo):
    jobs = [setup.b.submit([photo], recipe=RECIPE) for _ in range(MAX_ACTIVE)]
    with pytest.raises(ResourceExhausted) as e:
        setup.b.submit([photo], recipe=RECIPE)
    assert e.value.metadata["limit"] == str(MAX_ACTIVE) and e.value.metadata["used"] == str(MAX_ACTIVE)
    assert setup.b.describe().active_jobs == MAX_ACTIVE and setup.a.describe().active_jobs == 0
    assert setup.a.submit([photo], recipe=RECIPE).state == "queued"     # the other tenant is unaffected
    setup.b.cancel(jobs[0].id)
    assert setup.b.submit([photo], recipe=RECIPE).state == "queued"


def test_storage_quota(tmp_path, photo):
    service = JobsService(JobsConfig(store_path=str(tmp_path / "j.db"), artifacts_url=str(tmp_path / "a"),
                                     max_storage_bytes=100))
    client = InProcessJobsClient(service, "tenant-a")
    job = client.submit([photo], recipe=RECIPE, idempotency_key="first")
    service.store.claim_next(4)
    service.store.add_artifact(job.id, service.artifacts.write(job.id, "big.bin", b"x" * 150, "export"))
    service.store.set_job_state(job.id, "succeeded")
    with pytest.raises(ResourceExhausted) as e:
        client.submit([photo], recipe=RECIPE)
    assert e.value.metadata == {"quota": "max_storage_bytes", "limit": "100", "used": "150"}
    assert client.submit([photo], recipe=RECIPE, idempotency_key="first").id == job.id   # a retry still answers
    assert client.describe().storage_bytes == 150
    assert InProcessJobsClient(service, "tenant-b").submit([photo], recipe=RECIPE).state == "queued"


# -- WatchProgress ---------------------------------------------------------------------------------------

def drive(s: Setup, job_id: str, steps: int = 30, dt: float = 0.04, end: str = "succeeded") -> threading.Thread:
    """The runtime's side of a job, on a thread: claim, stages, frequent progress, artifacts, the end."""
    def run():
        time.sleep(0.3)
        run_as_runtime(s, job_id)
        s.store.set_stage_state(job_id, "preprocess", "running")
        s.store.set_stage_state(job_id, "preprocess", "succeeded")
        s.store.set_stage_state(job_id, "optimise", "running")
        for step in range(1, steps + 1):
            s.store.record_progress(job_id, Progress("optimise", step, steps, metrics={"loss": 1.0 / step}))
            time.sleep(dt)
        s.store.set_stage_state(job_id, "optimise", "succeeded")
        s.store.add_artifact(job_id, s.artifacts.write(job_id, "export/head.ply", b"ply\n" * 100, "export"))
        s.store.set_job_state(job_id, end, "" if end == "succeeded" else "stage optimise failed",
                              "" if end == "succeeded" else "STAGE_FAILED")
    t = threading.Thread(target=run)
    t.start()
    return t


def test_watch_progress_rate_limited_then_ends_and_resumes(setup, photo):
    job = setup.a.submit([photo], recipe=RECIPE)
    t = drive(setup, job.id, steps=30, dt=0.04)          # ~1.2 s of progress at 25 events/s
    t0 = time.monotonic()
    events = list(setup.a.watch(job.id, max_progress_rate=4))
    elapsed = time.monotonic() - t0
    t.join()
    assert events[0].kind == "snapshot" and events[0].payload.state == "queued"
    kinds = [e.kind for e in events]
    assert events[-1].kind == "state" and events[-1].payload["current"] == "succeeded"      # stream ends there
    progress = [e for e in events if e.kind == "progress"]
    assert 1 <= len(progress) <= 4 * elapsed + 2, [p.payload.step for p in progress]        # rate limited
    assert progress[-1].payload.step == 30 and progress[-1].payload.metrics["loss"] == pytest.approx(1 / 30)
    end_of_optimise = next(i for i, e in enumerate(events) if e.kind == "stage"
                           and e.payload == {"stage": "optimise", "previous": "running", "current": "succeeded"})
    assert kinds.index("progress") < end_of_optimise and events[end_of_optimise - 1].kind == "progress"
    assert kinds.count("artifact") == 1 and events[kinds.index("artifact")].payload.name == "export/head.ply"
    seqs = [e.sequence for e in events[1:] if e.kind != "progress"]
    assert seqs == sorted(seqs)

    # resume after the first stage event: replayed state/stage/artifact events, no progress, then the end
    after = next(e.sequence for e in events if e.kind == "stage")
    resumed = list(setup.a.watch(job.id, after_sequence=after))
    assert resumed[0].kind == "snapshot" and resumed[0].payload.state == "succeeded"
    expected = [(e.sequence, e.kind) for e in events[1:] if e.kind != "progress" and e.sequence > after]
    assert [(e.sequence, e.kind) for e in resumed[1:]] == expected
    snap = resumed[0].payload
    assert snap.stages[2].progress.step == 30 and [a.name for a in snap.artifacts] == ["export/head.ply"]
    # a finished job: the snapshot alone
    assert [e.kind for e in setup.a.watch(job.id)] == ["snapshot"]


def test_watch_failed_job_and_default_rate(setup, photo):
    job = setup.a.submit([photo], recipe=RECIPE)
    t = drive(setup, job.id, steps=8, dt=0.05, end="failed")
    events = list(setup.a.watch(job.id))
    t.join()
    last = events[-1]
    assert last.kind == "state" and last.payload["current"] == "failed"
    assert last.payload["error_reason"] == "STAGE_FAILED" and "optimise" in last.payload["error_message"]
    assert setup.a.get(job.id).error_reason == "STAGE_FAILED"


def test_watch_stream_quota(setup, photo):
    job = setup.a.submit([photo], recipe=RECIPE)
    streams = [setup.a.watch(job.id) for _ in range(MAX_STREAMS)]
    assert all(next(s).kind == "snapshot" for s in streams)
    with pytest.raises(ResourceExhausted) as e:
        next(iter(setup.a.watch(job.id)))
    assert e.value.metadata["limit"] == str(MAX_STREAMS)
    assert next(iter(setup.b.watch(setup.b.submit([photo], recipe=RECIPE).id))).kind == "snapshot"  # per tenant
    for s in streams:
        s.close()
    deadline = time.monotonic() + 10      # the server notices a closed stream within a poll interval
    while True:
        try:
            stream = setup.a.watch(job.id)
            assert next(stream).kind == "snapshot"
            stream.close()
            break
        except ResourceExhausted:
            assert time.monotonic() < deadline
            time.sleep(0.2)


# -- FetchArtifacts --------------------------------------------------------------------------------------

def test_fetch_artifacts_chunks_offsets_and_resume(setup, photo, tmp_path):
    job = setup.a.submit([photo], recipe=RECIPE)
    run_as_runtime(setup, job.id)
    big = np.random.default_rng(1).bytes(2_500_000)
    for name, data, stage in (("export/head.ply", big, "export"), ("metrics.json", b'{"id": 0.5}', "evaluate"),
                              ("eval/empty.txt", b"", "evaluate")):
        setup.store.add_artifact(job.id, setup.artifacts.write(job.id, name, data, stage))
    # only complete artifacts, also while the job runs; chunks in order, metadata on every chunk
    chunks = list(setup.a.fetch_chunks(job.id, ["metrics.json", "export/head.ply"], chunk_bytes=1 << 20))
    assert [(c.name, c.offset, len(c.data), c.last) for c in chunks] == [
        ("metrics.json", 0, 11, True), ("export/head.ply", 0, 1 << 20, False),
        ("export/head.ply", 1 << 20, 1 << 20, False), ("export/head.ply", 2 << 20, 2_500_000 - (2 << 20), True)]
    assert all(c.total_size == 2_500_000 and c.sha256 == hashlib.sha256(big).hexdigest()
               and c.mime_type == "application/ply" for c in chunks[1:])
    tail = list(setup.a.fetch_chunks(job.id, ["export/head.ply"], offset=2_400_000))
    assert b"".join(c.data for c in tail) == big[2_400_000:] and tail[0].offset == 2_400_000 and tail[-1].last
    assert [c.data for c in setup.a.fetch_chunks(job.id, ["export/head.ply"], offset=2_500_000)] == [b""]
    with pytest.raises(InvalidArgument) as e:
        list(setup.a.fetch_chunks(job.id, ["export/head.ply"], offset=2_500_001))
    assert e.value.field == "offset"
    with pytest.raises(InvalidArgument):
        list(setup.a.fetch_chunks(job.id, ["export/head.ply", "metrics.json"], offset=10))
    with pytest.raises(InvalidArgument):
        list(setup.a.fetch_chunks(job.id, [], chunk_bytes=5 << 20))
    with pytest.raises(NotFound):
        list(setup.a.fetch_chunks(job.id, ["export/nope.glb"]))

    out = tmp_path / setup.transport
    paths = setup.a.fetch(job.id, dest_dir=out)
    assert [p.relative_to(out).as_posix() for p in paths] == ["export/head.ply", "metrics.json", "eval/empty.txt"]
    assert (out / "export/head.ply").read_bytes() == big and (out / "eval/empty.txt").read_bytes() == b""
    # an interrupted download resumes from its .part file
    resumed = tmp_path / (setup.transport + "-resume")
    (resumed / "export").mkdir(parents=True)
    (resumed / "export/head.ply.part").write_bytes(big[:1_000_000])
    assert setup.a.fetch(job.id, ["export/head.ply"], dest_dir=resumed) == [resumed / "export/head.ply"]
    assert (resumed / "export/head.ply").read_bytes() == big and not (resumed / "export/head.ply.part").exists()


# -- a watcher across a server restart -------------------------------------------------------------------

def test_watch_reconnects_across_a_server_restart(tmp_path, photo):
    """SIGTERM drains the server: its watch streams end with UNAVAILABLE at once (not after the grace period),
    the client reconnects with after_sequence to the next server on the same store, and sees every state,
    stage and artifact event exactly once, including those written while no server was up."""
    from services.common.client import RetryPolicy
    from services.common.process import ServiceProcess
    from tests.integration.test_server_runtime import free_port

    port = free_port()
    args = ["jobs", "--runtime", "none", "--port", str(port), "--store", str(tmp_path / "jobs.db"), "--artifacts",
            str(tmp_path / "artifacts"), "--grace-s", "20"]
    server = ServiceProcess(args, tmp_path / "jobs1.log")
    client = GrpcJobsClient(server.address, retry=RetryPolicy(max_attempts=100, initial_backoff_s=0.05,
                                                              max_backoff_s=0.3, budget_s=60))
    store, arts = JobStore(tmp_path / "jobs.db"), ArtifactStore(str(tmp_path / "artifacts"))
    job = client.submit([photo], recipe=RECIPE)
    store.claim_next(4)
    store.set_stage_state(job.id, "preprocess", "running")
    events, failures = [], []

    def watch():
        try:
            events.extend(client.watch(job.id))
        except Exception as e:   # noqa: BLE001 (asserted below)
            failures.append(e)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        deadline = time.monotonic() + 30
        while not events and time.monotonic() < deadline:
            time.sleep(0.05)
        t0 = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - t0 < 10          # the open stream did not hold the 20 s grace period
        store.set_stage_state(job.id, "preprocess", "succeeded")           # written while no server is up
        store.add_artifact(job.id, arts.write(job.id, "metrics.json", b"{}", "preprocess"))
        server = ServiceProcess(args, tmp_path / "jobs2.log")
        store.set_stage_state(job.id, "init", "running")
        time.sleep(0.5)
        store.set_job_state(job.id, "succeeded")
        watcher.join(60)
    finally:
        server.stop()
        client.close()
    assert not failures and not watcher.is_alive()
    assert [e.kind for e in events].count("snapshot") == 2
    changes = [(e.kind, e.payload.get("current") if e.kind != "artifact" else e.payload.name)
               for e in events if e.kind not in ("snapshot", "progress")]
    kept = [(e.kind, e.payload.get("current") if e.kind != "artifact" else e.payload.name)
            for e in store.events_after(job.id, 0) if e.kind != "progress"]
    # the first snapshot already covered the first two events (claim, preprocess running)
    assert changes == kept[2:] and changes[-1] == ("state", "succeeded")
    store.close()


def test_retention_purges_expired_artifacts(tmp_path, photo):
    service = JobsService(JobsConfig(store_path=str(tmp_path / "j.db"), artifacts_url=str(tmp_path / "a"),
                                     retention_days=2))
    client = InProcessJobsClient(service, "tenant-a")
    old, recent = client.submit([photo], recipe=RECIPE), client.submit([photo], recipe=RECIPE)
    for job in (old, recent):
        service.store.claim_next(4)
        service.store.add_artifact(job.id, service.artifacts.write(job.id, "export/head.ply", b"x" * 10, "export"))
        service.store.set_job_state(job.id, "succeeded")
    assert service.purge_expired() == [] and client.describe().storage_bytes == 20
    service.store._conn().execute("UPDATE jobs SET finished_at = finished_at - 3 * 86400 WHERE id = ?", (old.id,))
    assert service.purge_expired() == [old.id] and client.describe().storage_bytes == 10
    assert client.get(old.id).artifacts == [] and client.get(old.id).state == "succeeded"   # the record stays
    assert not service.artifacts.exists(old.id, "export/head.ply") and list(client.fetch_chunks(old.id)) == []
    assert service.artifacts.exists(recent.id, "export/head.ply")
    assert service.purge_expired(now=time.time() + 3 * 86400) == [recent.id]
