"""The one photo intake of every recipe: any image a user sends -> a working RGB picture, and the face to
build in it (face service analysis, the face index, a size check, small faces upscaled, pose warnings).
OpenCV is imported inside the functions: recipe validation reads MIN_FACE_PX without loading it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.images import DEFAULT_MAX_IMAGE_PIXELS, any_to_rgb8
from services.face.types import AnalyzeOptions

MAX_SIDE = 1024            # the working photo's longer side at most (a crop round the face of larger photos)
MAX_IMAGE_PIXELS = DEFAULT_MAX_IMAGE_PIXELS
HEAD_CROP = 4.0            # a large photo's working crop: this many face-box sides, centred on the face
MIN_FACE_PX = 40           # a face box shorter side below this is refused
GOOD_FACE_PX = 80          # faces smaller than this are upscaled (x4 at most) before use
MAX_YAW_DEG = 30.0         # beyond this one photo leaves the far side unconstrained: a warning
MAX_PITCH_DEG = 25.0


class NoFaceError(FailedPrecondition):
    pass


def decode_photo(image, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Any image a user sends (bytes, path, array) -> uint8 RGB (H, W, 3) at full resolution; more than
    max_pixels (width * height) is an InvalidArgument."""
    if isinstance(image, (str, os.PathLike)):
        image = Path(image).read_bytes()
    return any_to_rgb8(image, max_pixels=max_pixels)


def downscaled(rgb: np.ndarray, max_side: int = MAX_SIDE) -> tuple[np.ndarray, float]:
    """(rgb with its longer side at most max_side, the scale applied (<= 1))."""
    import cv2

    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb, 1.0
    s = max_side / max(h, w)
    return cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA), s


