"""invert: the photo's face -> a 3D-GAN latent (inversion service Invert: W or W+, then optional PTI) -> the
job's scene in the render service: the generator's feature field (ExportField -> a "triplane" / "trigrid" /
"pyramid_trigrid" scene, the generator's kind) or its surface (ExtractMesh -> a "mesh" scene with vertex
colours). Needs preprocess before it: the working photo is analysed again for the aligned crop and crop
camera in the generator's crop style (preprocess asks for no crop), and the face nearest preprocess's
landmarks is inverted. Writes invert/crop.png, invert/reconstruction.png and invert/latent.npz; adds the
inversion section of report.json (settings, loss history, final metrics, the generator) and the
generator's model record; with optimize_camera, the section's "camera" holds the optimised crop camera
(world units) and its yaw/pitch/roll offsets."""

from __future__ import annotations

import io
import math

import numpy as np

from orchestrator.stages.context import JobCancelled, StageContext
from orchestrator.stages.preprocess import load_photo_face
from orchestrator.stages.params import InvertParams
from orchestrator.stages.generators import find_generator, record_generator
from orchestrator.stages.scene import create_job_scene
from services.common.errors import FailedPrecondition, HeadForgeError
from services.common.images import encode_png
from services.face.types import AnalyzeOptions
from services.inversion.types import Cancelled, GanCamera, InvertSettings


def _settings(params: InvertParams, seed: int) -> InvertSettings:
    names = ("latent_space", "steps", "lr", "lr_rampup", "lr_rampdown", "w_noise", "w_noise_ramp",
             "noise_regularization", "l2_weight", "lpips_weight", "lpips_resolution", "pti", "pti_steps", "pti_lr",
             "pti_l2_weight", "pti_lpips_weight", "optimize_camera", "camera_lr", "progress_every")
    # the service draws a random seed for 0; the job's seed keeps a rerun identical
    return InvertSettings(**{n: getattr(params, n) for n in names}, seed=abs(seed) + 1)


def _crop_face(ctx: StageContext, style: str, crop_size: int, with_mask: bool):
    """The face of the working photo nearest preprocess's landmarks, analysed with an aligned crop."""
    photo = load_photo_face(ctx)
    centre = photo.landmarks_68.mean(0)
    opts = dict(crop_style=style, crop_size=crop_size, skip_embedding=True, skip_masks=not with_mask)
    faces = ctx.clients.face.analyze(photo.rgb, AnalyzeOptions(**opts)).faces
    if not faces:   # preprocess may have needed the detector's closer look
        faces = ctx.clients.face.analyze(photo.rgb, AnalyzeOptions(**opts, upsample=2)).faces
    extent = float(np.ptp(photo.landmarks_68, axis=0).max())
    best = min(faces, key=lambda f: float(np.linalg.norm(f.landmarks_68.mean(0) - centre)), default=None)
    if best is None or np.linalg.norm(best.landmarks_68.mean(0) - centre) > 0.5 * extent:
        raise FailedPrecondition(f"{ctx.stage}: the face preprocess chose is not found again in the working photo",
                                 reason="NO_FACE")
    return best


def _reference_crop(ctx: StageContext):
    """(picture (S, S, 3) uint8, its world camera, head mask (S, S) uint8) of preprocess's reference view."""
    from orchestrator.stages.context import camera_from_json
    from services.common.images import decode_png

    ref = ctx.state.get("reference")
    if ref is None:
        raise FailedPrecondition(f"{ctx.stage} with crop reference needs a preprocess stage before it",
                                 reason="NO_REFERENCE")
    picture = decode_png(ctx.read_artifact(ref["image"]))[..., :3]
    if picture.shape[0] != picture.shape[1]:
        raise FailedPrecondition(f"{ctx.stage}: crop reference inverts a square reference view, got "
                                 f"{picture.shape[1]}x{picture.shape[0]}", reason="REFERENCE_NOT_SQUARE")
    mask = decode_png(ctx.read_artifact(ref["mask"]))[..., 0]
    return picture, GanCamera.world(camera_from_json(ref["camera"])), mask


def _finite(v: float) -> float | None:
    return round(float(v), 6) if math.isfinite(v) else None


