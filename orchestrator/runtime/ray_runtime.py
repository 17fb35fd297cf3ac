"""The cluster runtime: one Ray actor per running subject.

A scheduler thread claims queued jobs from the store (highest priority first, at most max_active per
tenant) and starts a SubjectActor for each, with a configurable CPU share and a fractional share of a GPU
(or of a declared resource such as "fake_gpu" on CPU machines). It claims a job only when the Ray cluster
has room for one more actor share, so a job shown RUNNING is running, and one waiting for a slot stays
QUEUED (its queue wait and start time are then true). The actor runs the job's stages
(orchestrator.runtime.execute) and streams events back; a driver thread per job writes them to the store.

Failure handling (nothing is lost): an actor that dies (its process killed, its node gone) is replaced by a
new one that resumes from the job's last checkpoint, up to max_attempts; a runtime that restarts finds its
RUNNING jobs in the store and resumes them the same way. Cancellation sets a flag the stage loop checks
every step (the actor frees its render scene), and the actor is killed if it does not stop in time.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field

import ray

from orchestrator.runtime.endpoints import Endpoints, build_clients
from orchestrator.runtime.events import apply_event

log = logging.getLogger(__name__)


@dataclass
class ActorShare:
    """Resources each subject's actor holds: CPUs, GPUs (fractions allowed) and custom resources (e.g.
    {"fake_gpu": 0.25} to share one declared fake GPU between four subjects on a CPU machine)."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    resources: dict[str, float] = field(default_factory=dict)


@ray.remote(max_concurrency=2)   # one thread runs the job, the other answers cancel() and pid()
class SubjectActor:
    def __init__(self, endpoints: dict, artifacts_url: str):
        from orchestrator.jobs.artifacts import ArtifactStore

        self.clients = build_clients(Endpoints.model_validate(endpoints))
        self.artifacts = ArtifactStore(artifacts_url)
        self._cancel = threading.Event()

    def pid(self) -> int:
        return os.getpid()

    def cancel(self) -> None:
        self._cancel.set()

    def run(self, job_id: str, recipe_yaml: str, images: list[bytes], prompt: str, models_dir: str = ""):
        """A generator of execute()'s events (a Ray streaming generator)."""
        from orchestrator.runtime.execute import execute

        events: queue.Queue = queue.Queue()
        done = object()

        def work():
            try:
                execute(job_id, recipe_yaml, images, prompt, self.clients, self.artifacts, events.put,
                        self._cancel.is_set, models_dir=models_dir)
            finally:
                events.put(done)

        threading.Thread(target=work, daemon=True).start()
        while (event := events.get()) is not done:
            yield event


