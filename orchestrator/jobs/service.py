"""The jobs service (jobs.proto) as plain Python: validation, tenancy, quotas, watch streams and artifact
downloads over a JobStore and an ArtifactStore. servicer.py converts protos; client.py has the two clients.

Methods take the caller's tenant from services.common.auth.current_tenant() (set per call by the server's
interceptor; "local" in-process unless a client sets it), like the other services.

The runtime that executes jobs (the Ray orchestrator) is a separate object with start() / stop(), handed
to JobsService(runtime=...): it claims QUEUED jobs from the same store and writes stages, progress and
artifacts back. Without one, submitted jobs stay QUEUED.
"""

from __future__ import annotations

import logging
import posixpath
import threading
import time
from typing import Callable, Iterator, Protocol

from pydantic import BaseModel, Field

from orchestrator.jobs.artifacts import ArtifactStore, validate_name
from orchestrator.jobs.metrics import export_store_gauges
from orchestrator.jobs.rows import JOB_STATES
from orchestrator.jobs.store import JobStore
from orchestrator.jobs.types import (TERMINAL, ArtifactChunk, JobEvent, JobRecord, JobsDescription, JobSpec, RecipeInfo,
                                     SubmitRequest)
from orchestrator.recipes import builtin_names, load_recipe
from services.common.auth import current_tenant
from services.common.errors import InvalidArgument, NotFound, PermissionDenied, ResourceExhausted, Unavailable, quoted
from services.common.images import DEFAULT_MAX_IMAGE_PIXELS, decode_image

log = logging.getLogger("headforge.jobs")

MAX_CHUNK_BYTES = 4 << 20
DEFAULT_CHUNK_BYTES = 1 << 20
MAX_IDEMPOTENCY_KEY = 128
MAX_PROMPT_CHARS = 4096   # jobs.proto SubmitJobRequest.prompt


class JobsConfig(BaseModel):
    """The jobs service's storage, limits and per-tenant quotas (`headforge serve jobs` flags)."""

    store_path: str = Field("jobs/jobs.db", description="SQLite file of the job store")
    artifacts_url: str = Field("jobs/artifacts", description="artifact root: a path or fsspec URL")
    model_roots: list[str] = Field(default_factory=list, description="allowed parents of models_dir")
    default_models_dir: str = Field("", description="models_dir of jobs that give none")
    max_active_jobs: int = Field(4, ge=1, description="queued + running jobs per tenant")
    max_storage_bytes: int = Field(20 << 30, ge=0, description="artifact bytes per tenant")
    max_watch_streams: int = Field(16, ge=1, description="open WatchProgress streams per tenant")
    max_image_bytes: int = Field(20 << 20, ge=1, description="per input photo, encoded")
    max_image_pixels: int = Field(DEFAULT_MAX_IMAGE_PIXELS, ge=1, description="per input photo, width * height")
    retention_days: int = Field(0, ge=0, description="artifact retention after a job finishes; 0 = forever")
    watch_poll_s: float = Field(1.0, gt=0, description="how often a watch stream checks its caller is still there")
    purge_interval_s: float = Field(3600.0, gt=0, description="how often expired artifacts are deleted")


