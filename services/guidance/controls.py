"""Control pictures the server draws itself: facial landmarks as a line drawing for a landmark ControlNet.

68 iBUG points: each facial part a coloured anti-aliased polyline on black (HeadForge's own style).

478 MediaPipe points: the style CrucibleAI's ControlNetMediaPipeFace was trained on, as its annotation
code (laion_face_common.py / tool_generate_face_poses.py) draws with MediaPipe's drawing utilities:
the contour connections only (face oval, lips, eyes, eyebrows; no tessellation and no iris rims), as
plain (not anti-aliased) lines 2 px thick at the training size of 512, then each pupil (points 468 and
473) as a filled 4 x 4 px square, on black. Its colours are given in BGR and drawn into a BGR buffer
that is flipped to RGB at the end; in RGB they are: face oval (10, 200, 10); lips (10, 180, 10); the
subject's right eye (image left) (180, 200, 10) and brow (180, 220, 10), its pupil (250, 200, 10); the
subject's left eye (10, 200, 180) and brow (10, 220, 180), its pupil (10, 200, 250). Here the line width
and the pupil's half-width scale with the picture: max(1, round(min(H, W) / 256)) px.
Points are truncated to whole pixels as MediaPipe does; a line with an end outside the picture, or a
pupil outside it, is not drawn (MediaPipe skips such landmarks).
"""

from __future__ import annotations

import cv2
import numpy as np

from services.core import face_mesh as mp

# iBUG 68 groups: (first, last, closed)
_GROUPS = [(0, 16, False), (17, 21, False), (22, 26, False), (27, 30, False), (31, 35, False),
           (36, 41, True), (42, 47, True), (48, 59, True), (60, 67, True)]
_COLOURS = [(255, 255, 255), (255, 128, 0), (255, 128, 0), (0, 255, 255), (0, 255, 255),
            (0, 255, 0), (0, 255, 0), (255, 0, 255), (255, 0, 128)]

# MediaPipe-face ControlNet style, RGB, in the order its annotator draws the parts.
MEDIAPIPE_PARTS = (
    ((mp.FACE_OVAL,), (10, 200, 10)),
    (mp.LEFT_EYE, (10, 200, 180)),
    (mp.LEFT_EYEBROW, (10, 220, 180)),
    (mp.RIGHT_EYE, (180, 200, 10)),
    (mp.RIGHT_EYEBROW, (180, 220, 10)),
    (mp.LIPS, (10, 180, 10)),
)
MEDIAPIPE_PUPILS = ((mp.RIGHT_IRIS[0], (250, 200, 10)), (mp.LEFT_IRIS[0], (10, 200, 250)))


def stroke_px(height: int, width: int) -> int:
    """Line width of a drawing of height x width pixels (2 at 512)."""
    return max(1, round(min(height, width) / 256))


def draw_landmarks(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """(68, 2) iBUG or (478, 2) MediaPipe pixel points -> (3, H, W) float32 in [0, 1] on black."""
    if points.shape == (mp.N_POINTS, 2):
        return draw_mediapipe_face(points, height, width)
    if points.shape != (68, 2):
        raise ValueError(f"expected (68, 2) or (478, 2) landmarks, got {points.shape}")
    canvas = np.zeros((height, width, 3), np.uint8)
    thickness = stroke_px(height, width)
    pts = np.round(points).astype(np.int32)
    for (a, b, closed), colour in zip(_GROUPS, _COLOURS):
        cv2.polylines(canvas, [pts[a:b + 1].reshape(-1, 1, 2)], closed, colour, thickness, cv2.LINE_AA)
    return canvas.transpose(2, 0, 1).astype(np.float32) / 255.0


def draw_mediapipe_face(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """(478, 2) MediaPipe-order pixel points -> (3, H, W) float32 in [0, 1], the MediaPipe-face ControlNet's
    style (module docstring)."""
    if points.shape != (mp.N_POINTS, 2):
        raise ValueError(f"expected (478, 2) MediaPipe landmarks, got {points.shape}")
    canvas = np.zeros((height, width, 3), np.uint8)
    pts = np.floor(points).astype(np.int64)
    inside = (pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0) & (pts[:, 1] < height)
    thickness = stroke_px(height, width)
    for lines, colour in MEDIAPIPE_PARTS:
        for line in lines:
            for a, b in zip(line[:-1], line[1:]):
                if inside[a] and inside[b]:
                    cv2.line(canvas, tuple(map(int, pts[a])), tuple(map(int, pts[b])), colour, thickness)
    half = thickness
    for i, colour in MEDIAPIPE_PUPILS:
        if inside[i]:
            x, y = pts[i]
            canvas[max(0, y - half):y + half, max(0, x - half):x + half] = colour
    return canvas.transpose(2, 0, 1).astype(np.float32) / 255.0
