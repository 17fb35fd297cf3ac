"""Control pictures the server draws itself: 68 iBUG landmarks as a line drawing for a landmark ControlNet."""

from __future__ import annotations

import cv2
import numpy as np

# iBUG 68 groups: (first, last, closed)
_GROUPS = [(0, 16, False), (17, 21, False), (22, 26, False), (27, 30, False), (31, 35, False),
           (36, 41, True), (42, 47, True), (48, 59, True), (60, 67, True)]
_COLOURS = [(255, 255, 255), (255, 128, 0), (255, 128, 0), (0, 255, 255), (0, 255, 255),
            (0, 255, 0), (0, 255, 0), (255, 0, 255), (255, 0, 128)]


def draw_landmarks(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """(68, 2) pixel points -> (3, H, W) float32 in [0, 1]: each facial part a coloured polyline on black."""
    if points.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {points.shape}")
    canvas = np.zeros((height, width, 3), np.uint8)
    thickness = max(1, round(min(height, width) / 256))
    pts = np.round(points).astype(np.int32)
    for (a, b, closed), colour in zip(_GROUPS, _COLOURS):
        cv2.polylines(canvas, [pts[a:b + 1].reshape(-1, 1, 2)], closed, colour, thickness, cv2.LINE_AA)
    return canvas.transpose(2, 0, 1).astype(np.float32) / 255.0
