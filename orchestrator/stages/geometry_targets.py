"""geometry_targets: the reference view's normal and depth maps from a text-to-normal and a text-to-depth model
(Portrait3D-ID's ID-aware geometry supervision, eq. 7: HumanNorm's models with a Canny ControlNet fed the
reference's edges and the photo's identity through an identity adapter). Each map comes from the guidance
service's Generate on a normal / depth backbone at the reference view's size and camera, and is stored for the
reference_normal / reference_depth terms, inside the head mask (0 outside):
  geometry/reference_normal.npy  (3, H, W) float32 unit normals, OpenCV camera frame (render's "normal_camera")
  geometry/reference_depth.npy   (1, H, W) float32, affine in camera depth when the model's map is (the depth
                                 term is Pearson: scale and offset free): 1 / map for an "inverse_depth" model
                                 (exactly d / d_near for a true ratio), 1 - map for a "depth" model
with PNG previews beside them."""

from __future__ import annotations

import io

import numpy as np

from orchestrator.stages.context import StageContext, camera_from_json
from orchestrator.stages.params import GeometryTargetsParams
from services.common.errors import FailedPrecondition
from services.common.images import decode_png, encode_png
from services.guidance.types import Conditions, ControlInput, GenerateRequest

NORMAL, DEPTH = "geometry/reference_normal.npy", "geometry/reference_depth.npy"


def normal_target(picture: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A normal picture (3, H, W) in [0, 1] ((n + 1) / 2, OpenCV camera frame: guidance.proto) and the head mask
    (H, W) bool -> unit normals (3, H, W) float32, 0 outside the mask."""
    n = 2.0 * np.asarray(picture, np.float64) - 1.0
    n /= np.maximum(np.linalg.norm(n, axis=0, keepdims=True), 1e-6)
    return np.where(mask[None], n, 0.0).astype(np.float32)


def depth_target(picture: np.ndarray, mask: np.ndarray, convention: str = "inverse_depth") -> np.ndarray:
    """A Generate depth map (1, H, W) in [0, 1] (guidance.proto: 1 = nearest, 0 = background; affine in inverse
    depth or in depth as `convention` says) and the head mask (H, W) bool -> (1, H, W) float32 increasing with
    camera depth (d / d_near for a true inverse-depth ratio, 1 - map for a "depth" model) where both say head,
    0 elsewhere."""
    m = np.asarray(picture, np.float64)[0]
    on = mask & (m > 1e-3)
    value = 1.0 - m if convention == "depth" else 1.0 / np.maximum(m, 1e-3)
    return np.where(on, value, 0.0)[None].astype(np.float32)


def _save(ctx: StageContext, name: str, array: np.ndarray, preview: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array)
    ctx.artifact(name, buf.getvalue())
    ctx.artifact(name.replace(".npy", ".png"), encode_png((np.clip(preview, 0, 1) * 255 + 0.5).astype(np.uint8)))


def run(ctx: StageContext, params: GeometryTargetsParams) -> None:
    ref = ctx.state.get("reference")
    if ref is None:
        raise FailedPrecondition(f"{ctx.stage} needs the reference view: put a preprocess stage before it",
                                 reason="NO_PREPROCESS")
    photo = decode_png(ctx.read_artifact(ref["image"]))[..., :3]
    mask = decode_png(ctx.read_artifact(ref["mask"]))[..., 0] > 127
    camera = camera_from_json(ref["camera"])
    embedding = None
    if params.identity_scale > 0:
        if "embedding" not in ref:
            raise FailedPrecondition(f"{ctx.stage}: identity_scale > 0 needs the photo's identity embedding (run a "
                                     "preprocess stage with a face model that gives one)", reason="NO_EMBEDDING")
        embedding = np.asarray(ref["embedding"], np.float32)
    prompt = params.prompt or ctx.prompt
    controls = [ControlInput(kind="canny", name=params.canny_name, scale=params.canny_control,
                             image=photo.transpose(2, 0, 1).astype(np.float32) / 255)] if params.canny_control > 0 else []
    h, w = photo.shape[:2]
    report = {}
    for k, (kind, backbone) in enumerate((("normal", params.normal_backbone), ("depth", params.depth_backbone))):
        if not backbone:
            continue
        ctx.check_cancelled()
        result = ctx.clients.guidance.generate(GenerateRequest(
            conditions=Conditions(backbone=backbone, prompt=prompt, negative_prompt=params.negative_prompt,
                                  identity_embedding=embedding, identity_scale=params.identity_scale,
                                  identity_adapter=params.identity_adapter, controls=controls),
            num_images=1, width=w, height=h, num_steps=params.num_steps, guidance_scale=params.guidance_scale,
            seed=ctx.seed + 31 + k, cameras=[camera]))
        if result.output_kind != kind:
            raise FailedPrecondition(f"{ctx.stage}: backbone {backbone!r} makes {result.output_kind} maps, not {kind} "
                                     f"maps (its output_kind in the guidance model repository)", reason="WRONG_OUTPUT_KIND")
        picture = result.images[0]
        if kind == "normal":
            target = normal_target(picture, mask)
            _save(ctx, NORMAL, target, np.where(mask, (target + 1) / 2, 1.0).transpose(1, 2, 0))
        else:
            target = depth_target(picture, mask, result.depth_convention)
            _save(ctx, DEPTH, target, np.repeat(picture[0][..., None], 3, axis=-1))
        report[kind] = {"backbone": backbone, **({"depth_convention": result.depth_convention} if kind == "depth" else {}), "artifact": NORMAL if kind == "normal" else DEPTH, "seed": result.seed,
                        "coverage": round(float((np.abs(target).sum(0) > 0)[mask].mean()) if mask.any() else 0.0, 4)}
        ctx.progress(k + 1, 2, f"{kind} map")
    if not report:
        raise FailedPrecondition(f"{ctx.stage}: give normal_backbone or depth_backbone", reason="NO_BACKBONE")
    ctx.state["geometry_targets"] = {k: v["artifact"] for k, v in report.items()}
    ctx.add_report_section("geometry_targets", {"prompt": prompt, "canny_control": params.canny_control,
                                                "identity_scale": params.identity_scale, **report})
