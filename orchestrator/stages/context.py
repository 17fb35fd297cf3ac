"""What a stage sees: the job's inputs, the service clients, a JSON state that survives restarts, and
callbacks for artifacts, progress, checkpoints and cancellation.

Stages are plain functions `run(ctx, params)`. They call services only through their client interfaces
(in-process or gRPC, the stage cannot tell), keep everything they need later in `ctx.state` (JSON) or in
artifacts, and call `ctx.checkpoint()` every `ctx.checkpoint_every` steps so a restarted job loses at most
that many steps."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from orchestrator.jobs.types import ArtifactRecord, Progress
from services.core.cameras import PinholeCamera


class Clients(Protocol):
    face: Any
    render: Any
    guidance: Any
    inversion: Any


class JobCancelled(Exception):
    """Raised inside a stage when the job's cancellation was requested; the runtime frees its resources."""


@dataclass
class StageContext:
    job_id: str
    seed: int
    images: list[bytes]
    job_prompt: str                                                 # what the job was given ("" = none)
    clients: Clients
    checkpoint_every: int
    write_artifact: Callable[[str, bytes, str], ArtifactRecord]      # (name, data, stage) -> record
    read_artifact: Callable[[str], bytes]
    report: Callable[[Progress], None]
    is_cancelled: Callable[[], bool]
    stage: str = ""
    image_names: list[str] = field(default_factory=list)            # where the photos came from, when known
    models_dir: str = ""                                            # the job's models_dir on this machine
    state: dict[str, Any] = field(default_factory=dict)             # JSON-serialisable, checkpointed
    scratch: dict[str, Any] = field(default_factory=dict)           # this run only (e.g. live scene ids)

    @property
    def prompt(self) -> str:
        """The text prompt stages condition on: the job's prompt when the user gave one (a user-given prompt
        wins over a caption), else the caption stage's prompt (state["caption"]["prompt"]) when one ran, else ""."""
        if self.job_prompt:
            return self.job_prompt
        return (self.state.get("caption") or {}).get("prompt", "")

    def model_path(self, path: str) -> str:
        """A model file or folder a recipe names (e.g. LPIPS weights, a CLIP folder), on the machine that
        runs the job: relative paths are under the job's models_dir when it has one."""
        if not path or os.path.isabs(path) or not self.models_dir:
            return path
        return os.path.join(self.models_dir, path)

    def artifact(self, name: str, data: bytes) -> ArtifactRecord:
        return self.write_artifact(name, data, self.stage)

    def progress(self, step: int, total: int, message: str = "", **metrics: float) -> None:
        self.report(Progress(self.stage, step, total, message, {k: float(v) for k, v in metrics.items()}))

    def add_report_section(self, name: str, value: dict) -> None:
        """A top-level section of the job's report.json (runtime/report.py writes it); "models" sections
        of several stages are merged."""
        sections = self.state.setdefault("report", {})
        if name == "models":
            sections.setdefault("models", {}).update(value)
        else:
            sections[name] = value

    def warn(self, message: str) -> None:
        """A warning for the user: it lands in report.json and metrics.json."""
        self.state.setdefault("warnings", []).append(message)

    def check_cancelled(self) -> None:
        if self.is_cancelled():
            raise JobCancelled(self.job_id)

    def checkpoint(self, scene_state: bytes | None = None) -> None:
        """Persist ctx.state (and the render scene's checkpoint, when given) as job artifacts."""
        if scene_state is not None:
            self.write_artifact("checkpoints/scene.ckpt", scene_state, self.stage)
            self.state["scene_checkpoint"] = "checkpoints/scene.ckpt"
        self.write_artifact("checkpoints/state.json", json.dumps(self.state).encode(), self.stage)


def camera_to_json(cam: PinholeCamera) -> dict:
    return {"K": np.asarray(cam.K).tolist(), "world_to_camera": np.asarray(cam.world_to_camera).tolist(),
            "width": int(cam.width), "height": int(cam.height)}


def camera_from_json(d: dict) -> PinholeCamera:
    return PinholeCamera(np.asarray(d["K"], np.float64), np.asarray(d["world_to_camera"], np.float64),
                         int(d["width"]), int(d["height"]))
