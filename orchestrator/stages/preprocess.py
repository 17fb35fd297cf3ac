"""preprocess: the photo intake (orchestrator/photo_intake.py) on the first photo -> the working photo and
its analysed face (preprocess/photo.png, preprocess/face.npz: landmarks and masks, for later stages through
load_photo_face), and the reference view the loss terms and the evaluation compare with: a square view
around the head (white outside the head mask) or the whole photo, with its mask and camera. With several
photos of the person the identity embedding combines them (_combined_identity), some held out for the
evaluation. Adds the input, face, face-model and (several photos) identity sections of report.json."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from orchestrator.head_template.fit import head_box
from orchestrator.photo_intake import intake_photo
from orchestrator.stages.context import StageContext, camera_from_json, camera_to_json
from orchestrator.stages.params import PreprocessParams
from services.core.cameras import PinholeCamera, camera_for_box, orbit_camera
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.images import decode_png, encode_png


def _square_box(box: np.ndarray, width: int, height: int) -> tuple[int, int, int]:
    """A square around the whole head from a face box: 2.2x the box, centred a little above it."""
    x0, y0, x1, y1 = box
    side = 2.2 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - 0.15 * (y1 - y0)
    return int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(side))


def _crop(array: np.ndarray, left: int, top: int, side: int, fill) -> np.ndarray:
    """array (H, W[, C]) -> (side, side[, C]), padding with `fill` outside the picture."""
    out = np.full((side, side, *array.shape[2:]), fill, dtype=array.dtype)
    h, w = array.shape[:2]
    sx0, sy0, sx1, sy1 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = array[sy0:sy1, sx0:sx1]
    return out


@dataclass
class PhotoFace:
    """The analysed face of the working photo, as preprocess stored it (pixel coordinates of `rgb`)."""

    rgb: np.ndarray              # (H, W, 3) uint8, the working photo (photo_intake.intake_photo)
    camera: PinholeCamera        # the photo's camera, head frame = world
    landmarks_68: np.ndarray     # (68, 2) px
    landmarks_3d_68: np.ndarray  # (68, 3) head frame
    head_mask: np.ndarray        # (H, W) uint8 0/255
    face_mask: np.ndarray        # (H, W) uint8 0/255
    landmarks_3d_478: np.ndarray | None = None  # (478, 3) head frame, MediaPipe order (None: a 68-point detector)


def load_photo_face(ctx: StageContext) -> PhotoFace:
    """What preprocess stored about the photo's face (FailedPrecondition when the recipe has no preprocess)."""
    if "photo" not in ctx.state:
        raise FailedPrecondition(f"{ctx.stage} needs the photo's face: put a preprocess stage before it",
                                 reason="NO_PREPROCESS")
    arrays = np.load(io.BytesIO(ctx.read_artifact(ctx.state["photo"]["face"])))
    return PhotoFace(rgb=decode_png(ctx.read_artifact(ctx.state["photo"]["image"]))[..., :3],
                     camera=camera_from_json(ctx.state["photo"]["camera"]),
                     landmarks_68=arrays["landmarks_68"], landmarks_3d_68=arrays["landmarks_3d_68"],
                     head_mask=arrays["head_mask"], face_mask=arrays["face_mask"],
                     landmarks_3d_478=arrays["landmarks_3d_478"] if "landmarks_3d_478" in arrays.files else None)