def _metrics(m) -> dict | None:
    return None if m is None else {"mse": _finite(m.mse), "psnr_db": _finite(m.psnr), "lpips": _finite(m.lpips)}


def _camera(result) -> dict | None:
    """The optimised camera for report.json (None without optimize_camera)."""
    if result.camera is None or result.camera_offsets is None:
        return None
    c = result.camera
    return {"offsets_deg": {k: _finite(v) for k, v in result.camera_offsets.as_dict().items()},
            "world_to_camera": [_finite(v) for v in np.asarray(c.world_to_camera, np.float64).reshape(-1)],
            "fx": _finite(c.K[0, 0]), "fy": _finite(c.K[1, 1]), "cx": _finite(c.K[0, 2]), "cy": _finite(c.K[1, 2]),
            "width": int(c.width), "height": int(c.height),
            "position": [_finite(v) for v in c.position], "units": "world"}


def run(ctx: StageContext, params: InvertParams) -> None:
    inversion = ctx.clients.inversion
    desc, info = find_generator(ctx, params.generator)
    if params.crop == "reference":
        crop, camera, mask = _reference_crop(ctx)
    else:
        face = _crop_face(ctx, info.crop_style or "head", params.crop_size, params.use_mask)
        crop, camera, mask = face.aligned_crop, GanCamera.generator(face.crop_camera), face.crop_head_mask
    ctx.artifact("invert/crop.png", encode_png(crop))

    total = params.steps + (params.pti_steps if params.pti else 0)
    history: list[dict] = []

    def progress(ev) -> None:
        step = ev.step + (params.steps if ev.stage == "pti" else 0)
        history.append({"stage": ev.stage, "step": ev.step,
                        **{k: _finite(v) for k, v in ev.scalars.items()
                           if k in ("loss", "mse", "psnr", "lpips", "yaw_deg", "pitch_deg", "roll_deg")}})
        ctx.progress(step, total, ev.stage, **{k: v for k, v in ev.scalars.items() if math.isfinite(v)})

    try:
        result = inversion.invert(crop, camera, generator=info.name, mask=mask if params.use_mask else None,
                                  settings=_settings(params, ctx.seed), on_progress=progress,
                                  cancelled=ctx.is_cancelled)
    except Cancelled:
        raise JobCancelled(ctx.job_id) from None
    try:
        ctx.artifact("invert/reconstruction.png", encode_png(result.reconstruction))
        buf = io.BytesIO()
        np.savez(buf, w=result.latent, generator=np.array(info.name))
        ctx.artifact("invert/latent.npz", buf.getvalue())
        ctx.check_cancelled()
        output: dict = {"kind": "mesh" if params.output == "mesh" else info.kind}
        if params.output == "mesh":
            mesh = inversion.extract_mesh(result.session_id, params.mesh_resolution, params.density_threshold,
                                          largest_component_only=True, max_faces=params.max_faces,
                                          vertex_colors=True, fmt="ply")
            asset = (mesh.data, "ply")
            output.update(vertices=mesh.num_vertices, faces=mesh.num_faces, resolution=params.mesh_resolution)
        else:
            asset = (inversion.export_field(result.session_id), "npz")
        output["asset_bytes"] = len(asset[0])
    finally:
        try:
            inversion.close_session(result.session_id)
        except HeadForgeError:   # expired or the service restarted: nothing left to free
            pass
    create_job_scene(ctx, output["kind"], asset=asset, optimizer=params.optimizer_params())

    record = record_generator(ctx, info)
    ctx.add_report_section("inversion", {
        "generator": {"name": info.name, "kind": info.kind, "crop_style": info.crop_style or "head",
                      "weights_format": info.weights_format, "sha256": record.sha256},
        "latent_space": params.latent_space, "steps": params.steps, "pti": params.pti,
        "pti_steps": params.pti_steps if params.pti else 0, "mask": params.use_mask, "lpips": desc.lpips or "none",
        "optimize_camera": params.optimize_camera,
        **({"camera_lr": params.camera_lr, "camera": _camera(result)} if params.optimize_camera else {}),
        "final": {"latent": _metrics(result.latent_metrics), "pti": _metrics(result.pti_metrics)},
        "steps_per_s": round(result.steps_per_s, 2), "pti_steps_per_s": round(result.pti_steps_per_s, 2),
        "history": history, "output": output})
