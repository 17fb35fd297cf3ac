"""The job store: jobs, their stages, inputs, artifacts and events in one SQLite file (WAL mode).

Safe from many threads (one connection per thread) and from several processes on one machine (every
write is one `BEGIN IMMEDIATE` transaction; readers never block writers in WAL mode). The jobs service
writes submissions and cancellations; the runtime claims jobs and records stages, progress and
artifacts; watchers read events.

Events carry a per-job sequence that only grows. State, stage and artifact events are kept for the
job's lifetime (a watcher that reconnects replays them); of the progress events only the latest per stage
is kept (they are frequent and "latest wins"), so recording progress is one small transaction.

Watchers block in wait_events(): a threading.Condition wakes them at once for writes from this process,
and short polling sees writes from other processes.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

from orchestrator.jobs import metrics
from orchestrator.jobs.rows import (JOB_STATES, SCHEMA, STAGE_STATES, STAGE_TERMINAL, check_state, decode_page_token,
                                    encode_page_token, filter_key, payload_from, record_from_row)
from orchestrator.jobs.sqlite import SqliteDatabase
from orchestrator.jobs.types import TERMINAL, ArtifactRecord, JobEvent, JobRecord, JobSpec, Progress
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, quoted

IDEMPOTENCY_WINDOW_S = 24 * 3600
POLL_S = 0.2          # how often wait_events looks for other processes' writes


class JobStore(SqliteDatabase):
    """Jobs in SQLite at `path` (created with its schema on first open). See the module docstring."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0):
        super().__init__(path, SCHEMA, busy_timeout_s=busy_timeout_s)

    # -- rows -------------------------------------------------------------------------------------------

    @staticmethod
    def _emit(c: sqlite3.Connection, job_id: str, kind: str, payload: dict, now: float, stage: str = "") -> int:
        seq = c.execute("UPDATE jobs SET last_seq = last_seq + 1, updated_at = ? WHERE id = ? RETURNING last_seq",
                        (now, job_id)).fetchone()[0]
        c.execute("INSERT INTO events (job_id, sequence, time, kind, stage, payload) VALUES (?, ?, ?, ?, ?, ?)",
                  (job_id, seq, now, kind, stage, json.dumps(payload)))
        return seq

    def _row(self, c: sqlite3.Connection, job_id: str, tenant: str | None = None) -> sqlite3.Row:
        row = c.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        # another tenant's job is answered exactly like an unknown one: ids do not leak
        if row is None or (tenant is not None and row["tenant"] != tenant):
            raise NotFound(f"no job {quoted(job_id)}", reason="JOB_NOT_FOUND")
        return row

    # -- jobs -------------------------------------------------------------------------------------------

    def create(self, spec: JobSpec, *, max_active: int | None = None,
               max_storage_bytes: int | None = None) -> JobRecord:
        """Queue a job (stages PENDING). With an idempotency_key used by the same tenant within 24 h, the
        existing job instead. Quotas, checked in the insert's transaction (ResourceExhausted with metadata
        quota/limit/used): max_active QUEUED + RUNNING jobs, max_storage_bytes of artifacts."""
        now = time.time()
        with self._write() as c:
            if spec.idempotency_key:
                row = c.execute("SELECT * FROM jobs WHERE tenant = ? AND idempotency_key = ? AND created_at > ? "
                                "ORDER BY n DESC LIMIT 1",
                                (spec.tenant, spec.idempotency_key, now - IDEMPOTENCY_WINDOW_S)).fetchone()
                if row is not None:
                    return record_from_row(c, row)
            if max_active is not None:
                used = self._active(c, spec.tenant)
                if used >= max_active:
                    raise ResourceExhausted(
                        f"tenant {spec.tenant!r} has {used} queued or running jobs, the limit is {max_active}",
                        reason="TOO_MANY_ACTIVE_JOBS",
                        metadata={"quota": "max_active_jobs", "limit": str(max_active), "used": str(used)})
            if max_storage_bytes is not None:
                used = self._storage(c, spec.tenant)
                if used >= max_storage_bytes:
                    raise ResourceExhausted(
                        f"tenant {spec.tenant!r} stores {used} artifact bytes, the limit is {max_storage_bytes}",
                        reason="STORAGE_QUOTA",
                        metadata={"quota": "max_storage_bytes", "limit": str(max_storage_bytes), "used": str(used)})
            # hex, not urlsafe base64: an id starting with "-" would read as an option on the command line
            job_id = secrets.token_hex(16)
            c.execute("INSERT INTO jobs (id, tenant, display_name, recipe, recipe_yaml, recipe_sha256, prompt, "
                      "models_dir, state, priority, labels, created_at, updated_at, idempotency_key) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?)",
                      (job_id, spec.tenant, spec.display_name or spec.recipe, spec.recipe, spec.recipe_yaml,
                       spec.recipe_sha256, spec.prompt, spec.models_dir, int(spec.priority),
                       json.dumps(spec.labels, sort_keys=True), now, now, spec.idempotency_key))
            c.executemany("INSERT INTO job_labels (job_id, key, value) VALUES (?, ?, ?)",
                          [(job_id, k, v) for k, v in spec.labels.items()])
            c.executemany("INSERT INTO stages (job_id, idx, name, state) VALUES (?, ?, ?, 'pending')",
                          [(job_id, i, name) for i, name in enumerate(spec.stage_names)])
            c.executemany("INSERT INTO inputs (job_id, idx, data) VALUES (?, ?, ?)",
                          [(job_id, i, bytes(data)) for i, data in enumerate(spec.images)])
            record = record_from_row(c, self._row(c, job_id))
        self._notify()
        return record

    def get(self, tenant: str, job_id: str) -> JobRecord:
        """The tenant's job; NotFound for an unknown id or another tenant's job."""
        with self._read() as c:
            return record_from_row(c, self._row(c, job_id, tenant))

    def get_any(self, job_id: str) -> JobRecord:
        """Any tenant's job (the runtime)."""
        with self._read() as c:
            return record_from_row(c, self._row(c, job_id))

    def snapshot(self, job_id: str, tenant: str | None = None) -> tuple[JobRecord, int]:
        """The job and the sequence of its latest event, read consistently (a watch stream's first event)."""
        with self._read() as c:
            row = self._row(c, job_id, tenant)
            return record_from_row(c, row), row["last_seq"]

    def inputs(self, job_id: str) -> tuple[list[bytes], str, str, str]:
        """(images, prompt, recipe_yaml, models_dir) of a job."""
        with self._read() as c:
            row = self._row(c, job_id)
            images = [bytes(r["data"]) for r in c.execute("SELECT data FROM inputs WHERE job_id = ? ORDER BY idx",
                                                          (job_id,))]
            return images, row["prompt"], row["recipe_yaml"], row["models_dir"]

    def list(self, tenant: str, states: Iterable[str] = (), recipe: str = "", labels: dict[str, str] | None = None,
             page_size: int = 50, page_token: str = "") -> tuple[list[JobRecord], str]:
        """The tenant's jobs, newest first, and the next page token ("" on the last page)."""
        states, labels = list(states), dict(labels or {})
        for s in states:
            check_state(s, JOB_STATES, "job state")
        if not 1 <= page_size <= 500:
            raise InvalidArgument("page_size", f"must be 1..500, got {page_size}")
        key = filter_key(states, recipe, labels)
        where, args = ["tenant = ?"], [tenant]
        if page_token:
            where.append("n < ?")
            args.append(decode_page_token(page_token, key))
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args.extend(states)
        if recipe:
            where.append("recipe = ?")
            args.append(recipe)
        for k, v in labels.items():
            where.append("EXISTS (SELECT 1 FROM job_labels l WHERE l.job_id = jobs.id AND l.key = ? AND l.value = ?)")
            args.extend([k, v])
        with self._read() as c:
            rows = c.execute(f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY n DESC LIMIT ?",
                             (*args, page_size + 1)).fetchall()
            records = [record_from_row(c, r) for r in rows[:page_size]]
        token = encode_page_token(rows[page_size - 1]["n"], key) if len(rows) > page_size else ""
        return records, token

    def request_cancel(self, tenant: str, job_id: str) -> JobRecord:
        """QUEUED -> CANCELLED at once (its stages CANCELLED); RUNNING -> cancel_requested (the runtime stops
        it); CANCELLED: no-op; SUCCEEDED/FAILED: FailedPrecondition."""
        now = time.time()
        changed = False
        with self._write() as c:
            row = self._row(c, job_id, tenant)
            state = row["state"]
            if state in ("succeeded", "failed"):
                raise FailedPrecondition(f"job {quoted(job_id)} already {state.upper()}", reason="JOB_FINISHED")
            if state == "queued":
                c.execute("UPDATE jobs SET state = 'cancelled', finished_at = ?, updated_at = ?, "
                          "error_message = 'cancelled before it started', error_reason = 'CANCELLED' WHERE id = ?",
                          (now, now, job_id))
                c.execute("UPDATE stages SET state = 'cancelled' WHERE job_id = ? AND state = 'pending'", (job_id,))
                self._emit(c, job_id, "state", {"previous": "queued", "current": "cancelled",
                                                "error_message": "cancelled before it started",
                                                "error_reason": "CANCELLED"}, now)
                changed = True
            elif state == "running" and not row["cancel_requested"]:
                c.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?", (now, job_id))
                changed = True
            record = record_from_row(c, self._row(c, job_id))
        if state == "queued":   # committed: observed like every other terminal transition
            metrics.JOB_DURATION.labels(row["recipe"], "cancelled").observe(now - row["created_at"])
        if changed:
            self._notify()
        return record

    def claim_next(self, max_active_per_tenant: int) -> JobRecord | None:
        """Move the best QUEUED job (highest priority, then oldest) of a tenant with fewer than
        max_active_per_tenant RUNNING jobs to RUNNING (started_at, attempts += 1); None when there is none."""
        now = time.time()
        with self._write() as c:
            row = c.execute(
                "SELECT * FROM jobs AS j WHERE state = 'queued' AND "
                "(SELECT COUNT(*) FROM jobs r WHERE r.tenant = j.tenant AND r.state = 'running') < ? "
                "ORDER BY priority DESC, n ASC LIMIT 1", (max_active_per_tenant,)).fetchone()
            if row is None:
                return None
            c.execute("UPDATE jobs SET state = 'running', started_at = COALESCE(started_at, ?), "
                      "attempts = attempts + 1, updated_at = ? WHERE id = ?", (now, now, row["id"]))
            self._emit(c, row["id"], "state", {"previous": "queued", "current": "running",
                                               "error_message": "", "error_reason": ""}, now)
            record = record_from_row(c, self._row(c, row["id"]))
        if row["started_at"] is None:
            metrics.JOB_QUEUE_WAIT.labels(row["recipe"]).observe(now - row["created_at"])
        self._notify()
        return record

    def state_summary(self) -> tuple[dict[tuple[str, str], int], float | None]:
        """Job counts by (state, tenant) and the created_at of the oldest QUEUED job (None: none queued)."""
        with self._read() as c:
            counts = {(r["state"], r["tenant"]): r["n"] for r in
                      c.execute("SELECT state, tenant, COUNT(*) AS n FROM jobs GROUP BY state, tenant")}
            oldest = c.execute("SELECT MIN(created_at) FROM jobs WHERE state = 'queued'").fetchone()[0]
        return counts, oldest

    def running_jobs(self) -> list[JobRecord]:
        """Every RUNNING job, oldest first (the runtime resumes them after a restart)."""
        with self._read() as c:
            return [record_from_row(c, r) for r in c.execute("SELECT * FROM jobs WHERE state = 'running' ORDER BY n")]

    def set_job_state(self, job_id: str, state: str, error_message: str = "", error_reason: str = "") -> JobRecord:
        """A transition the runtime decides (RUNNING -> SUCCEEDED/FAILED/CANCELLED, or back to QUEUED to run it
        again); terminal states set finished_at and clear cancel_requested. Emits a "state" event when it
        changes. A terminal job stays terminal: FailedPrecondition for a move to another state."""
        check_state(state, JOB_STATES, "job state")
        now = time.time()
        with self._write() as c:
            row = self._row(c, job_id)
            previous = row["state"]
            if previous in TERMINAL and state != previous:
                raise FailedPrecondition(f"job {quoted(job_id)} is already {previous.upper()}", reason="JOB_FINISHED")
            if previous != state or error_message != row["error_message"] or error_reason != row["error_reason"]:
                terminal = state in TERMINAL
                c.execute("UPDATE jobs SET state = ?, error_message = ?, error_reason = ?, updated_at = ?, "
                          "finished_at = ?, cancel_requested = CASE WHEN ? THEN 0 ELSE cancel_requested END "
                          "WHERE id = ?",
                          (state, error_message, error_reason, now, now if terminal else None, terminal, job_id))
                self._emit(c, job_id, "state", {"previous": previous, "current": state,
                                                "error_message": error_message, "error_reason": error_reason}, now)
            record = record_from_row(c, self._row(c, job_id))
        if state in TERMINAL and previous != state:
            metrics.JOB_DURATION.labels(row["recipe"], state).observe(now - row["created_at"])
        self._notify()
        return record

    def set_stage_state(self, job_id: str, stage: str, state: str) -> None:
        """A stage's state; RUNNING sets started_at (first time), a terminal state finished_at. Emits "stage"."""
        check_state(state, STAGE_STATES, "stage state")
        now = time.time()
        with self._write() as c:
            row = c.execute("SELECT state, started_at FROM stages WHERE job_id = ? AND name = ?",
                            (job_id, stage)).fetchone()
            if row is None:
                self._row(c, job_id)
                raise NotFound(f"job {quoted(job_id)} has no stage {stage!r}", reason="STAGE_NOT_FOUND")
            c.execute("UPDATE stages SET state = ?, "
                      "started_at = CASE WHEN ? = 'running' THEN COALESCE(started_at, ?) ELSE started_at END, "
                      "finished_at = CASE WHEN ? THEN ? ELSE NULL END WHERE job_id = ? AND name = ?",
                      (state, state, now, state in STAGE_TERMINAL, now, job_id, stage))
            self._emit(c, job_id, "stage", {"stage": stage, "previous": row["state"], "current": state}, now, stage)
        if state in STAGE_TERMINAL and row["state"] != state and row["started_at"] is not None:
            metrics.STAGE_DURATION.labels(stage, state).observe(now - row["started_at"])
        self._notify()

    def add_resume(self, job_id: str, stage: str) -> None:
        """The stage was resumed from a checkpoint after a failure (resumes += 1)."""
        with self._write() as c:
            if c.execute("UPDATE stages SET resumes = resumes + 1 WHERE job_id = ? AND name = ?",
                         (job_id, stage)).rowcount == 0:
                self._row(c, job_id)
                raise NotFound(f"job {quoted(job_id)} has no stage {stage!r}", reason="STAGE_NOT_FOUND")
            c.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (time.time(), job_id))

    def record_progress(self, job_id: str, progress: Progress) -> None:
        """The stage's latest progress, and a "progress" event replacing the stage's previous one."""
        now = time.time()
        data = json.dumps(asdict(progress))
        with self._write() as c:
            if c.execute("UPDATE stages SET progress = ? WHERE job_id = ? AND name = ?",
                         (data, job_id, progress.stage)).rowcount == 0:
                self._row(c, job_id)
                raise NotFound(f"job {quoted(job_id)} has no stage {progress.stage!r}", reason="STAGE_NOT_FOUND")
            c.execute("DELETE FROM events WHERE job_id = ? AND kind = 'progress' AND stage = ?",
                      (job_id, progress.stage))
            seq = c.execute("UPDATE jobs SET last_seq = last_seq + 1, updated_at = ? WHERE id = ? RETURNING last_seq",
                            (now, job_id)).fetchone()[0]
            c.execute("INSERT INTO events (job_id, sequence, time, kind, stage, payload) "
                      "VALUES (?, ?, ?, 'progress', ?, ?)", (job_id, seq, now, progress.stage, data))
        self._notify()

    def add_artifact(self, job_id: str, record: ArtifactRecord) -> None:
        """Record a complete artifact (replacing one of the same name); emits "artifact"."""
        now = time.time()
        with self._write() as c:
            self._row(c, job_id)
            c.execute("INSERT OR REPLACE INTO artifacts (job_id, name, size_bytes, mime_type, sha256, stage, created_at) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)", (job_id, record.name, record.size_bytes, record.mime_type,
                                                       record.sha256, record.stage, record.created_at))
            self._emit(c, job_id, "artifact", asdict(record), now, record.stage)
        self._notify()

    def expired_jobs(self, finished_before: float) -> list[str]:
        """Finished jobs (finished_at before the given time) that still have artifacts (retention)."""
        with self._read() as c:
            return [r["id"] for r in c.execute(
                "SELECT id FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled') AND finished_at < ? "
                "AND EXISTS (SELECT 1 FROM artifacts a WHERE a.job_id = jobs.id) ORDER BY n", (finished_before,))]

    def remove_artifacts(self, job_id: str) -> int:
        """Forget a job's artifacts (their files are the ArtifactStore's to delete); returns the bytes freed."""
        with self._write() as c:
            freed = c.execute("SELECT COALESCE(SUM(size_bytes), 0) FROM artifacts WHERE job_id = ?",
                              (job_id,)).fetchone()[0]
            c.execute("DELETE FROM artifacts WHERE job_id = ?", (job_id,))
            c.execute("UPDATE jobs SET updated_at = ? WHERE id = ?", (time.time(), job_id))
        return freed

    # -- events -----------------------------------------------------------------------------------------

    def events_after(self, job_id: str, sequence: int) -> list[JobEvent]:
        """The job's stored events with a sequence above `sequence`, in order."""
        with self._read() as c:
            rows = c.execute("SELECT sequence, time, kind, payload FROM events WHERE job_id = ? AND sequence > ? "
                             "ORDER BY sequence", (job_id, sequence)).fetchall()
        return [JobEvent(r["sequence"], r["time"], r["kind"], payload_from(r["kind"], json.loads(r["payload"])))
                for r in rows]

    def last_sequence(self, job_id: str) -> int:
        with self._read() as c:
            return self._row(c, job_id)["last_seq"]

    def wait_events(self, job_id: str, sequence: int, timeout_s: float) -> list[JobEvent]:
        """events_after(), blocking up to timeout_s until there is one ([] on timeout)."""
        deadline = time.monotonic() + timeout_s
        while True:
            generation = self._generation
            events = self.events_after(job_id, sequence)
            remaining = deadline - time.monotonic()
            if events or remaining <= 0:
                return events
            with self._changed:
                # woken at once by this process's writes; polling sees other processes'
                if generation == self._generation:
                    self._changed.wait(min(POLL_S, remaining))

    # -- usage ------------------------------------------------------------------------------------------

    @staticmethod
    def _active(c: sqlite3.Connection, tenant: str) -> int:
        return c.execute("SELECT COUNT(*) FROM jobs WHERE tenant = ? AND state IN ('queued', 'running')",
                         (tenant,)).fetchone()[0]

    def active_count(self, tenant: str) -> int:
        """QUEUED + RUNNING jobs of the tenant."""
        with self._read() as c:
            return self._active(c, tenant)

    @staticmethod
    def _storage(c: sqlite3.Connection, tenant: str) -> int:
        return c.execute("SELECT COALESCE(SUM(a.size_bytes), 0) FROM artifacts a JOIN jobs j ON j.id = a.job_id "
                         "WHERE j.tenant = ?", (tenant,)).fetchone()[0]

    def storage_bytes(self, tenant: str) -> int:
        """Bytes of the tenant's artifacts."""
        with self._read() as c:
            return self._storage(c, tenant)