class Runtime(Protocol):
    """What executes jobs (the Ray orchestrator): claims QUEUED jobs from the store."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


def recipe_infos() -> list[RecipeInfo]:
    """Every built-in recipe, resolved (defaults filled in)."""
    out = []
    for name in builtin_names():
        loaded = load_recipe(name)
        r = loaded.recipe
        out.append(RecipeInfo(name, r.description, r.inputs.min_images, r.inputs.max_images,
                              r.inputs.prompt_required, r.output, loaded.yaml))
    return out


def _under(path: str, roots: list[str]) -> bool:
    """Whether `path` is one of `roots` or below one (lexically: the directories live on the workers)."""
    p = posixpath.normpath(path)
    for root in roots:
        r = posixpath.normpath(root)
        if p == r or p.startswith(r.rstrip("/") + "/"):
            return True
    return False


class JobsService:
    def __init__(self, config: JobsConfig | None = None, *, store: JobStore | None = None,
                 artifacts: ArtifactStore | None = None, runtime: Runtime | None = None):
        self.config = config or JobsConfig()
        self.store = store or JobStore(self.config.store_path)
        export_store_gauges(self.store)
        self.artifacts = artifacts or ArtifactStore(self.config.artifacts_url)
        self.runtime = runtime   # the Ray orchestrator hooks in here (issue 6); None = jobs stay QUEUED
        self._watch_lock = threading.Lock()
        self._watchers: dict[str, int] = {}
        self._recipes: list[RecipeInfo] | None = None
        self._draining = threading.Event()
        self._stopping = threading.Event()
        self._purger: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the runtime (if any) and, with retention_days > 0, the periodic purge of expired artifacts."""
        if self.runtime is not None:
            self.runtime.start()
        if self.config.retention_days and self._purger is None:
            self._purger = threading.Thread(target=self._purge_loop, name="jobs-purge", daemon=True)
            self._purger.start()

    def _purge_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.purge_expired()
            except Exception:   # noqa: BLE001 (a storage hiccup must not end the loop)
                log.exception("purging expired artifacts failed")
            self._stopping.wait(self.config.purge_interval_s)

    def purge_expired(self, now: float | None = None) -> list[str]:
        """Delete the artifacts of jobs that finished more than retention_days ago (the job records stay);
        returns those jobs' ids. Records go first, so an artifact is never served without its file."""
        if not self.config.retention_days:
            return []
        now = time.time() if now is None else now
        expired = self.store.expired_jobs(now - self.config.retention_days * 86400)
        for job_id in expired:
            self.store.remove_artifacts(job_id)
            self.artifacts.delete_job(job_id)
        if expired:
            log.info("purged expired artifacts", extra={"jobs": len(expired)})
        return expired

    def drain(self) -> None:
        """The server is shutting down: open watch streams end with UNAVAILABLE within a poll interval, so
        their clients reconnect (to this server's successor) with after_sequence instead of waiting out the
        grace period."""
        self._draining.set()

    def stop(self) -> None:
        self._stopping.set()
        if self.runtime is not None:
            self.runtime.stop()

    # -- RPCs -------------------------------------------------------------------------------------------

    def submit(self, request: SubmitRequest) -> JobRecord:
        tenant = current_tenant()
        cfg = self.config
        if len(request.idempotency_key) > MAX_IDEMPOTENCY_KEY:
            raise InvalidArgument("idempotency_key", f"at most {MAX_IDEMPOTENCY_KEY} characters")
        if not -10 <= request.priority <= 10:
            raise InvalidArgument("priority", f"must be -10..10, got {request.priority}")
        if len(request.prompt) > MAX_PROMPT_CHARS:
            raise InvalidArgument("prompt", f"at most {MAX_PROMPT_CHARS} characters, got {len(request.prompt)}")
        if len(request.display_name) > 256:
            raise InvalidArgument("display_name", "at most 256 characters")
        for k, v in request.labels.items():
            if not k or len(k) > 63 or len(v) > 256:
                raise InvalidArgument(f"labels[{k}]", "label keys are 1..63 characters, values at most 256")
        if request.recipe_name and request.recipe_yaml:
            raise InvalidArgument("recipe", "give recipe_name or recipe_yaml, not both")
        if not request.recipe_name and not request.recipe_yaml:
            raise InvalidArgument("recipe", "give recipe_name (see Describe) or recipe_yaml")
        loaded = load_recipe(request.recipe_name, request.recipe_yaml, request.options)
        inputs = loaded.recipe.inputs
        n = len(request.images)
        if not inputs.min_images <= n <= inputs.max_images:
            want = (f"exactly {inputs.min_images}" if inputs.min_images == inputs.max_images
                    else f"{inputs.min_images}..{inputs.max_images}")
            raise InvalidArgument("images", f"recipe {loaded.recipe.name!r} takes {want} image(s), got {n}",
                                  reason="IMAGE_COUNT")
        for i, data in enumerate(request.images):
            if len(data) > cfg.max_image_bytes:
                raise InvalidArgument(f"images[{i}].data", f"{len(data)} bytes, over the limit of "
                                      f"{cfg.max_image_bytes}", reason="IMAGE_TOO_LARGE",
                                      metadata={"limit": str(cfg.max_image_bytes), "got": str(len(data))})
            decode_image(data, max_pixels=cfg.max_image_pixels, field=f"images[{i}].data")
        if inputs.prompt_required and not request.prompt.strip():
            raise InvalidArgument("prompt", f"recipe {loaded.recipe.name!r} needs a prompt", reason="PROMPT_REQUIRED")
        models_dir = request.models_dir or cfg.default_models_dir
        if request.models_dir and not _under(request.models_dir, cfg.model_roots):
            raise PermissionDenied(f"models_dir {request.models_dir!r} is not under an allowed model root "
                                   f"({cfg.model_roots or 'none configured'})", reason="MODELS_DIR_NOT_ALLOWED")
        spec = JobSpec(tenant=tenant, recipe=loaded.source, recipe_yaml=loaded.yaml, recipe_sha256=loaded.sha256,
                       stage_names=[s.name for s in loaded.recipe.stages], images=list(request.images),
                       prompt=request.prompt, models_dir=models_dir, priority=request.priority,
                       display_name=request.display_name or loaded.recipe.name, labels=dict(request.labels),
                       idempotency_key=request.idempotency_key)
        # quotas are checked in the store's transaction, after an idempotent resubmission found its job
        return self.store.create(spec, max_active=cfg.max_active_jobs, max_storage_bytes=cfg.max_storage_bytes)

    def get(self, job_id: str) -> JobRecord:
        return self.store.get(current_tenant(), job_id)

    def list(self, states=(), recipe: str = "", labels: dict[str, str] | None = None, page_size: int = 0,
             page_token: str = "") -> tuple[list[JobRecord], str]:
        if page_size == 0:
            page_size = 50
        for i, s in enumerate(states):
            if s not in JOB_STATES:
                raise InvalidArgument(f"states[{i}]", f"unknown state {s!r}")
        return self.store.list(current_tenant(), states, recipe, labels or {}, page_size, page_token)

    def cancel(self, job_id: str) -> JobRecord:
        return self.store.request_cancel(current_tenant(), job_id)

    def watch(self, job_id: str, after_sequence: int = 0, max_progress_rate: float = 0.0,
              alive: Callable[[], bool] = lambda: True) -> Iterator[JobEvent]:
        """The job's events: a snapshot (sequence = the job's latest event), then, when after_sequence > 0,
        the state/stage/artifact events after it that the snapshot already covers, then live events; progress
        at most max_progress_rate per second per stage (0 = 2; latest wins). Ends after the event that makes
        the job terminal (right after the snapshot and replay for a finished job), or when alive() turns
        false. Checks the job and the stream quota now, not on the first next()."""
        tenant = current_tenant()
        if after_sequence < 0:
            raise InvalidArgument("after_sequence", f"must be >= 0, got {after_sequence}")
        if max_progress_rate < 0:
            raise InvalidArgument("max_progress_rate", f"must be >= 0, got {max_progress_rate}")
        record, seq = self.store.snapshot(job_id, tenant)
        with self._watch_lock:
            used = self._watchers.get(tenant, 0)
            if used >= self.config.max_watch_streams:
                raise ResourceExhausted(f"tenant {tenant!r} has {used} open watch streams, the limit is "
                                        f"{self.config.max_watch_streams}", reason="TOO_MANY_STREAMS",
                                        metadata={"quota": "max_watch_streams",
                                                  "limit": str(self.config.max_watch_streams), "used": str(used)})
            self._watchers[tenant] = used + 1

        def release():
            with self._watch_lock:
                self._watchers[tenant] -= 1

        events = self._watch(record, seq, after_sequence, 1.0 / (max_progress_rate or 2.0), alive)
        return _WatchStream(events, release)

    def _watch(self, record, seq, after_sequence, interval, alive) -> Iterator[JobEvent]:
        store = self.store
        yield JobEvent(seq, time.time(), "snapshot", record)
        done = record.state in TERMINAL
        if after_sequence and after_sequence < seq:
            for ev in store.events_after(record.id, after_sequence):
                if ev.sequence > seq:
                    break
                if ev.kind != "progress":   # the snapshot has each stage's latest progress
                    yield ev
        if done:
            return
        cursor = max(seq, after_sequence)
        last_sent: dict[str, float] = {}     # stage -> monotonic time of its last progress event
        held: dict[str, JobEvent] = {}       # stage -> newest progress event not sent yet
        while alive():
            if self._draining.is_set():
                raise Unavailable("the jobs service is shutting down; watch again with after_sequence",
                                  reason="SHUTTING_DOWN")
            now = time.monotonic()
            for stage, ev in list(held.items()):
                if now - last_sent.get(stage, -1e9) >= interval:
                    del held[stage]
                    last_sent[stage] = now
                    yield ev
            timeout = self.config.watch_poll_s
            if held:
                due = min(last_sent.get(s, -1e9) + interval for s in held) - time.monotonic()
                timeout = max(0.0, min(timeout, due))
            for ev in store.wait_events(record.id, cursor, timeout):
                cursor = ev.sequence
                if ev.kind == "progress":
                    stage = ev.payload.stage
                    now = time.monotonic()
                    if stage not in held and now - last_sent.get(stage, -1e9) >= interval:
                        last_sent[stage] = now
                        yield ev
                    else:
                        held[stage] = ev
                    continue
                # a stage's (or the job's) end: its newest progress goes first, keeping the order
                stages = list(held) if ev.kind == "state" else [ev.payload.get("stage")] \
                    if ev.kind == "stage" else []
                for stage in stages:
                    if stage in held:
                        last_sent[stage] = time.monotonic()
                        yield held.pop(stage)
                yield ev
                if ev.kind == "state" and ev.payload["current"] in TERMINAL:
                    return

    def open_watch_streams(self, tenant: str) -> int:
        with self._watch_lock:
            return self._watchers.get(tenant, 0)

    def fetch(self, job_id: str, names=(), offset: int = 0, chunk_bytes: int = 0) -> Iterator[ArtifactChunk]:
        """The job's complete artifacts in chunks, one artifact after another in the order asked (all of them,
        in the job's order, when names is empty). offset resumes one artifact (exactly one name). Checks the
        request now, not on the first next()."""
        record = self.store.get(current_tenant(), job_id)
        names = list(names)
        if chunk_bytes < 0 or chunk_bytes > MAX_CHUNK_BYTES:
            raise InvalidArgument("chunk_bytes", f"must be 0..{MAX_CHUNK_BYTES}, got {chunk_bytes}")
        chunk_bytes = chunk_bytes or DEFAULT_CHUNK_BYTES
        if offset < 0:
            raise InvalidArgument("offset", f"must be >= 0, got {offset}")
        if offset and len(names) != 1:
            raise InvalidArgument("offset", "an offset needs exactly one artifact name")
        by_name = {a.name: a for a in record.artifacts}
        for i, name in enumerate(names):
            validate_name(name, f"names[{i}]")
            if name not in by_name:
                raise NotFound(f"job {quoted(job_id)} has no artifact {name!r}", reason="ARTIFACT_NOT_FOUND",
                               metadata={"name": name})
        wanted = [by_name[n] for n in names] if names else list(record.artifacts)
        if offset and offset > wanted[0].size_bytes:
            raise InvalidArgument("offset", f"{offset} is beyond the artifact's {wanted[0].size_bytes} bytes")
        return self._chunks(job_id, wanted, offset, chunk_bytes)

    def _chunks(self, job_id, wanted, offset, chunk_bytes) -> Iterator[ArtifactChunk]:
        for art in wanted:
            pos = offset
            while True:
                data = self.artifacts.read(job_id, art.name, pos, min(chunk_bytes, max(0, art.size_bytes - pos)))
                last = pos + len(data) >= art.size_bytes or not data
                yield ArtifactChunk(art.name, pos, data, art.size_bytes, art.sha256, art.mime_type, last)
                pos += len(data)
                if last:
                    break
            offset = 0

    def describe(self) -> JobsDescription:
        tenant = current_tenant()
        if self._recipes is None:
            self._recipes = recipe_infos()
        cfg = self.config
        return JobsDescription(recipes=list(self._recipes), model_roots=list(cfg.model_roots),
                               max_image_bytes=cfg.max_image_bytes, max_image_pixels=cfg.max_image_pixels,
                               max_active_jobs=cfg.max_active_jobs, active_jobs=self.store.active_count(tenant),
                               max_storage_bytes=cfg.max_storage_bytes, storage_bytes=self.store.storage_bytes(tenant),
                               retention_days=cfg.retention_days, tenant=tenant)


class _WatchStream:
    """A watch stream's iterator: frees the tenant's stream slot when it ends, is closed or is dropped, even
    if it was never iterated."""

    def __init__(self, events: Iterator[JobEvent], release: Callable[[], None]):
        self._events, self._release, self._open = events, release, True

    def __iter__(self):
        return self

    def __next__(self) -> JobEvent:
        try:
            return next(self._events)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._open:
            self._open = False
            self._events.close()
            self._release()

    def __del__(self):
        self.close()
