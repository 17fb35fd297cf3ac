"""preprocess: the photo intake (orchestrator/photo_intake.py) on the first photo -> a square reference view around the head (photo with a
white background outside the head mask, the mask, and the camera that sees the head exactly so)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from orchestrator.photo_intake import analyse_photo, prepare_image
from orchestrator.stages.context import StageContext, camera_to_json
from orchestrator.stages.params import PreprocessParams
from services.core.cameras import camera_for_box
from services.common.errors import InvalidArgument
from services.common.images import encode_png


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


def run(ctx: StageContext, params: PreprocessParams) -> None:
    if not ctx.images:
        raise InvalidArgument("images", "this recipe needs a photo")
    rgb, face, result, warnings = analyse_photo(ctx.clients.face, prepare_image(ctx.images[0]), params.face_index,
                                                min_face_px=params.min_face_px)
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
    face_json = {"box": [float(v) for v in face.box], "score": face.score,
                 "pose": {"yaw": face.pose.yaw, "pitch": face.pose.pitch, "roll": face.pose.roll},
                 "faces_in_photo": len(result.faces), "reference_camera": camera_to_json(camera)}
    ctx.artifact("preprocess/face.json", json.dumps(face_json, indent=1).encode())
    ctx.state["reference"] = {"image": "preprocess/reference.png", "mask": "preprocess/reference_mask.png",
                              "camera": camera_to_json(camera)}
    if face.embedding is not None:
        ctx.state["reference"]["embedding"] = [float(v) for v in face.embedding]
        ctx.state["reference"]["embedding_norm"] = float(face.embedding_norm)
    ctx.state.setdefault("warnings", []).extend(warnings)
