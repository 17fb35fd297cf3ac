"""texture_inpaint: paint the unseen part of a mesh's UV texture, view by view (the texturing of
Portrait3D-style and TEXTure-style pipelines). With photo_first the reference photo is back-projected first
(only texels it sees are written, and they are marked seen). Then for each camera in order: render rgb,
alpha, the camera-frame normals and texture_seen; the pixels of the head whose texels no view has written
are the inpainting mask; the guidance service's Inpaint fills them (prompt, normal control, optionally the
photo's identity through an identity adapter); the result is
back-projected with write="unseen", so texels already written, the photo's included, are never
overwritten; the report's photo_kept says how much the reference view changed, after the photo, where its
texels came from the photo (0: none overwritten). The view index is checkpointed: a resumed job continues at
the next view."""

from __future__ import annotations

import io

import numpy as np

from orchestrator.stages.cameras import step_rng, views_for_step
from orchestrator.stages.context import StageContext, camera_from_json
from orchestrator.stages.params import TextureInpaintParams, ordered_view_count
from orchestrator.stages.scene import ensure_scene
from services.common.errors import FailedPrecondition
from services.common.images import decode_png
from services.guidance.types import Conditions, ControlInput, InpaintRequest


def _photo_first(ctx: StageContext, scene_id: str, params: TextureInpaintParams) -> int:
    ref = ctx.state.get("reference")
    if ref is None:
        return 0
    photo = decode_png(ctx.read_artifact(ref["image"]))[..., :3]
    mask = decode_png(ctx.read_artifact(ref["mask"]))[..., 0] > 127
    bp = ctx.clients.render.back_project(scene_id, photo, camera_from_json(ref["camera"]), mask=mask.astype(np.float32),
                                         min_cosine=params.min_cosine, write="unseen")
    return bp.texels_written


def _reference_view(ctx: StageContext, scene_id: str):
    """(rgb (3, H, W), texture_seen (H, W)) of the scene at the photo's reference camera."""
    ref = ctx.state["reference"]
    out = ctx.clients.render.render(scene_id, [camera_from_json(ref["camera"])], ["rgb", "texture_seen"]).outputs
    return out["rgb"][0], out["texture_seen"][0, 0]


def _photo_kept(ctx: StageContext, scene_id: str, name: str) -> dict:
    """How far the reference view moved, since the photo was back-projected, at the pixels whose texels all came
    from the photo (texture_seen exactly 1 then: every texel the bilinear lookup reads was written), eroded by
    one pixel (the renderer's silhouette anti-aliasing blends a pixel with its neighbours, whose texels may be
    another view's): 0 when no later view overwrote a photo texel."""
    from scipy.ndimage import binary_erosion

    before = np.load(io.BytesIO(ctx.read_artifact(name)))
    rgb, _ = _reference_view(ctx, scene_id)
    photo = binary_erosion(before["seen"] >= 1.0, np.ones((3, 3), bool))
    change = np.abs(rgb - before["rgb"]).max(0)[photo]
    return {"pixels": int(photo.sum()), "max_change": round(float(change.max()), 6) if change.size else None}


def run(ctx: StageContext, params: TextureInpaintParams) -> None:
    scene_id = ensure_scene(ctx)
    render = ctx.clients.render
    progress = ctx.state.setdefault("texture_inpaint", {}).setdefault(ctx.stage, {"next_view": 0, "written": {}})
    after_photo = f"texture_inpaint/{ctx.stage}/after_photo.npz"
    if params.photo_first and progress["next_view"] == 0 and "photo" not in progress["written"]:
        progress["written"]["photo"] = _photo_first(ctx, scene_id, params)
        if "reference" in ctx.state:
            rgb, seen = _reference_view(ctx, scene_id)
            buf = io.BytesIO()
            np.savez_compressed(buf, rgb=rgb, seen=seen)
            ctx.artifact(after_photo, buf.getvalue())
            progress["after_photo"] = after_photo
    total = ordered_view_count(params.cameras)
    embedding = None
    if params.identity_scale > 0:
        ref = ctx.state.get("reference") or {}
        if "embedding" not in ref:
            raise FailedPrecondition(f"{ctx.stage}: identity_scale > 0 needs the photo's identity embedding (run a "
                                     "preprocess stage with a face model that gives one)", reason="NO_EMBEDDING")
        embedding = np.asarray(ref["embedding"], np.float32)
    for k in range(progress["next_view"], total):
        ctx.check_cancelled()
        (view,) = views_for_step(params.cameras, k, 1, step_rng(ctx.seed, k), total)
        out = render.render(scene_id, [view.camera], ["rgb", "alpha", "normal_camera", "texture_seen"],
                            background=view.background).outputs
        unseen = ((out["alpha"][0, 0] > 0.5) & (out["texture_seen"][0, 0] < 0.5)).astype(np.float32)
        written = 0
        if unseen.mean() >= max(params.min_unseen, 1e-9):
            controls = [ControlInput(kind="normal", image=out["normal_camera"][0], scale=params.normal_control)] \
                if params.normal_control > 0 else []
            painted = ctx.clients.guidance.inpaint(InpaintRequest(
                images=out["rgb"].astype(np.float32), mask=unseen[None, None], cameras=[view.camera],
                conditions=Conditions(backbone=params.backbone, prompt=params.prompt or ctx.prompt,
                                      negative_prompt=params.negative_prompt, controls=controls,
                                      identity_embedding=embedding, identity_scale=params.identity_scale,
                                      identity_adapter=params.identity_adapter),
                strength=params.strength, num_steps=params.num_steps, guidance_scale=params.guidance_scale,
                seed=ctx.seed + 101 + k, background=np.asarray(view.background, np.float32))).images[0]
            written = render.back_project(scene_id, np.clip(painted, 0, 1), view.camera, mask=unseen,
                                          min_cosine=params.min_cosine, write="unseen").texels_written
        progress["written"][f"view_{k}"] = int(written)
        progress["next_view"] = k + 1
        ctx.checkpoint(render.get_state(scene_id))
        ctx.progress(k + 1, total, f"view {k}", unseen=float(unseen.mean()))
    section = {"views": total, "texels_written": progress["written"]}
    if progress.get("after_photo"):
        section["photo_kept"] = _photo_kept(ctx, scene_id, progress["after_photo"])
    ctx.add_report_section("texture_inpaint", section)
