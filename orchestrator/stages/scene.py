"""init and export: the subject's scene in the render service, created once and restored from the job's
checkpoint after a restart (the render service may have restarted too)."""

from __future__ import annotations

import numpy as np

from orchestrator.stages.context import StageContext
from orchestrator.stages.params import ExportParams, InitParams
from services.common.errors import HeadForgeError
from services.common.images import decode_png
from services.render.optim import LrSchedule, OptimizerSpec

EXTENSIONS = {"glb": "glb", "ply": "ply", "npz": "npz", "obj_zip": "zip"}


def _optimizer(lrs: dict) -> OptimizerSpec:
    schedules = {}
    for group, v in lrs.items():
        schedules[group] = LrSchedule.constant(float(v)) if isinstance(v, (int, float)) else \
            LrSchedule(int(v[0]), float(v[1]), float(v[2]), int(v[3]))
    return OptimizerSpec(lrs=schedules)


def run_init(ctx: StageContext, params: InitParams) -> None:
    init: dict = {"num_points": params.num_points, "radius": params.radius}
    if params.representation == "gaussians" and params.color_from_photo and "reference" in ctx.state:
        photo = decode_png(ctx.read_artifact(ctx.state["reference"]["image"]))[..., :3].astype(np.float32) / 255
        mask = decode_png(ctx.read_artifact(ctx.state["reference"]["mask"]))[..., 0] > 127
        mean = photo[mask].mean(0) if mask.any() else np.full(3, 0.5)
        init["colors"] = np.tile(mean, (params.num_points, 1)).astype(np.float32)
    if params.representation == "mesh":
        init = {"sphere_radius": params.radius}
    info = ctx.clients.render.create_scene(params.representation, init, optimizer=_optimizer(params.lrs),
                                           seed=ctx.seed + 1, label=ctx.job_id)
    ctx.state["scene"] = {"kind": params.representation, "lrs": params.model_dump()["lrs"], "live_id": info.scene_id}
    ctx.scratch["scene_id"] = info.scene_id
    ctx.checkpoint(ctx.clients.render.get_state(info.scene_id))


def ensure_scene(ctx: StageContext) -> str:
    """The scene id of this job. A resumed job (new process, or the render service restarted) gets its
    scene back from the last checkpoint."""
    if "scene_id" not in ctx.scratch:
        scene = ctx.state["scene"]
        if scene.get("live_id"):    # the previous worker's scene, if the render service still holds it
            try:
                ctx.clients.render.close_scene(scene["live_id"])
            except HeadForgeError:
                pass
        info = ctx.clients.render.create_scene(scene["kind"], asset=(ctx.read_artifact(ctx.state["scene_checkpoint"]),
                                                                     "checkpoint"),
                                               optimizer=_optimizer(scene.get("lrs", {})), label=ctx.job_id)
        ctx.scratch["scene_id"] = scene["live_id"] = info.scene_id
    return ctx.scratch["scene_id"]


def close_scene(ctx: StageContext) -> None:
    """Free the job's scene in the render service (end of job, or cancelled)."""
    scene_id = ctx.scratch.pop("scene_id", None)
    if scene_id is not None:
        try:
            ctx.clients.render.close_scene(scene_id)
        except HeadForgeError:   # already gone (expired, or the service restarted)
            pass


def run_export(ctx: StageContext, params: ExportParams) -> None:
    scene_id = ensure_scene(ctx)
    for fmt in params.formats:
        ctx.artifact(f"export/head.{EXTENSIONS[fmt]}", ctx.clients.render.export(scene_id, fmt))
