"""align_landmarks: the photo's 3D landmarks moved onto the job's scene (Portrait3D-ID, Appendix B.1;
orchestrator/landmark_alignment.py). The scene (e.g. the inverted 3D-GAN's mesh or field) is rendered at the
reference camera; the rays through seven keypoints' 2D detections meet its surface; the similarity transform
from the face model's seven 3D keypoints to those hits moves all 68 (and, when the face model gave them, all
478) landmarks. Later stages' landmark controls project the aligned landmarks (align/landmarks_3d.npz); the
report's landmark_alignment section gives the transform and its residual."""

from __future__ import annotations

import io

import numpy as np

from orchestrator.landmark_alignment import align_landmarks, pixels_in
from orchestrator.stages.context import StageContext, camera_from_json
from orchestrator.stages.params import AlignLandmarksParams
from orchestrator.stages.preprocess import load_photo_face
from orchestrator.stages.scene import ensure_scene
from services.common.errors import FailedPrecondition
from services.core.cameras import camera_for_box

ALIGNED = "align/landmarks_3d.npz"


def aligned_landmarks(ctx: StageContext) -> dict[str, np.ndarray] | None:
    """{"landmarks_3d_68": (68, 3)[, "landmarks_3d_478": (478, 3)]} world units, or None before this stage."""
    name = ctx.state.get("aligned_landmarks")
    if name is None:
        return None
    arrays = np.load(io.BytesIO(ctx.read_artifact(name)))
    return {k: arrays[k] for k in arrays.files}


def run(ctx: StageContext, params: AlignLandmarksParams) -> None:
    scene_id = ensure_scene(ctx)
    face = load_photo_face(ctx)
    ref = ctx.state.get("reference")
    if ref is None or "camera" not in ref:
        raise FailedPrecondition(f"{ctx.stage} needs the reference view: put a preprocess stage before it",
                                 reason="NO_PREPROCESS")
    full = camera_from_json(ref["camera"])
    camera = camera_for_box(full, (0, 0, full.width, full.height), params.resolution)
    out = ctx.clients.render.render(scene_id, [camera], ["depth", "alpha"]).outputs
    keys = list(params.keypoints)
    try:
        pixels = pixels_in(face.landmarks_68[keys], face.camera, camera)
        fit = align_landmarks(face.landmarks_3d_68[keys], pixels, out["depth"][0, 0], out["alpha"][0, 0], camera)
    except ValueError as e:
        raise FailedPrecondition(f"{ctx.stage}: {e} (is the scene's head in front of the reference camera?)",
                                 reason="LANDMARKS_MISS_SURFACE") from None
    arrays = {"landmarks_3d_68": fit.apply(face.landmarks_3d_68)}
    if face.landmarks_3d_478 is not None:
        arrays["landmarks_3d_478"] = fit.apply(face.landmarks_3d_478)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    ctx.artifact(ALIGNED, buf.getvalue())
    ctx.state["aligned_landmarks"] = ALIGNED
    hit = int((~np.isnan(fit.hits).any(1)).sum())
    if fit.residual > params.max_residual:
        ctx.warn(f"{ctx.stage}: the keypoints fit the surface to {fit.residual:.3f} world units RMS "
                 f"(> {params.max_residual}): the face model's shape and the scene's disagree")
    ctx.add_report_section("landmark_alignment", {
        "keypoints": keys, "rays_hit": hit, "scale": round(fit.scale, 5), "rotation_deg": round(fit.rotation_deg(), 3),
        "translation": [round(float(v), 5) for v in fit.translation], "residual_rms": round(fit.residual, 5),
        "points": sorted(arrays), "units": "world"})
    ctx.progress(1, 1, "aligned", residual=fit.residual)
