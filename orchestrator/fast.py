"""The `fast` recipe from Python: one portrait -> a textured 3D head on a CPU in well under a minute, no
weights beyond the shipped dlib models. The recipe is orchestrator/recipes/builtin/fast.yaml, ordinary
stages run by the same runtime as every recipe (orchestrator/local.py, runtime/execute.py):

    analyse    preprocess: the photo intake, 68 landmarks, 3D landmarks and pose, the photo's camera,
               head/face masks, identity embedding (largest face, or face_index)
    fit        template_fit: the head template deformed to the 3D landmarks, its silhouette fitted to the
               head mask through the render service
    texture    template_texture: the photo back-projected, the unseen side mirrored, the rest inpainted
    export     asset.glb (render service export); texture.png comes from the texture stage
    turntable  turntable.gif
    evaluate   the papers' protocol at the photo's camera -> metrics, contact_sheet.png; report.json from
               the runtime's one report writer

Services are reached only through their client interfaces (in-process or gRPC). Files land in out_dir only
when every stage succeeded."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from orchestrator.jobs.types import Progress
from services.common.errors import error_from_code

RECIPE = "fast"

# progress weights of the recipe's stages (fractions of the whole run)
STAGE_WEIGHTS = {"analyse": 0.10, "fit": 0.30, "texture": 0.20, "export": 0.05, "turntable": 0.10, "evaluate": 0.25}


@dataclass
class FastResult:
    out_dir: Path
    glb: Path
    turntable: Path
    contact_sheet: Path
    report: Path
    texture: Path
    timings: dict[str, float]
    metrics: dict
    warnings: list[str] = field(default_factory=list)


def fast_options(*, face_index: int = 0, texture_size: int = 1024, fit_steps: int = 16, turntable_frames: int = 24,
                 turntable_size: int = 256, clip_model: str | None = None) -> dict[str, str]:
    """The fast recipe's options (recipe dotted paths) for run_fast's keyword arguments."""
    options = {"stages.analyse.face_index": str(face_index), "stages.texture.texture_size": str(texture_size),
               "stages.fit.fit_steps": str(fit_steps), "stages.turntable.frames": str(turntable_frames),
               "stages.turntable.size": str(turntable_size)}
    if clip_model:
        options["stages.evaluate.clip_model"] = json.dumps(str(clip_model))
    return options


class _OverallProgress:
    """execute() events -> progress(stage, overall_fraction in [0, 1]), weighted by STAGE_WEIGHTS."""

    def __init__(self, callback: Callable[[str, float], None] | None):
        self.callback = callback
        self.done = 0.0

    def __call__(self, event: dict) -> None:
        if self.callback is None:
            return
        if event["kind"] == "progress":
            p: Progress = event["progress"]
            fraction = min(max(p.step / max(p.total, 1), 0.0), 1.0)
            self.callback(p.stage, self.done + STAGE_WEIGHTS[p.stage] * fraction)
        elif event["kind"] == "stage" and event["state"] == "succeeded":
            self.done += STAGE_WEIGHTS[event["stage"]]
            self.callback(event["stage"], self.done)


def _encoded(image) -> tuple[bytes, str]:
    """(encoded photo, its source name) from bytes, a path or a uint8 (H, W, 3) array."""
    from services.common.images import encode_png

    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes(), str(image)
    if isinstance(image, (bytes, bytearray)):
        return bytes(image), ""
    return encode_png(np.ascontiguousarray(image)), ""


def run_fast(image, out_dir, *, face_client, render_client, face_index: int = 0,
             progress: Callable[[str, float], None] | None = None, texture_size: int = 1024, fit_steps: int = 16,
             turntable_frames: int = 24, turntable_size: int = 256, clip_model: str | None = None,
             source_name: str = "") -> FastResult:
    """Build a textured head from one portrait. image: bytes, a path or a uint8 (H, W, 3) array.
    progress(stage, overall_fraction) is called as the run goes. Raises the stage's error (NO_FACE,
    FACE_INDEX, FACE_TOO_SMALL as FailedPrecondition, ...) for photos the recipe cannot use; nothing is
    written then."""
    from orchestrator.local import run_local
    from orchestrator.recipes import load_recipe
    from orchestrator.runtime.endpoints import ServiceClients

    data, name = _encoded(image)
    loaded = load_recipe(RECIPE, options=fast_options(
        face_index=face_index, texture_size=texture_size, fit_steps=fit_steps, turntable_frames=turntable_frames,
        turntable_size=turntable_size, clip_model=clip_model))
    clients = ServiceClients(face=face_client, render=render_client, guidance=None)   # fast needs no guidance
    result = run_local(loaded, [data], "", Path(out_dir), clients=clients, image_names=[source_name or name],
                       show_progress=False, on_event=_OverallProgress(progress))
    if result.state != "succeeded":
        stage, _, message = result.error_message.partition(": ")
        raise error_from_code(result.error_code, message or stage, result.error_reason)
    out = Path(out_dir)
    report = json.loads((out / "report.json").read_text())
    return FastResult(out, out / "asset.glb", out / "turntable.gif", out / "contact_sheet.png", out / "report.json",
                      out / "texture.png", report["timings_s"], report["metrics"], report["warnings"])