class RayRuntime:
    """start() / stop(); owns the scheduler and one driver thread per running job."""

    def __init__(self, store, artifacts_url: str, endpoints: Endpoints, *, share: ActorShare | None = None,
                 max_active_per_tenant: int = 4, max_attempts: int = 3, ray_address: str | None = None,
                 ray_resources: dict[str, float] | None = None, poll_s: float = 0.2, cancel_grace_s: float = 20.0):
        self.store = store
        self.artifacts_url = artifacts_url
        self.endpoints = endpoints
        self.share = share or ActorShare()
        self.max_active_per_tenant = max_active_per_tenant
        self.max_attempts = max_attempts
        self.ray_address = ray_address
        self.ray_resources = ray_resources
        self.poll_s = poll_s
        self.cancel_grace_s = cancel_grace_s
        self.actors: dict[str, ray.actor.ActorHandle] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._stop = threading.Event()
        self._scheduler: threading.Thread | None = None
        self._owns_ray = False

    def start(self) -> None:
        if not ray.is_initialized():
            self._owns_ray = True
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")   # no phoning home from a job server
            if self.ray_address:
                ray.init(address=self.ray_address, logging_level="ERROR")
            else:
                ray.init(resources=self.ray_resources or {}, include_dashboard=False, logging_level="ERROR",
                         num_cpus=max(os.cpu_count() or 1, 4))
        for job in self.store.running_jobs():       # a previous runtime died with these running
            self._launch(job.id)
        self._scheduler = threading.Thread(target=self._schedule, name="jobs-scheduler", daemon=True)
        self._scheduler.start()

    def stop(self) -> None:
        self._stop.set()
        if self._scheduler:
            self._scheduler.join(timeout=5)
        for actor in list(self.actors.values()):
            ray.kill(actor)
        for t in list(self._threads.values()):
            t.join(timeout=5)
        if self._owns_ray:   # a local Ray this runtime started: its processes go with it
            ray.shutdown()

    def actor_pid(self, job_id: str) -> int | None:
        actor = self.actors.get(job_id)
        return ray.get(actor.pid.remote(), timeout=30) if actor is not None else None

    # -- scheduling -----------------------------------------------------------------------------------------
    def _schedule(self) -> None:
        while not self._stop.is_set():
            if self._free_slots() <= 0:
                self._stop.wait(self.poll_s)
                continue
            try:
                job = self.store.claim_next(self.max_active_per_tenant)
            except Exception:  # noqa: BLE001 - keep scheduling; the store logs its own errors
                log.exception("claiming a job failed")
                job = None
            if job is None:
                self._stop.wait(self.poll_s)
                continue
            self._launch(job.id)

    def _free_slots(self) -> float:
        """How many more subject actors the Ray cluster's resources hold (their totals divided by one
        actor's share), less the jobs this runtime is running."""
        s = self.share
        need = {"CPU": s.num_cpus, "GPU": s.num_gpus, **s.resources}
        total = ray.cluster_resources()
        fits = [math.floor(total.get(name, 0.0) / amount + 1e-9) for name, amount in need.items() if amount > 0]
        running = sum(t.is_alive() for t in list(self._threads.values()))
        return (min(fits) if fits else math.inf) - running

    def _launch(self, job_id: str) -> None:
        t = threading.Thread(target=self._drive, args=(job_id,), name=f"job-{job_id[:8]}", daemon=True)
        self._threads[job_id] = t
        t.start()

    def _new_actor(self, tenant: str):
        """An actor whose service calls are the job's tenant's (with a service token: Endpoints.tenant)."""
        s = self.share
        endpoints = self.endpoints.model_copy(update={"tenant": tenant}) if self.endpoints.token else self.endpoints
        return SubjectActor.options(num_cpus=s.num_cpus, num_gpus=s.num_gpus, resources=dict(s.resources),
                                    max_restarts=0).remote(endpoints.model_dump(), self.artifacts_url)

    def _drive(self, job_id: str) -> None:
        try:
            self._drive_attempts(job_id)
        finally:   # a long-running server starts one thread per job: forget it once it is done
            if self._threads.get(job_id) is threading.current_thread():
                del self._threads[job_id]

    def _drive_attempts(self, job_id: str) -> None:
        images, prompt, recipe_yaml, models_dir = self.store.inputs(job_id)
        tenant = self.store.get_any(job_id).tenant
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            actor = self._new_actor(tenant)
            self.actors[job_id] = actor
            final = None
            cancel_sent_at = None
            try:
                stream = actor.run.options(num_returns="streaming").remote(job_id, recipe_yaml, images, prompt,
                                                                           models_dir)
                for ref in stream:
                    event = ray.get(ref)
                    apply_event(self.store, job_id, event)
                    if event["kind"] == "done":
                        final = event["state"]
                    if cancel_sent_at is None and self.store.get_any(job_id).cancel_requested:
                        actor.cancel.remote()
                        cancel_sent_at = time.monotonic()
                        threading.Thread(target=self._kill_later, args=(job_id, actor), daemon=True).start()
            except (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError) as e:
                final = self._worker_lost(job_id, attempt, f"the subject's worker died: {e}")
            else:
                if final is None:   # the stream ended without a verdict
                    final = self._worker_lost(job_id, attempt, "the subject's worker stopped without finishing")
            finally:
                self.actors.pop(job_id, None)
            if final is not None:
                ray.kill(actor)
                return

    def _worker_lost(self, job_id: str, attempt: int, why: str) -> str | None:
        """A final state, or None to resume on a new worker."""
        job = self.store.get_any(job_id)
        if job.cancel_requested:
            self.store.set_job_state(job_id, "cancelled", "cancelled by request", "CANCELLED")
            return "cancelled"
        if attempt >= self.max_attempts:
            self.store.set_job_state(job_id, "failed", f"{why} ({attempt} attempts)", "WORKER_DIED")
            return "failed"
        log.warning("job %s: %s; resuming from its checkpoint", job_id, why)
        return None   # the new worker's executor reports the stage it resumes

    def _kill_later(self, job_id: str, actor) -> None:
        """Kill a cancelled job's actor that has not stopped within cancel_grace_s (never after stop())."""
        if self._stop.wait(self.cancel_grace_s) or not ray.is_initialized():
            return
        if self.actors.get(job_id) is actor:
            ray.kill(actor)
