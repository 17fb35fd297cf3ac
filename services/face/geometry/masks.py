"""Face and head masks from landmarks and the photo itself, no segmentation weights needed.

Face: the landmark hull with the brows lifted to the hairline. Head: GrabCut (OpenCV's graph-cut
segmentation) seeded with the face as sure foreground, a head-shaped ellipse as probable foreground
and everything far from the head as background; the neck below the jaw line is cut away.
"""

from __future__ import annotations

import cv2
import numpy as np

from services.core.landmarks import JAW, LEFT_BROW, RIGHT_BROW

_WORK_SIZE = 200  # GrabCut runs on a crop around the head scaled to about this many pixels


def face_mask(lm68: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 (H, W) 0/255: jaw line, brows raised by a third of the eye-to-chin distance (forehead)."""
    up = _face_up(lm68)
    lift = 0.35 * np.linalg.norm(lm68[8] - lm68[27])
    brows = np.concatenate([lm68[LEFT_BROW], lm68[RIGHT_BROW]]) + up * lift
    hull = cv2.convexHull(np.concatenate([lm68[JAW], brows]).astype(np.float32))
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 255, lineType=cv2.LINE_8)
    return mask


def head_mask(image: np.ndarray, lm68: np.ndarray, face: np.ndarray | None = None) -> np.ndarray:
    """uint8 (H, W) 0/255 mask of the head with hair (no neck), by GrabCut around the face."""
    h, w = image.shape[:2]
    face = face_mask(lm68, (h, w)) if face is None else face
    up = _face_up(lm68)
    right = np.array([-up[1], up[0]]) * -1.0
    face_h = np.linalg.norm(lm68[8] - lm68[27]) * 1.35
    face_w = np.linalg.norm(lm68[16] - lm68[0])
    centre = (lm68[8] + lm68[27]) / 2 + up * face_h * 0.35
    # a turned head's cranium lies behind its face: the nose's offset from the jaw's middle (about 0 for a
    # frontal face, a third of the jaw's width at 40 degrees) moves the head ellipse the other way and widens it
    turn = float(np.dot(lm68[30] - (lm68[0] + lm68[16]) / 2, right)) / max(face_w, 1e-6)
    centre = centre - right * turn * face_w * 1.2
    axes = (face_w * (0.75 + abs(turn)), face_h * 0.95)
    angle = np.degrees(np.arctan2(right[1], right[0]))

    # Region of interest: generous box around the head ellipse.
    r = max(axes) * 1.6
    x0, y0 = int(max(0, centre[0] - r)), int(max(0, centre[1] - r))
    x1, y1 = int(min(w, centre[0] + r)), int(min(h, centre[1] + r))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return face
    scale = min(1.0, _WORK_SIZE / max(x1 - x0, y1 - y0))
    roi = cv2.resize(image[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    to_roi = lambda p: (np.asarray(p) - [x0, y0]) * scale  # noqa: E731

    seed = np.full(roi.shape[:2], cv2.GC_BGD, np.uint8)
    cv2.ellipse(seed, _pt(to_roi(centre)), _pt(np.array(axes) * scale * 1.25), angle, 0, 360, cv2.GC_PR_BGD, -1)
    cv2.ellipse(seed, _pt(to_roi(centre)), _pt(np.array(axes) * scale), angle, 0, 360, cv2.GC_PR_FGD, -1)
    # sure foreground: the face mask, less (for a turned face) a band up to 8% of the face's width along its
    # far half, where the far jaw points and the raised brows' hull reach past the silhouette; that band is
    # only probable foreground
    inner = face
    k = int(round(0.08 * face_w * min(1.0, abs(turn) / 0.3)))
    if k > 0:
        eroded = cv2.erode(face, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
        far = _half_plane((h, w), (lm68[0] + lm68[16]) / 2, np.sign(turn) * right)   # where the nose points
        inner = np.where(far, eroded, face)
    def to_roi_mask(m: np.ndarray) -> np.ndarray:
        m = cv2.resize(m[y0:y1, x0:x1], (roi.shape[1], roi.shape[0]), interpolation=cv2.INTER_NEAREST)
        return cv2.erode(m, np.ones((3, 3), np.uint8))

    face_roi = to_roi_mask(face)
    inner_roi = face_roi if inner is face else to_roi_mask(inner)
    seed[face_roi > 0] = cv2.GC_PR_FGD
    seed[inner_roi > 0] = cv2.GC_FGD
    below_jaw = _below_jaw(to_roi(lm68[JAW]), up, roi.shape[:2])
    seed[below_jaw] = cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
    try:
        cv2.grabCut(cv2.cvtColor(roi, cv2.COLOR_RGB2BGR), seed, None, bgd, fgd, 4, cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # degenerate colour models (e.g. a flat image): the face is the best we have
        return face
    fg = np.isin(seed, (cv2.GC_FGD, cv2.GC_PR_FGD)).astype(np.uint8) * 255
    fg = _component_touching(fg, face_roi)
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    out = np.zeros((h, w), np.uint8)
    out[y0:y1, x0:x1] = cv2.resize(fg, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR) > 127
    return np.maximum(out * 255, inner)


def _face_up(lm68: np.ndarray) -> np.ndarray:
    """Unit vector in image pixels from the chin toward the top of the head."""
    v = lm68[27] - lm68[8]
    return v / max(np.linalg.norm(v), 1e-6)


def _half_plane(shape: tuple[int, int], point: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """bool (H, W): the pixels on normal's side of the line through point (pixels) perpendicular to it."""
    along = np.array([-normal[1], normal[0]])
    far = float(np.hypot(*shape)) * 2
    quad = [point + along * far, point + along * far + normal * far, point - along * far + normal * far,
            point - along * far]
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(np.array(quad)).astype(np.int32)], 1)
    return m.astype(bool)


def _pt(p) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def _below_jaw(jaw: np.ndarray, up: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Pixels below the jaw polyline, i.e. neck and shoulders (and long hair below the ears)."""
    far = np.linalg.norm(shape) * 2
    poly = np.concatenate([jaw, [jaw[-1] - up * far], [jaw[0] - up * far]])
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(poly).astype(np.int32)], 1)
    return m.astype(bool)


def _component_touching(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    n, labels = cv2.connectedComponents((mask > 0).astype(np.uint8))
    if n <= 2:
        return mask
    keep = np.unique(labels[(seed > 0) & (labels > 0)])
    return np.isin(labels, keep).astype(np.uint8) * 255