def _npz(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _given_reference(ctx: StageContext, raw: bytes, params: PreprocessParams) -> None:
    """The picture at a known camera, no face analysis: the mask from its alpha, else its non-white pixels."""
    from PIL import Image as PILImage

    with PILImage.open(io.BytesIO(raw)) as im:
        rgba = np.asarray(im.convert("RGBA"))
    rgb = rgba[..., :3]
    has_alpha = bool((rgba[..., 3] < 255).any())
    mask = np.where(rgba[..., 3] > 127 if has_alpha else (rgb < 250).any(-1), 255, 0).astype(np.uint8)
    c = params.camera
    h, w = rgb.shape[:2]
    if h != w:
        raise InvalidArgument("images[0]", f"a given reference must be square, got {w}x{h}")
    camera = orbit_camera(c.azimuth, c.elevation, c.radius, fov_deg=c.fov, width=w, height=h, target=c.target)
    photo = np.where(mask[..., None] > 127, rgb, 255).astype(np.uint8)
    ctx.artifact("preprocess/reference.png", encode_png(photo))
    ctx.artifact("preprocess/reference_mask.png", encode_png(np.repeat(mask[..., None], 3, axis=-1)))
    ctx.state["reference"] = {"image": "preprocess/reference.png", "mask": "preprocess/reference_mask.png",
                              "camera": camera_to_json(camera)}
    ctx.add_report_section("input", {"source": ctx.image_names[0] if ctx.image_names else "",
                                     "sha256": hashlib.sha256(raw).hexdigest(), "working_width": w,
                                     "working_height": h, "camera": c.model_dump(), "mask": "alpha" if has_alpha
                                     else "non-white pixels"})


def _photo_embedding(ctx: StageContext, params: PreprocessParams, i: int) -> tuple[np.ndarray, float]:
    """The largest face's (unit embedding (D,), its norm) in photo images[i]; NO_FACE naming the photo."""
    try:
        _, face, _, _ = intake_photo(ctx.clients.face, ctx.images[i], 0, max_pixels=params.max_image_pixels,
                                     min_face_px=params.min_face_px)
    except FailedPrecondition as e:   # which of the photos it was
        raise FailedPrecondition(f"images[{i}]: {e.message}", reason=e.reason) from None
    if face.embedding is None:
        raise FailedPrecondition(f"images[{i}]: the face service gave no identity embedding", reason="NO_EMBEDDING")
    return np.asarray(face.embedding, np.float64), float(face.embedding_norm)


def _combined_identity(ctx: StageContext, params: PreprocessParams, face) -> None:
    """The job's identity from its photos: images[0] (the reference) and every further photo up to the last
    holdout_photos. Combined as the mean of the unit embeddings, re-normalised to unit length (the recognisers
    compare by cosine, and IP-Adapter FaceID takes a unit ArcFace embedding), with the mean of their norms;
    each photo's cosine to the combination goes to the report, the held-out photos' embeddings to the state
    (for the evaluation). One photo: its embedding as it is."""
    n = len(ctx.images)
    if params.holdout_photos >= max(n, 1):
        raise InvalidArgument("holdout_photos", f"{params.holdout_photos} held out of {n} photo(s): at least one "
                              "photo must give the identity")
    used = [(np.asarray(face.embedding, np.float64), float(face.embedding_norm))]
    used += [_photo_embedding(ctx, params, i) for i in range(1, n - params.holdout_photos)]
    held = [_photo_embedding(ctx, params, i) for i in range(n - params.holdout_photos, n)] if n > 1 else []
    units = np.stack([e for e, _ in used])
    combined = units.mean(axis=0)
    combined /= max(np.linalg.norm(combined), 1e-12)
    ref = ctx.state["reference"]
    ref["embedding"] = [float(v) for v in combined]
    ref["embedding_norm"] = float(np.mean([nrm for _, nrm in used]))
    if held:
        ref["held_out_embeddings"] = [[float(v) for v in e] for e, _ in held]
    if n > 1:
        ctx.add_report_section("identity", {
            "photos": len(used), "held_out": len(held), "combined": "mean of the unit embeddings, re-normalised",
            "cosine_to_combined": [round(float(e @ combined), 4) for e, _ in used],
            "held_out_cosine_to_combined": [round(float(e @ combined), 4) for e, _ in held]})


def run(ctx: StageContext, params: PreprocessParams) -> None:
    if ctx.images:
        raw = ctx.images[0]
    elif "generated" in ctx.state:   # a generate stage's chosen picture
        raw = ctx.read_artifact(ctx.state["generated"]["image"])
    else:
        raise InvalidArgument("images", "this recipe needs a photo")
    if params.reference == "given":
        _given_reference(ctx, raw, params)
        return
    rgb, face, result, warnings = intake_photo(ctx.clients.face, raw, params.face_index,
                                               max_pixels=params.max_image_pixels, min_face_px=params.min_face_px)
    ctx.artifact("preprocess/photo.png", encode_png(rgb))
    dense = {} if face.landmarks_3d_478 is None else {"landmarks_478": face.landmarks_478,
                                                      "landmarks_3d_478": face.landmarks_3d_478}
    ctx.artifact("preprocess/face.npz", _npz(landmarks_68=face.landmarks_68, landmarks_3d_68=face.landmarks_3d_68,
                                             head_mask=face.head_mask, face_mask=face.face_mask, **dense))
    ctx.state["photo"] = {"image": "preprocess/photo.png", "face": "preprocess/face.npz",
                          "camera": camera_to_json(face.camera), "landmarks": 68 if face.landmarks_3d_478 is None else 478}
    if params.reference == "photo":
        photo, mask, camera = rgb, face.head_mask, face.camera
        ctx.state["reference"] = {"image": "preprocess/photo.png", "head_box": list(head_box(face.head_mask,
                                                                                              face.landmarks_68))}
        ctx.artifact("preprocess/reference_mask.png", encode_png(np.repeat(mask[..., None], 3, axis=-1)))
    else:
        left, top, side = _square_box(face.box, rgb.shape[1], rgb.shape[0])
        mask = _crop(face.head_mask, left, top, side, 0)
        photo = _crop(rgb, left, top, side, 255)
        photo = np.where(mask[..., None] > 127, photo, 255).astype(np.uint8)
        size = params.crop_size
        photo = np.asarray(Image.fromarray(photo).resize((size, size), Image.LANCZOS))
        mask = np.asarray(Image.fromarray(mask).resize((size, size), Image.BILINEAR))
        camera = camera_for_box(face.camera, (left, top, left + side, top + side), size)
        ctx.artifact("preprocess/reference.png", encode_png(photo))
        ctx.artifact("preprocess/reference_mask.png", encode_png(np.repeat(mask[..., None], 3, axis=-1)))
        ctx.state["reference"] = {"image": "preprocess/reference.png"}
    face_json = {"box": [float(v) for v in face.box], "score": face.score,
                 "pose": {"yaw": face.pose.yaw, "pitch": face.pose.pitch, "roll": face.pose.roll},
                 "faces_in_photo": len(result.faces), "reference_camera": camera_to_json(camera)}
    ctx.artifact("preprocess/face.json", json.dumps(face_json, indent=1).encode())
    ctx.state["reference"].update(mask="preprocess/reference_mask.png", camera=camera_to_json(camera))
    if face.embedding is not None:
        _combined_identity(ctx, params, face)
    for w in warnings:
        ctx.warn(w)
    name = ctx.image_names[0] if ctx.image_names else ""
    ctx.add_report_section("input", {"source": name, "sha256": hashlib.sha256(raw).hexdigest(),
                                     "working_width": int(rgb.shape[1]), "working_height": int(rgb.shape[0])})
    ctx.add_report_section("face", {"index": params.face_index, "faces_found": len(result.faces),
                                    "box": [round(float(v), 1) for v in face.box], "score": round(float(face.score), 3),
                                    "yaw_deg": round(face.pose.yaw, 1), "pitch_deg": round(face.pose.pitch, 1),
                                    "roll_deg": round(face.pose.roll, 1),
                                    "landmarks": 68 if face.landmarks_3d_478 is None else 478})
    ctx.add_report_section("models", {"face": [asdict(m) for m in result.models]})
