"""evaluate: the papers' protocol views of the job's scene, identity against the photo (the face
service's configured model: dlib by default), a turntable GIF and a contact sheet, metrics.json."""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from orchestrator.stages.context import StageContext, camera_from_json, scaled_camera
from orchestrator.stages.params import EvaluateParams
from orchestrator.stages.scene import close_scene, ensure_scene
from services.common.cameras import orbit_camera
from services.common.images import decode_png, encode_png

# azimuth of each protocol view (degrees; +90 = camera on +X = the subject's left side)
PROTOCOL_VIEWS = {"left_frontal": 30.0, "left": 90.0, "right_frontal": -30.0, "right": -90.0, "rear": 180.0}
RADIUS, FOV = 4.0, 35.0   # the whole head (radius ~1) in frame


def _rgb8(rgb: np.ndarray) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return (np.clip(rgb.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8)


def _views(ctx: StageContext, scene_id: str, azimuths: list[float], size: int) -> list[np.ndarray]:
    out = []
    for k in range(0, len(azimuths), 8):
        cams = [orbit_camera(a, 0.0, RADIUS, fov_deg=FOV, width=size, height=size) for a in azimuths[k:k + 8]]
        out += [_rgb8(x) for x in ctx.clients.render.render(scene_id, cams, ["rgb"]).outputs["rgb"]]
    return out


def contact_sheet(named: dict[str, np.ndarray]) -> bytes:
    """Images side by side in one row, PNG."""
    images = list(named.values())
    h = max(i.shape[0] for i in images)
    row = np.concatenate([np.pad(i, ((0, h - i.shape[0]), (0, 0), (0, 0)), constant_values=255) for i in images], 1)
    return encode_png(row)


def gif(frames: list[np.ndarray], duration_ms: int = 80) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frames[0]).save(buf, format="GIF", save_all=True, append_images=[Image.fromarray(f) for f in
                                                                                    frames[1:]],
                                    duration=duration_ms, loop=0)
    return buf.getvalue()


def _reference_view_metrics(ctx: StageContext, scene_id: str, size: int) -> dict:
    """PSNR and SSIM between the render at the photo's camera and the photo, inside the head mask."""
    from skimage.metrics import structural_similarity

    ref = ctx.state["reference"]
    photo = decode_png(ctx.read_artifact(ref["image"]))[..., :3]
    mask = decode_png(ctx.read_artifact(ref["mask"]))[..., 0]
    photo = np.asarray(Image.fromarray(photo).resize((size, size), Image.BILINEAR), np.float32) / 255
    inside = np.asarray(Image.fromarray(mask).resize((size, size), Image.BILINEAR)) > 127
    camera = scaled_camera(camera_from_json(ref["camera"]), size)
    render = ctx.clients.render.render(scene_id, [camera], ["rgb"]).outputs["rgb"][0].transpose(1, 2, 0)
    ctx.artifact("eval/reference_view.png", encode_png(_rgb8(render.transpose(2, 0, 1))))
    mse = float(np.mean((render[inside] - photo[inside]) ** 2))
    _, ssim_map = structural_similarity(render, photo, channel_axis=2, data_range=1.0, full=True)
    return {"psnr_masked": round(-10 * np.log10(max(mse, 1e-12)), 2),
            "ssim_masked": round(float(ssim_map.mean(axis=2)[inside].mean()), 4)}


def run(ctx: StageContext, params: EvaluateParams) -> None:
    scene_id = ensure_scene(ctx)
    size = params.resolution
    names = list(PROTOCOL_VIEWS)
    views = dict(zip(names, _views(ctx, scene_id, [PROTOCOL_VIEWS[n] for n in names], size)))
    frontal = _views(ctx, scene_id, [0.0], size)[0]
    for name, image in views.items():
        ctx.artifact(f"eval/{name}.png", encode_png(image))
    metrics: dict = {"views": PROTOCOL_VIEWS, "identity": {}}
    if "reference" in ctx.state:
        metrics["reference_view"] = _reference_view_metrics(ctx, scene_id, size)
    if ctx.images:
        for name in ("left_frontal", "left", "right_frontal", "right"):
            try:
                r = ctx.clients.face.compare(ctx.images[0], encode_png(views[name]))
                metrics["identity"][name] = {"distance": r.distance, "same_person": r.same_person,
                                             "metric": r.metric}
            except Exception as e:  # noqa: BLE001 - no face in the render counts as 0 similarity (protocol)
                metrics["identity"][name] = {"distance": None, "same_person": False, "face_found": False,
                                             "note": str(e)[:200]}
        metrics["lpips"] = metrics["clip_i"] = "not available (no weights configured)"
    turntable = _views(ctx, scene_id, list(np.linspace(0, 360, params.turntable_frames, endpoint=False)), size)
    ctx.artifact("turntable.gif", gif(turntable))
    ctx.artifact("contact_sheet.png", contact_sheet({"frontal": frontal, **views}))
    metrics["warnings"] = ctx.state.get("warnings", [])
    ctx.artifact("metrics.json", json.dumps(metrics, indent=1).encode())
    close_scene(ctx)
