"""The job store's tables (schema, states) and the conversions between their rows and the records of
orchestrator/jobs/types.py, and List's page tokens. Pure functions over sqlite3 rows; the store's
transactions are in orchestrator/jobs/store.py."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import sqlite3
from typing import Iterable

from orchestrator.jobs.types import ArtifactRecord, JobRecord, Progress, StageRecord
from services.common.errors import InvalidArgument

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
STAGE_STATES = ("pending", "running", "succeeded", "failed", "skipped", "cancelled")
STAGE_TERMINAL = ("succeeded", "failed", "skipped", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    n INTEGER PRIMARY KEY AUTOINCREMENT,         -- creation order (newest first = n DESC)
    id TEXT NOT NULL UNIQUE,
    tenant TEXT NOT NULL,
    display_name TEXT NOT NULL,
    recipe TEXT NOT NULL,
    recipe_yaml TEXT NOT NULL,
    recipe_sha256 TEXT NOT NULL,
    prompt TEXT NOT NULL,
    models_dir TEXT NOT NULL,
    state TEXT NOT NULL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL DEFAULT 0,
    labels TEXT NOT NULL,                        -- JSON, also exploded into job_labels for filtering
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error_message TEXT NOT NULL DEFAULT '',
    error_reason TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    idempotency_key TEXT NOT NULL DEFAULT '',
    last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs (tenant, n);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, priority, n);
CREATE INDEX IF NOT EXISTS jobs_idem ON jobs (tenant, idempotency_key);
CREATE TABLE IF NOT EXISTS job_labels (
    job_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (job_id, key)
);
CREATE INDEX IF NOT EXISTS job_labels_kv ON job_labels (key, value);
CREATE TABLE IF NOT EXISTS stages (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL,
    finished_at REAL,
    progress TEXT,                               -- JSON of Progress
    resumes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, name)
);
CREATE TABLE IF NOT EXISTS inputs (
    job_id TEXT NOT NULL, idx INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS artifacts (
    job_id TEXT NOT NULL,
    name TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    mime_type TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    stage TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (job_id, name)
);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    payload TEXT NOT NULL,
    PRIMARY KEY (job_id, sequence)
);
"""


def check_state(value: str, allowed: tuple[str, ...], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; one of {allowed}")


def progress_from(data: dict | None) -> Progress | None:
    if data is None:
        return None
    return Progress(stage=data["stage"], step=data.get("step", 0), total=data.get("total", 0),
                    message=data.get("message", ""), metrics=dict(data.get("metrics", {})))


def payload_from(kind: str, data: dict):
    if kind == "progress":
        return progress_from(data)
    if kind == "artifact":
        return ArtifactRecord(**data)
    return data


def record_from_row(c: sqlite3.Connection, row: sqlite3.Row) -> JobRecord:
    """A jobs row with its stages, artifacts and queue position, as a JobRecord."""
    job_id = row["id"]
    stages = [StageRecord(name=s["name"], state=s["state"], started_at=s["started_at"],
                          finished_at=s["finished_at"],
                          progress=progress_from(json.loads(s["progress"]) if s["progress"] else None),
                          resumes=s["resumes"])
              for s in c.execute("SELECT * FROM stages WHERE job_id = ? ORDER BY idx", (job_id,))]
    artifacts = [ArtifactRecord(name=a["name"], size_bytes=a["size_bytes"], mime_type=a["mime_type"],
                                sha256=a["sha256"], stage=a["stage"], created_at=a["created_at"])
                 for a in c.execute("SELECT * FROM artifacts WHERE job_id = ? ORDER BY created_at, name",
                                    (job_id,))]
    position = -1
    if row["state"] == "queued":
        position = c.execute(
            "SELECT COUNT(*) FROM jobs WHERE tenant = ? AND state = 'queued' AND "
            "(priority > ? OR (priority = ? AND n < ?))",
            (row["tenant"], row["priority"], row["priority"], row["n"])).fetchone()[0]
    return JobRecord(
        id=job_id, tenant=row["tenant"], display_name=row["display_name"], recipe=row["recipe"],
        recipe_sha256=row["recipe_sha256"], state=row["state"], cancel_requested=bool(row["cancel_requested"]),
        priority=row["priority"], labels=json.loads(row["labels"]), stages=stages,
        created_at=row["created_at"], updated_at=row["updated_at"], started_at=row["started_at"],
        finished_at=row["finished_at"], error_message=row["error_message"], error_reason=row["error_reason"],
        artifacts=artifacts, queue_position=position, attempts=row["attempts"])


def filter_key(states: Iterable[str], recipe: str, labels: dict[str, str]) -> str:
    text = json.dumps([sorted(states), recipe, sorted(labels.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]

def encode_page_token(n: int, key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"n": n, "f": key}).encode()).decode().rstrip("=")

def decode_page_token(token: str, key: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        n = data["n"]
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidArgument("page_token", "not a page token from a previous List", reason="BAD_PAGE_TOKEN") \
            from None
    if data.get("f") != key:
        raise InvalidArgument("page_token", "the page token was issued for different filters",
                              reason="BAD_PAGE_TOKEN")
    return n
