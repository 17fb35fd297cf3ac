"""evaluate: the papers' protocol on the job's scene (orchestrator.evaluation.evaluate_scene: the protocol
views, identity against the photo with the face service's configured model, PSNR/SSIM at the reference
view's camera), with identity_grid the identity over a grid of views against the held-out photos
(evaluate_identity_grid: metrics["identity_grid"], renders eval/identity_grid/*.png), the turntable GIF
(unless a turntable stage makes it), the contact sheet (orchestrator/contact_sheet.py) and metrics.json,
which is also the metrics section of report.json."""

from __future__ import annotations

import json

import numpy as np

from orchestrator.contact_sheet import contact_sheet, shade_normals
from orchestrator.evaluation import (ID_VIEWS, NOT_AVAILABLE, PROTOCOL_VIEWS, Reference, evaluate_identity_grid,
                                     evaluate_scene, grid_angles, to_uint8, view_camera)
from orchestrator.recipes.requirements import identity_model_problem
from orchestrator.stages.context import StageContext, camera_from_json
from orchestrator.stages.params import EvaluateParams, TurntableParams
from orchestrator.stages.scene import close_scene, ensure_scene
from orchestrator.stages.turntable import write_turntable
from services.common.errors import FailedPrecondition
from services.common.images import decode_png, encode_png


def _reference(ctx: StageContext) -> Reference | None:
    """The photo's reference view from preprocess (photo, head mask, camera, identity embedding)."""
    ref = ctx.state.get("reference")
    if not ref or "embedding" not in ref:
        return None
    return Reference(rgb=decode_png(ctx.read_artifact(ref["image"]))[..., :3],
                     camera=camera_from_json(ref["camera"]),
                     head_mask=decode_png(ctx.read_artifact(ref["mask"]))[..., 0],
                     embedding=np.asarray(ref["embedding"], np.float32), embedding_norm=ref.get("embedding_norm", 0.0))


def _texture(ctx: StageContext) -> np.ndarray | None:
    """The job's texture (template_texture's texture.png) as float (T, T, 3) in [0, 1], if it has one."""
    name = ctx.state.get("texture")
    return None if name is None else decode_png(ctx.read_artifact(name))[..., :3].astype(np.float32) / 255


def _grid_references(ctx: StageContext, params: EvaluateParams, reference: Reference) -> tuple[np.ndarray, str]:
    """(R, D) reference embeddings for the identity grid and their REFERENCE_SOURCES key."""
    held = ctx.state.get("reference", {}).get("held_out_embeddings") or []
    if params.identity_references == "holdout":
        if held:
            return np.asarray(held, np.float32), "held_out_photos"
        ctx.warn("identity_grid: no photos were held out (preprocess holdout_photos is 0, or one photo was given): "
                 "the grid compares the renders with the input photo's identity instead")
    return reference.embedding[None], "input_photo"


def _identity_grid(ctx: StageContext, params: EvaluateParams, scene_id: str, reference: Reference | None) -> dict | str:
    """metrics["identity_grid"] (evaluate_identity_grid), its renders written under eval/identity_grid/."""
    if reference is None:
        ctx.warn("identity_grid: no photo identity to compare with (the recipe has no photo with a face embedding)")
        return f"{NOT_AVAILABLE} (no photo identity: the recipe has no photo with a face embedding)"
    refs, source = _grid_references(ctx, params, reference)
    g = params.identity_grid
    angles = grid_angles(g.yaw, g.elevation, g.yaw_steps, g.elevation_steps)

    def progress(done: int, total: int) -> None:
        ctx.check_cancelled()
        ctx.progress(done, total, "identity grid views")

    metrics, renders = evaluate_identity_grid(ctx.clients.render, ctx.clients.face, scene_id, refs, angles,
                                              source=source, size=params.resolution, progress=progress)
    for name, rgb in renders.items():
        ctx.artifact(f"eval/identity_grid/{name}.png", encode_png(rgb))
    return metrics


def run(ctx: StageContext, params: EvaluateParams) -> None:
    problem = identity_model_problem(params, ctx.clients.face)
    if problem:
        raise FailedPrecondition(f"{ctx.stage}: {problem}", reason="MODELS_MISSING")
    scene_id = ensure_scene(ctx)
    size = params.resolution
    render = ctx.clients.render
    reference = _reference(ctx)
    if reference is not None:
        def progress(done: int, total: int) -> None:
            ctx.check_cancelled()
            ctx.progress(done, total, "protocol views")

        evaluation = evaluate_scene(render, ctx.clients.face, scene_id, reference, size=size,
                                    clip_model=ctx.model_path(params.clip_model or "") or None, progress=progress)
        metrics, renders = evaluation.metrics, evaluation.renders
        metrics["identity"] = {name: metrics["views"][name] for name in ID_VIEWS}
        frontal = metrics["views"]["frontal"]
        if not frontal["face_found"] or not frontal.get("same_person", False):
            ctx.warn("the frontal render is not recognised as the input's person by the face model")
    else:   # no photo (text recipes): the views only
        cams = [view_camera(a, size) for a in (0.0, *PROTOCOL_VIEWS.values())]
        out = render.render(scene_id, cams, ["rgb"]).outputs["rgb"]
        renders = {name: to_uint8(x) for name, x in zip(["frontal", *PROTOCOL_VIEWS], out)}
        metrics = {"views": {name: {"azimuth_deg": a} for name, a in PROTOCOL_VIEWS.items()}}
    if params.identity_grid is not None:
        metrics["identity_grid"] = _identity_grid(ctx, params, scene_id, reference)
    for name in PROTOCOL_VIEWS:
        ctx.artifact(f"eval/{name}.png", encode_png(renders[name]))
    if "reference_view" in renders:
        ctx.artifact("eval/reference_view.png", encode_png(renders["reference_view"]))
    if params.turntable_frames:
        write_turntable(ctx, TurntableParams(frames=params.turntable_frames, size=size))
    gsize = params.geometry_resolution
    geo = render.render(scene_id, [view_camera(a, gsize) for a in (0, 35, 90)], ["normal_world", "alpha"]).outputs
    geometry = [shade_normals(n, a[0]) for n, a in zip(geo["normal_world"], geo["alpha"])]
    photo = reference.rgb if reference is not None else None
    head_box = ctx.state.get("reference", {}).get("head_box")
    sheet = contact_sheet(photo, renders, geometry, _texture(ctx), metrics, head_box=head_box)
    ctx.artifact("contact_sheet.png", encode_png(sheet))
    metrics["warnings"] = ctx.state.get("warnings", [])
    ctx.artifact("metrics.json", json.dumps(metrics, indent=1).encode())
    ctx.add_report_section("metrics", metrics)
    close_scene(ctx)
