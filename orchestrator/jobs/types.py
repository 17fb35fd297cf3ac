"""Plain records of jobs, stages, artifacts and events (jobs.proto), shared by the store, the runtime, the
jobs service and its clients. Times are UNIX seconds (UTC)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
StageState = Literal["pending", "running", "succeeded", "failed", "skipped", "cancelled"]
TERMINAL: tuple[str, ...] = ("succeeded", "failed", "cancelled")
VERSION = "0.1.0"          # the jobs service's, in JobsDescription


@dataclass
class Progress:
    stage: str
    step: int = 0
    total: int = 0
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)   # losses etc.


@dataclass
class StageRecord:
    name: str
    state: StageState = "pending"
    started_at: float | None = None
    finished_at: float | None = None
    progress: Progress | None = None
    resumes: int = 0


@dataclass
class ArtifactRecord:
    name: str                 # relative path with "/" separators, e.g. "export/head.ply"
    size_bytes: int
    mime_type: str
    sha256: str               # lowercase hex
    stage: str
    created_at: float


@dataclass
class JobSpec:
    """What Submit stores: the validated, resolved recipe and the inputs."""

    tenant: str
    recipe: str               # built-in name or "inline"
    recipe_yaml: str          # resolved (options applied)
    recipe_sha256: str
    stage_names: list[str]
    images: list[bytes] = field(default_factory=list)   # encoded photos as sent
    prompt: str = ""
    models_dir: str = ""
    priority: int = 0
    display_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    idempotency_key: str = ""


@dataclass
class JobRecord:
    id: str
    tenant: str
    display_name: str
    recipe: str
    recipe_sha256: str
    state: JobState
    cancel_requested: bool
    priority: int
    labels: dict[str, str]
    stages: list[StageRecord]
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    error_message: str = ""
    error_reason: str = ""
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    queue_position: int = -1
    attempts: int = 0         # times the runtime started an actor for it (resumes after failures add one)


@dataclass
class JobEvent:
    """kind: "snapshot" (payload: JobRecord), "state" ({previous, current, error_message, error_reason}),
    "stage" ({stage, previous, current}), "progress" (Progress), "artifact" (ArtifactRecord)."""

    sequence: int
    time: float
    kind: Literal["snapshot", "state", "stage", "progress", "artifact"]
    payload: Any


# the jobs service's requests and answers (jobs.proto messages) ------------------------------------

@dataclass
class ArtifactChunk:
    name: str
    offset: int
    data: bytes
    total_size: int
    sha256: str
    mime_type: str
    last: bool


@dataclass
class RecipeInfo:
    name: str
    description: str
    min_images: int
    max_images: int
    prompt_required: bool
    output: str
    yaml: str


@dataclass
class JobsDescription:
    recipes: list[RecipeInfo]
    model_roots: list[str]
    max_image_bytes: int
    max_image_pixels: int
    max_active_jobs: int
    active_jobs: int
    max_storage_bytes: int
    storage_bytes: int
    retention_days: int
    tenant: str
    version: str = VERSION


@dataclass
class SubmitRequest:
    recipe_name: str = ""
    recipe_yaml: str = ""
    images: list[bytes] = field(default_factory=list)
    prompt: str = ""
    options: dict[str, str] = field(default_factory=dict)
    models_dir: str = ""
    priority: int = 0
    display_name: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    idempotency_key: str = ""
