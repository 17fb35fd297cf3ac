"""init, convert and export: the subject's scene in the render service, created once and restored from the job's
checkpoint after a restart (the render service may have restarted too)."""

from __future__ import annotations

import numpy as np

from orchestrator.stages.context import StageContext
from orchestrator.stages.params import ConvertParams, ExportParams, InitParams
from services.common.errors import FailedPrecondition, HeadForgeError, InvalidArgument
from services.common.images import decode_png
from services.render.types import LrSchedule, OptimizerSpec

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
    if params.representation == "mesh":   # an icosphere with a UV texture
        import trimesh

        sphere = trimesh.creation.icosphere(subdivisions=3, radius=params.radius)
        init = {"vertices": np.asarray(sphere.vertices, np.float32), "faces": np.asarray(sphere.faces, np.int32),
                "texture_size": 256}
    info = ctx.clients.render.create_scene(params.representation, init, optimizer=_optimizer(params.lrs),
                                           seed=ctx.seed + 1, label=ctx.job_id)
    set_job_scene(ctx, params.representation, info.scene_id, params.model_dump()["lrs"])


def set_job_scene(ctx: StageContext, kind: str, scene_id: str, lrs: dict) -> None:
    """Make a live render-service scene the job's scene (of `kind`, with its optimiser's learning rates)
    and checkpoint it, so later stages and a restarted job find it (ensure_scene)."""
    ctx.state["scene"] = {"kind": kind, "lrs": lrs, "live_id": scene_id}
    ctx.scratch["scene_id"] = scene_id
    ctx.checkpoint(ctx.clients.render.get_state(scene_id))


def ensure_scene(ctx: StageContext) -> str:
    """The scene id of this job. A resumed job (new process, or the render service restarted) gets its
    scene back from the last checkpoint."""
    if "scene_id" not in ctx.scratch:
        if "scene" not in ctx.state:
            raise FailedPrecondition(f"{ctx.stage} needs the job's scene: put a stage that makes one (init, "
                                     "template_texture) before it", reason="NO_SCENE")
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


def run_convert(ctx: StageContext, params: ConvertParams) -> None:
    """mesh -> Gaussians: sample the exported GLB's surface (colours from its texture) and start a Gaussian
    scene there; the mesh scene is closed and the job continues on the new one."""
    import io

    import trimesh

    scene = ctx.state["scene"]
    if scene["kind"] != "mesh":
        raise InvalidArgument("convert", f"converts a mesh scene to Gaussians; the job's scene is {scene['kind']}")
    mesh = trimesh.load(io.BytesIO(ctx.clients.render.export(ensure_scene(ctx), "glb")), file_type="glb",
                        force="mesh")
    points, faces = trimesh.sample.sample_surface_even(mesh, params.num_points, seed=ctx.seed)
    colors = np.full((len(points), 3), 0.5, np.float32)
    visual = mesh.visual
    if isinstance(visual, trimesh.visual.TextureVisuals) and visual.uv is not None and visual.material is not None:
        bary = trimesh.triangles.points_to_barycentric(mesh.triangles[faces], points)
        uv = np.einsum("nk,nkj->nj", bary, visual.uv[mesh.faces[faces]])
        colors = visual.material.to_color(uv)[:, :3].astype(np.float32) / 255
    close_scene(ctx)
    info = ctx.clients.render.create_scene("gaussians", {"points": points.astype(np.float32), "colors": colors},
                                           optimizer=_optimizer(params.lrs), seed=ctx.seed + 2, label=ctx.job_id)
    set_job_scene(ctx, "gaussians", info.scene_id, params.model_dump()["lrs"])


def run_export(ctx: StageContext, params: ExportParams) -> None:
    scene_id = ensure_scene(ctx)
    for fmt in params.formats:
        ctx.artifact(f"{params.stem}.{EXTENSIONS[fmt]}", ctx.clients.render.export(scene_id, fmt))
