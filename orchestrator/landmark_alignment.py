"""Aligning a photo's 3D landmarks to an initial head surface (Portrait3D-ID, Appendix B.1).

The face model's 3D landmarks live in its own head frame; the initial surface (a 3D-GAN's mesh or field) has
its own idea of where the face is. Seven keypoints are taken from the landmarks; rays from the camera centre
through the keypoints' 2D detections in the image plane are cast to the surface (here: the surface's rendered
depth at the camera, read at those pixels, which is where the ray first meets it), and the similarity
transform (scale, rotation, translation) that best maps the seven source keypoints onto the seven hits is
applied to every landmark. The paper's seven keypoints are drawn but not listed: ours are the outer and inner
eye corners, the nose tip and the mouth corners (iBUG 36, 39, 42, 45, 30, 48, 54), points that a head
surface's depth locates well."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.core.cameras import PinholeCamera
from services.core.similarity import similarity_transform

KEYPOINTS_68 = (36, 39, 42, 45, 30, 48, 54)


@dataclass
class Alignment:
    """dst = scale * rotation @ src + translation (world units); hits (K, 3) the surface points the rays met,
    residual the RMS distance (world units) of the transformed keypoints to them."""

    scale: float
    rotation: np.ndarray
    translation: np.ndarray
    hits: np.ndarray
    residual: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) -> (N, 3)."""
        return self.scale * np.asarray(points, np.float64) @ self.rotation.T + self.translation

    def rotation_deg(self) -> float:
        """The rotation's angle, degrees."""
        return float(np.degrees(np.arccos(np.clip((np.trace(self.rotation) - 1) / 2, -1, 1))))


def pixels_in(points_px: np.ndarray, source: PinholeCamera, target: PinholeCamera) -> np.ndarray:
    """(N, 2) pixels of `source`'s image -> the same rays' pixels in `target`'s, two cameras with the same
    extrinsics (a crop and resize of one picture, services.core.cameras.camera_for_box)."""
    if not np.allclose(source.world_to_camera, target.world_to_camera, atol=1e-6):
        raise ValueError("pixels_in maps between cameras with the same extrinsics")
    h = np.c_[np.asarray(points_px, np.float64), np.ones(len(points_px))]
    uvw = h @ np.linalg.inv(source.K).T @ np.asarray(target.K, np.float64).T
    return uvw[:, :2] / uvw[:, 2:3]


def cast_rays(points_px: np.ndarray, depth: np.ndarray, alpha: np.ndarray, camera: PinholeCamera,
              min_alpha: float = 0.5) -> np.ndarray:
    """Where the rays through pixels (K, 2) (x right, y down, pixel centres at +0.5) first meet the surface
    whose camera-z depth (H, W) and coverage alpha (H, W) `camera` rendered: (K, 3) world points, a NaN row
    for a ray that misses (outside the image, or alpha < min_alpha at the nearest pixel). The depth is read
    bilinearly from the covered pixels around the point."""
    h, w = depth.shape
    out = np.full((len(points_px), 3), np.nan)
    Kinv, c2w = np.linalg.inv(camera.K), camera.camera_to_world
    for i, (x, y) in enumerate(np.asarray(points_px, np.float64)):
        u, v = x - 0.5, y - 0.5           # pixel-centre coordinates
        i0, j0 = int(np.floor(v)), int(np.floor(u))
        if not (0 <= round(v) < h and 0 <= round(u) < w) or alpha[int(round(v)), int(round(u))] < min_alpha:
            continue
        num = den = 0.0
        for di in (0, 1):
            for dj in (0, 1):
                r, c = i0 + di, j0 + dj
                if 0 <= r < h and 0 <= c < w and alpha[r, c] >= min_alpha:
                    wgt = (1 - abs(v - r)) * (1 - abs(u - c))
                    num, den = num + wgt * depth[r, c], den + wgt
        z = num / den
        ray = Kinv @ np.array([x, y, 1.0])
        out[i] = (c2w @ np.r_[ray * z, 1.0])[:3]
    return out


def align_landmarks(source_keypoints: np.ndarray, keypoints_px: np.ndarray, depth: np.ndarray, alpha: np.ndarray,
                    camera: PinholeCamera) -> Alignment:
    """The similarity transform taking source keypoints (K, 3) (the face model's head frame) onto the surface
    points hit by the rays through their 2D detections keypoints_px (K, 2) in `camera`'s image, given that
    camera's rendered depth and alpha (H, W). ValueError when fewer than 3 rays hit the surface."""
    hits = cast_rays(keypoints_px, depth, alpha, camera)
    ok = ~np.isnan(hits).any(1)
    if ok.sum() < 3:
        raise ValueError(f"only {int(ok.sum())} of {len(hits)} keypoint rays meet the surface")
    s, R, t = similarity_transform(np.asarray(source_keypoints, np.float64)[ok], hits[ok])
    moved = s * np.asarray(source_keypoints, np.float64)[ok] @ R.T + t
    return Alignment(s, R, t, hits, float(np.sqrt(((moved - hits[ok]) ** 2).sum(1).mean())))