def prepare_image(image, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Any image a user sends -> uint8 RGB with the longer side at most MAX_SIDE (the whole photo, downscaled;
    intake_photo crops round the face first instead)."""
    return downscaled(decode_photo(image, max_pixels))[0]


# np.rot90 turns counter-clockwise k times; how a user would say it
TURNS = {1: "90 degrees counter-clockwise", 2: "upside down (180 degrees)", 3: "90 degrees clockwise"}


def rotation_with_a_face(face_client, rgb: np.ndarray) -> str | None:
    """How rgb (H, W, 3) uint8, in which no upright face was found, must be turned for the detector to find
    one (a TURNS value), or None when no turn helps. Three more detector calls: only on the failure path."""
    for k, words in TURNS.items():
        if face_client.analyze(np.ascontiguousarray(np.rot90(rgb, k)), AnalyzeOptions(skip_crop=True)).faces:
            return words
    return None


def _box_centre(box) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float64)


def _nearest_face(faces, point: np.ndarray):
    return min(faces, key=lambda f: float(np.linalg.norm(_box_centre(f.box) - point)))


def intake_photo(face_client, image, face_index: int = 0, *, max_pixels: int = MAX_IMAGE_PIXELS,
                 max_yaw: float = MAX_YAW_DEG, min_face_px: int = MIN_FACE_PX):
    """analyse_photo for a photo of any size: faces are found on the whole photo downscaled to MAX_SIDE; when
    the photo is larger than that, the chosen face is cut out of the FULL-resolution photo (a square of
    HEAD_CROP face-box sides round it, clipped to the photo) and only that crop is downscaled, so a 190 px
    face in a 4000 px photo keeps its 190 px. Returns analyse_photo's (rgb, face, analysis, warnings) for
    the working image (the crop: its camera is the crop's)."""
    full = decode_photo(image, max_pixels)
    small, s = downscaled(full)
    # a downscaled photo is only searched: the crop below is what gets upscaled if its face is small
    _, face, _, warnings = analyse_photo(face_client, small, face_index, max_yaw=max_yaw, upscale=s == 1.0,
                                         min_face_px=min(min_face_px, max(16, round(min_face_px * s))))
    if s == 1.0:
        return small, face, _, warnings
    box = np.asarray(face.box, np.float64) / s   # the face box in full-resolution pixels
    side = HEAD_CROP * max(box[2] - box[0], box[3] - box[1])
    cx, cy = _box_centre(box)
    H, W = full.shape[:2]
    x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    x1, y1 = int(min(W, cx + side / 2)), int(min(H, cy + side / 2))
    crop, cs = downscaled(np.ascontiguousarray(full[y0:y1, x0:x1]))
    centre = (np.array([cx, cy]) - [x0, y0]) * cs
    crop_rgb, crop_face, crop_res, crop_warnings = analyse_photo(face_client, crop, 0, max_yaw=max_yaw,
                                                                 min_face_px=min_face_px, near=centre)
    kept = [w for w in warnings if "faces found" in w]   # the other faces are outside the crop
    return crop_rgb, crop_face, crop_res, kept + crop_warnings


def analyse_photo(face_client, rgb: np.ndarray, face_index: int = 0, *, max_yaw: float = MAX_YAW_DEG,
                  min_face_px: int = MIN_FACE_PX, near: np.ndarray | None = None, upscale: bool = True):
    """(rgb, face, analysis, warnings): face `face_index` (0 = the largest) of rgb (H, W, 3) uint8, in a
    working image that may be upscaled (x4 at most) so that the face box side reaches GOOD_FACE_PX.
    warnings: several faces, an upscaled photo, yaw beyond max_yaw or pitch beyond MAX_PITCH_DEG degrees.
    Raises NoFaceError (NO_FACE) or FailedPrecondition (FACE_INDEX, FACE_TOO_SMALL below min_face_px)
    with a message a user can act on; InvalidArgument for a negative face_index. near: (x, y) px, choose the
    face nearest this point instead of by face_index (intake_photo's crop). upscale=False: no small-face
    upscaling."""
    import cv2

    if face_index < 0:
        raise InvalidArgument("face_index", f"must be >= 0, got {face_index}")
    warnings: list[str] = []
    opts = AnalyzeOptions(skip_crop=True)
    res = face_client.analyze(rgb, opts)
    if not res.faces and max(rgb.shape[:2]) <= 2048:   # small faces: let the detector look closer
        res = face_client.analyze(rgb, AnalyzeOptions(skip_crop=True, upsample=2))
    if not res.faces:
        turn = rotation_with_a_face(face_client, rgb)
        hint = (f" A face is found when the photo is turned {turn}: the photo is probably rotated (a missing "
                f"EXIF orientation?); rotate it upright and retry." if turn else
                " If the photo is rotated, turn it upright first.")
        raise NoFaceError(f"no face found in the photo ({rgb.shape[1]}x{rgb.shape[0]} px). HeadForge needs "
                          f"a roughly frontal, upright face at least {min_face_px} px tall.{hint}",
                          reason="FACE_ROTATED" if turn else "NO_FACE")
    if near is not None:
        nearest = _nearest_face(res.faces, np.asarray(near, np.float64))
        face_index = next(i for i, f in enumerate(res.faces) if f is nearest)
    elif face_index >= len(res.faces):
        raise FailedPrecondition(f"--face-index {face_index} asked for, but the photo has {len(res.faces)} face(s) "
                                 f"(0 = the largest)", reason="FACE_INDEX")
    if len(res.faces) > 1 and near is None:
        warnings.append(f"{len(res.faces)} faces found; built face {face_index} "
                        f"({'the largest' if face_index == 0 else 'by --face-index'})")
    face = res.faces[face_index]
    x0, y0, x1, y1 = face.box
    side = float(min(x1 - x0, y1 - y0))
    if side < min_face_px:
        raise FailedPrecondition(f"the face is {side:.0f} px; HeadForge needs at least {min_face_px} px "
                                 "(face box side). Use a closer or larger photo.", reason="FACE_TOO_SMALL")
    if side < GOOD_FACE_PX and upscale:
        factor = min(4.0, GOOD_FACE_PX / side, 2048 / max(rgb.shape[:2]))
        if factor > 1.05:
            h, w = rgb.shape[:2]
            big = cv2.resize(rgb, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_CUBIC)
            res2 = face_client.analyze(big, opts)
            if res2.faces:
                best = _nearest_face(res2.faces, _box_centre(face.box) * factor)
                warnings.append(f"small face ({side:.0f} px): the photo was upscaled x{factor:.2f} for the fit; "
                                "expect a soft texture")
                rgb, face, res = big, best, res2
    if abs(face.pose.yaw) > max_yaw:
        warnings.append(f"head yaw {face.pose.yaw:+.0f} deg is beyond the +-{max_yaw:.0f} deg one photo constrains "
                        "well: the far side of the face is not seen (the fast recipe mirrors it from the near side; "
                        "it may be distorted)")
    if abs(face.pose.pitch) > MAX_PITCH_DEG:
        warnings.append(f"head pitch {face.pose.pitch:+.0f} deg is beyond the +-{MAX_PITCH_DEG:.0f} deg one photo "
                        "constrains well")
    return rgb, face, res, warnings
