"""The SQLite job store on a real file (WAL): job and stage states, claim order and per-tenant limits,
idempotency, cancel rules, events and their sequences, pagination, and writers from many threads and
from another process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from orchestrator.jobs.store import JobStore
from orchestrator.jobs.types import ArtifactRecord, JobSpec, Progress
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from services.common.process import ROOT

STAGES = ["preprocess", "optimise", "export"]


def spec(tenant="a", **kw) -> JobSpec:
    base = dict(tenant=tenant, recipe="sds_gaussians", recipe_yaml="name: x\n", recipe_sha256="0" * 64,
                stage_names=list(STAGES), images=[b"img0", b"img1"], prompt="a head", models_dir="/models/x")
    return JobSpec(**{**base, **kw})


def artifact(name="export/head.ply", size=10, stage="export") -> ArtifactRecord:
    return ArtifactRecord(name=name, size_bytes=size, mime_type="application/ply", sha256="ab" * 32, stage=stage,
                          created_at=time.time())


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.db")
    yield s
    s.close()


def test_create_get_inputs_and_tenancy(store, tmp_path):
    job = store.create(spec(labels={"team": "x"}, display_name="", priority=3))
    assert job.state == "queued" and not job.cancel_requested and job.priority == 3 and job.labels == {"team": "x"}
    assert [s.name for s in job.stages] == STAGES and all(s.state == "pending" for s in job.stages)
    assert job.display_name == "sds_gaussians" and job.queue_position == 0 and job.attempts == 0
    assert len(job.id) >= 20 and job.id != store.create(spec()).id       # opaque, random
    assert store.get("a", job.id) == store.get_any(job.id)
    with pytest.raises(NotFound):
        store.get("b", job.id)        # another tenant's job: exactly like an unknown one
    with pytest.raises(NotFound):
        store.get("a", "nope")
    assert store.inputs(job.id) == ([b"img0", b"img1"], "a head", "name: x\n", "/models/x")
    assert (tmp_path / "jobs.db").exists()
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert JobStore(tmp_path / "jobs.db").get("a", job.id).id == job.id   # reopened: schema kept


def test_job_ids_are_plain_command_line_arguments(store):
    """Every id the store hands out is taken as the positional job_id by the CLI (base64url ids starting
    with "-" were read as options by `headforge watch`)."""
    from orchestrator.cli import build_parser

    parser = build_parser()
    for _ in range(200):
        job_id = store.create(spec()).id
        for command in ("status", "watch", "fetch", "cancel"):
            assert parser.parse_args([command, job_id]).job_id == job_id


def test_metrics_count_jobs_by_state_and_time_the_transitions(store):
    """headforge_jobs{state, tenant} and the oldest queued age come from the store at scrape time; queue wait,
    job and stage durations are observed at the transitions (each exactly once)."""
    from prometheus_client import REGISTRY

    from orchestrator.jobs.metrics import export_store_gauges

    def value(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    export_store_gauges(store)
    before = {"wait": value("headforge_job_queue_wait_seconds_count", recipe="sds_gaussians"),
              "ok": value("headforge_job_duration_seconds_count", recipe="sds_gaussians", state="succeeded"),
              "cancel": value("headforge_job_duration_seconds_count", recipe="sds_gaussians", state="cancelled"),
              "stage": value("headforge_stage_duration_seconds_count", stage="optimise", state="succeeded")}
    a1, a2, b1 = store.create(spec("a")), store.create(spec("a")), store.create(spec("b"))
    time.sleep(0.05)
    assert value("headforge_jobs", state="queued", tenant="a") == 2
    assert value("headforge_jobs", state="queued", tenant="b") == 1
    assert value("headforge_jobs_oldest_queued_age_seconds") >= 0.05
    claimed = store.claim_next(8)
    assert claimed.id == a1.id
    store.set_stage_state(a1.id, "optimise", "running")
    store.set_stage_state(a1.id, "optimise", "succeeded")
    store.set_stage_state(a1.id, "optimise", "succeeded")       # no change: not observed again
    store.set_job_state(a1.id, "queued")                        # re-queued (a retry) ...
    assert store.claim_next(8).id == a1.id                      # ... and restarted: its wait counted once
    store.set_job_state(a1.id, "succeeded")
    store.request_cancel("a", a2.id)
    assert value("headforge_jobs", state="succeeded", tenant="a") == 1
    assert value("headforge_jobs", state="cancelled", tenant="a") == 1
    assert value("headforge_jobs", state="queued", tenant="a") == 0
    assert value("headforge_job_queue_wait_seconds_count", recipe="sds_gaussians") == before["wait"] + 1
    assert value("headforge_job_queue_wait_seconds_sum", recipe="sds_gaussians") > 0
    assert value("headforge_job_duration_seconds_count", recipe="sds_gaussians", state="succeeded") == before["ok"] + 1
    assert value("headforge_job_duration_seconds_count", recipe="sds_gaussians", state="cancelled") == before["cancel"] + 1
    assert value("headforge_stage_duration_seconds_count", stage="optimise", state="succeeded") == before["stage"] + 1
    store.request_cancel("b", b1.id)
    assert value("headforge_jobs_oldest_queued_age_seconds") == 0.0


def test_idempotency_key_within_24h_same_tenant(store):
    first = store.create(spec(idempotency_key="k1"))
    assert store.create(spec(idempotency_key="k1", prompt="other")).id == first.id
    assert store.create(spec(tenant="b", idempotency_key="k1")).id != first.id
    assert store.create(spec(idempotency_key="k2")).id != first.id
    store._conn().execute("UPDATE jobs SET created_at = created_at - 25 * 3600 WHERE id = ?", (first.id,))
    assert store.create(spec(idempotency_key="k1")).id != first.id       # the key expired


def test_claim_next_priority_then_age_and_tenant_limit(store):
    a_low = store.create(spec("a", priority=0))
    a_high = store.create(spec("a", priority=5))
    a_high2 = store.create(spec("a", priority=5))
    b_old = store.create(spec("b", priority=-1))
    assert store.get("a", a_low.id).queue_position == 2 and store.get("a", a_high2.id).queue_position == 1
    first = store.claim_next(max_active_per_tenant=2)
    assert first.id == a_high.id and first.state == "running" and first.attempts == 1 and first.started_at
    assert store.claim_next(2).id == a_high2.id
    assert store.claim_next(2).id == b_old.id       # tenant a is at its limit of 2 running jobs
    assert store.claim_next(2) is None
    assert [j.id for j in store.running_jobs()] == [a_high.id, a_high2.id, b_old.id]
    store.set_job_state(a_high.id, "succeeded")
    assert store.claim_next(2).id == a_low.id
    assert store.active_count("a") == 2 and store.active_count("b") == 1
    with pytest.raises(ResourceExhausted) as e:
        store.create(spec("a"), max_active=2)
    assert e.value.metadata["limit"] == "2" and e.value.metadata["used"] == "2"


def test_cancel_rules(store):
    queued = store.create(spec())
    c = store.request_cancel("a", queued.id)
    assert c.state == "cancelled" and c.finished_at and all(s.state == "cancelled" for s in c.stages)
    assert store.request_cancel("a", queued.id).state == "cancelled"             # no-op
    running = store.create(spec())
    store.claim_next(4)
    r = store.request_cancel("a", running.id)
    assert r.state == "running" and r.cancel_requested
    with pytest.raises(NotFound):
        store.request_cancel("b", running.id)
    store.set_job_state(running.id, "cancelled", "stopped at step 3", "CANCELLED")
    r = store.get("a", running.id)
    assert r.state == "cancelled" and not r.cancel_requested and r.error_reason == "CANCELLED"
    done = store.create(spec())
    store.claim_next(4)
    store.set_job_state(done.id, "failed", "boom", "STAGE_FAILED")
    with pytest.raises(FailedPrecondition):
        store.request_cancel("a", done.id)
    with pytest.raises(FailedPrecondition):
        store.set_job_state(done.id, "running")          # a terminal job stays terminal


def test_stages_progress_artifacts_and_events(store):
    job = store.create(spec())
    store.claim_next(4)
    store.set_stage_state(job.id, "preprocess", "running")
    for step in range(1, 6):
        store.record_progress(job.id, Progress("preprocess", step, 5, metrics={"loss": 1.0 / step}))
    store.set_stage_state(job.id, "preprocess", "succeeded")
    store.add_resume(job.id, "optimise")
    store.add_artifact(job.id, artifact(size=10))
    store.add_artifact(job.id, artifact(size=20))            # same name: replaced
    store.set_job_state(job.id, "succeeded")
    r = store.get("a", job.id)
    pre = r.stages[0]
    assert pre.state == "succeeded" and pre.started_at <= pre.finished_at and pre.progress.step == 5
    assert pre.progress.metrics == {"loss": 0.2} and r.stages[1].resumes == 1
    assert [(a.name, a.size_bytes) for a in r.artifacts] == [("export/head.ply", 20)]
    assert r.state == "succeeded" and r.finished_at and store.storage_bytes("a") == 20 and store.storage_bytes("b") == 0
    events = store.events_after(job.id, 0)
    seqs = [e.sequence for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    kinds = [e.kind for e in events]
    # only the latest progress event of a stage is kept; state/stage/artifact events all are
    assert kinds == ["state", "stage", "progress", "stage", "artifact", "artifact", "state"]
    assert events[2].payload == Progress("preprocess", 5, 5, "", {"loss": 0.2})
    assert events[-1].payload["previous"] == "running" and events[-1].payload["current"] == "succeeded"
    assert store.events_after(job.id, seqs[-2]) == events[-1:]
    with pytest.raises(NotFound):
        store.set_stage_state(job.id, "nope", "running")
    with pytest.raises(NotFound):
        store.record_progress(job.id, Progress("nope", 1))
    with pytest.raises(ValueError):
        store.set_stage_state(job.id, "export", "exploded")


def test_list_filters_and_pagination(store):
    ids = [store.create(spec(labels={"batch": str(i % 2)}, recipe="sds_gaussians" if i < 5 else "inline")).id
           for i in range(7)]
    store.create(spec("b"))
    page, token = store.list("a", page_size=3)
    assert [j.id for j in page] == ids[::-1][:3] and token
    seen = [j.id for j in page]
    while token:
        page, token = store.list("a", page_size=3, page_token=token)
        seen += [j.id for j in page]
    assert seen == ids[::-1]                               # newest first, every job once
    assert [j.id for j in store.list("a", labels={"batch": "1"})[0]] == [ids[5], ids[3], ids[1]]
    assert [j.id for j in store.list("a", recipe="inline")[0]] == [ids[6], ids[5]]
    store.request_cancel("a", ids[0])
    assert [j.id for j in store.list("a", states=["cancelled"])[0]] == [ids[0]]
    assert store.list("a", states=["running"]) == ([], "")
    _, token = store.list("a", page_size=2, labels={"batch": "0"})
    with pytest.raises(InvalidArgument) as e:
        store.list("a", page_size=2, page_token=token)     # issued for other filters
    assert e.value.field == "page_token"
    for garbage in ("garbage", "eyJuIjogLTF9", "!!!"):
        with pytest.raises(InvalidArgument):
            store.list("a", page_token=garbage)
    with pytest.raises(InvalidArgument):
        store.list("a", page_size=0)


def test_concurrent_writers_from_threads(store):
    jobs = [store.create(spec(tenant=f"t{i % 3}")) for i in range(4)]
    errors = []

    def work(k):
        try:
            for i in range(15):
                job = jobs[(k + i) % len(jobs)]
                store.record_progress(job.id, Progress("optimise", i, 15))
                store.add_artifact(job.id, artifact(name=f"w{k}/a{i}.ply", size=1))
                if i % 5 == 0:
                    store.create(spec(tenant=f"t{k}"))
                    store.list(f"t{k}")
        except Exception as e:    # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    total = sum(len(store.get_any(j.id).artifacts) for j in jobs)
    assert total == 8 * 15
    for j in jobs:
        events = store.events_after(j.id, 0)
        arts = [e.sequence for e in events if e.kind == "artifact"]
        assert len(arts) == len(set(arts)) == len(store.get_any(j.id).artifacts)
        assert store.last_sequence(j.id) == max(e.sequence for e in events)
    assert sum(store.active_count(f"t{i}") for i in range(8)) == 4 + 8 * 3


def test_wait_events_wakes_on_this_process_and_polls_other_processes(store, tmp_path):
    job = store.create(spec())
    t0 = time.monotonic()
    assert store.wait_events(job.id, 0, 0.2) == [] and time.monotonic() - t0 >= 0.19
    threading.Timer(0.1, lambda: store.set_stage_state(job.id, "preprocess", "running")).start()
    t0 = time.monotonic()
    events = store.wait_events(job.id, 0, 10)
    assert [e.kind for e in events] == ["stage"] and time.monotonic() - t0 < 1.0
    code = ("import sys; sys.path[:0] = ['.', 'protos']; from orchestrator.jobs.store import JobStore; "
            f"JobStore({str(tmp_path / 'jobs.db')!r}).set_stage_state({job.id!r}, 'preprocess', 'succeeded')")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT)
    try:
        events = store.wait_events(job.id, events[-1].sequence, 30)
    finally:
        assert proc.wait(60) == 0
    assert [e.payload["current"] for e in events] == ["succeeded"]


def test_claims_from_several_processes_take_each_job_once(store, tmp_path):
    ids = {store.create(spec(tenant=f"t{i % 4}")).id for i in range(30)}
    code = ("import sys; sys.path[:0] = ['.', 'protos']; from orchestrator.jobs.store import JobStore; "
            f"s = JobStore({str(tmp_path / 'jobs.db')!r}); got = []\n"
            "while (job := s.claim_next(100)) is not None:\n    got.append(job.id)\nprint(' '.join(got))")
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    claimed = [p.communicate(timeout=120)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    flat = [job_id for got in claimed for job_id in got]
    assert sorted(flat) == sorted(ids)            # every job claimed, none twice
    assert all(j.attempts == 1 for j in store.running_jobs())
