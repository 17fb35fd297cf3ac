"""MediaPipe's 468-point face mesh (face_landmark.tflite) refined by its iris model (iris_landmark.tflite):
478 points in MediaPipe order, as MediaPipe's face-landmark-with-iris graphs compute them.

Each model sees a square, rotated crop (a `Roi`) of the image: the mesh a crop 1.5x the face's size
turned so that the eyes are level (192 px, values in [0, 1]); each eye a crop 2.3x the eye-corner
distance (64 px, [0, 1]; the image-right eye mirrored, as the model was trained on one eye). The mesh
is run again on the crop its own answer defines (MediaPipe's tracking ROI), until that crop stops
moving or MAX_PASSES: a small face's detection gives a poor eye-line angle, and the mesh under-reports
the roll it sees in a turned crop, so each pass about halves the error. The iris model's eyelid
contour replaces the mesh's 16 eyelid points (x and y), and adds the iris centre and rim per eye.

Outputs are x, y in image pixels and z in the same pixel scale as x (MediaPipe: "z uses roughly the same
scale as x"), relative to the face's centre, smaller = nearer the camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from services.core.face_mesh import LEFT_EYE, RIGHT_EYE, N_MESH
from services.face.backends.tflite_models import TFLiteModel

FACE_ROI_SCALE = 1.5
MAX_PASSES = 5
NO_FACE = 0.1   # below this face-presence score the crop holds no face: its points are not re-cropped
EYE_ROI_SCALE = 2.3
# The iris model's first 16 contour points: the lower lid from corner to corner, then the upper lid
# without its corners; as mesh indices per eye (the model's contour order is MediaPipe's).
_LIDS = {side: lids[0] + lids[1][1:-1] for side, lids in (("right", RIGHT_EYE), ("left", LEFT_EYE))}


@dataclass
class Roi:
    """A square region of the image: centre (pixels), side (pixels), rotation (radians, the angle of the
    region's x axis in the image, y down)."""

    cx: float
    cy: float
    size: float
    angle: float

    def crop_to_image(self, n: int) -> np.ndarray:
        """(2, 3) affine: pixel (u, v) of an n x n crop -> image pixel."""
        c, s, k = math.cos(self.angle), math.sin(self.angle), self.size / n
        A = np.array([[c * k, -s * k], [s * k, c * k]])
        return np.c_[A, np.array([self.cx, self.cy]) - A @ [n / 2, n / 2]]

    def crop(self, image: np.ndarray, n: int) -> np.ndarray:
        """uint8 (H, W, 3) -> float32 (n, n, 3) in [0, 1], zero outside the image."""
        out = cv2.warpAffine(image, self.crop_to_image(n), (n, n), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return out.astype(np.float32) / 255.0

    def to_image(self, pts: np.ndarray, n: int) -> np.ndarray:
        """(P, 3) crop pixels (x, y, z with z in x's scale) -> image pixels, z scaled like x."""
        M = self.crop_to_image(n)
        xy = pts[:, :2] @ M[:, :2].T + M[:, 2]
        return np.c_[xy, pts[:, 2] * self.size / n]


def _same_roi(a: Roi, b: Roi) -> bool:
    """Whether two crops differ by under 1 deg of rotation and 1% of their size in place and size."""
    turn = abs((a.angle - b.angle + math.pi) % (2 * math.pi) - math.pi)
    return (turn < math.radians(1.0) and math.hypot(a.cx - b.cx, a.cy - b.cy) < 0.01 * b.size
            and abs(a.size - b.size) < 0.01 * b.size)


def roi_from_points(a: np.ndarray, b: np.ndarray, box: np.ndarray, scale: float) -> Roi:
    """A square ROI around box (x0, y0, x1, y1) scaled by `scale` on its longer side, turned so that
    point a -> b runs along its x axis."""
    angle = math.atan2(b[1] - a[1], b[0] - a[0])
    return Roi((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, max(box[2] - box[0], box[3] - box[1]) * scale, angle)


class FaceMesh:
    def __init__(self):
        self.mesh = TFLiteModel("face_landmark.tflite", "landmarks_478")
        self.iris = TFLiteModel("iris_landmark.tflite", "iris")

    def landmarks(self, image: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        """(478, 3) points (see the module docstring) of the face in `roi`, and the mesh model's face
        presence score (0..1) on its final crop."""
        pts, presence = self._mesh(image, roi)
        for _ in range(MAX_PASSES - 1):
            nxt = self._tracking_roi(pts)
            if _same_roi(nxt, roi) or presence < NO_FACE:
                break
            roi = nxt
            pts, presence = self._mesh(image, roi)
        return self._with_irises(image, pts), presence

    def _mesh(self, image: np.ndarray, roi: Roi) -> tuple[np.ndarray, float]:
        n = self.mesh.input_size
        raw, flag = self.mesh(roi.crop(image, n))
        presence = 1.0 / (1.0 + math.exp(-float(np.clip(flag.reshape(-1)[-1], -80, 80))))
        return roi.to_image(raw.reshape(-1, 3)[:N_MESH].astype(np.float64), n), presence

    @staticmethod
    def _tracking_roi(pts: np.ndarray) -> Roi:
        """MediaPipe's ROI from a mesh: eyes' outer corners (33 -> 263) level, the points' extent in that
        rotated frame, 1.5x."""
        a, b = pts[33, :2], pts[263, :2]
        angle = math.atan2(b[1] - a[1], b[0] - a[0])
        c, s = math.cos(angle), math.sin(angle)
        local = pts[:, :2] @ np.array([[c, -s], [s, c]])     # image -> rotated frame
        lo, hi = local.min(0), local.max(0)
        centre = np.array([[c, -s], [s, c]]) @ ((lo + hi) / 2)
        return Roi(float(centre[0]), float(centre[1]), float((hi - lo).max()) * FACE_ROI_SCALE, angle)

    def _with_irises(self, image: np.ndarray, mesh: np.ndarray) -> np.ndarray:
        out = [mesh.copy()]
        for side, (start, end), mirrored in (("right", (33, 133), False), ("left", (362, 263), True)):
            a, b = mesh[start, :2], mesh[end, :2]
            box = np.r_[np.minimum(a, b), np.maximum(a, b)]
            lids, iris = self._iris(image, roi_from_points(a, b, box, EYE_ROI_SCALE), mirrored)
            idx = list(_LIDS[side])
            # the eye model's depth is relative to its own crop: keep the mesh's depth for the lids and
            # place the iris at the lids' mean mesh depth plus the model's offset from its lids
            iris[:, 2] += mesh[idx, 2].mean() - lids[:, 2].mean()
            out[0][idx, :2] = lids[:, :2]
            out.append(iris)
        return np.concatenate(out)

    def _iris(self, image: np.ndarray, roi: Roi, mirrored: bool) -> tuple[np.ndarray, np.ndarray]:
        n = self.iris.input_size
        x = roi.crop(image, n)
        if mirrored:
            x = x[:, ::-1]
        contour, iris = (o.reshape(-1, 3).astype(np.float64) for o in self.iris(x))
        if mirrored:
            contour[:, 0], iris[:, 0] = n - contour[:, 0], n - iris[:, 0]
        return roi.to_image(contour[:16], n), roi.to_image(iris, n)
