"""Head pose, a camera for the photo and personalised 3D landmarks, from 68 2D landmarks.

The generic template (landmarks.TEMPLATE_68) is fitted with a perspective PnP under an assumed field of
view; the fitted pose gives yaw/pitch/roll (conventions in protos/headforge/v1/face.proto) and a camera
in the head frame. Each template point is then moved within its depth plane so that it projects exactly
onto the observed landmark: the subject's own 3D landmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from services.core.cameras import PinholeCamera, focal_from_fov, intrinsics
from services.core.landmarks import TEMPLATE_68

ASSUMED_FOV_DEG = 25.0
# A frontal camera (azimuth 0) maps world to camera by flipping y and z.
_FRONTAL = np.diag([1.0, -1.0, -1.0])


@dataclass
class HeadPoseFit:
    yaw: float     # degrees; > 0: head turned toward the subject's left
    pitch: float   # degrees; > 0: chin up
    roll: float    # degrees; > 0: tilted toward the subject's right shoulder
    camera: PinholeCamera          # camera of the photo, head frame = world
    landmarks_3d: np.ndarray       # (68, 3) personalised, head frame
    reprojection_error_px: float   # RMS of the generic template's fit, before personalisation


def head_rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Ry(yaw) Rx(-pitch) Rz(roll), degrees: the head's rotation relative to a frontal camera."""
    from services.core.cameras import rotation_x, rotation_y, rotation_z

    return rotation_y(yaw) @ rotation_x(-pitch) @ rotation_z(roll)


def euler_from_rotation(H: np.ndarray) -> tuple[float, float, float]:
    """Inverse of head_rotation: (yaw, pitch, roll) in degrees."""
    b = math.asin(float(np.clip(-H[1, 2], -1.0, 1.0)))
    yaw = math.degrees(math.atan2(H[0, 2], H[2, 2]))
    roll = math.degrees(math.atan2(H[1, 0], H[1, 1]))
    return yaw, -math.degrees(b), roll


def fit_head_pose(lm68: np.ndarray, width: int, height: int, fov_deg: float = ASSUMED_FOV_DEG) -> HeadPoseFit:
    """Fit the template to (68, 2) pixel landmarks of an image of width x height pixels."""
    f = focal_from_fov(fov_deg, height)
    K = intrinsics(f, f, width / 2, height / 2)
    obj = TEMPLATE_68.astype(np.float64)
    img = lm68.astype(np.float64).reshape(-1, 1, 2)
    try:
        ok, rvec, tvec = cv2.solvePnP(obj, img, K, None, flags=cv2.SOLVEPNP_SQPNP)
    except cv2.error:  # points (nearly) coincide: no pose to fit
        ok = False
    if ok:
        rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, None, rvec, tvec)
        R, _ = cv2.Rodrigues(rvec)
        t = tvec.reshape(3)
    if not ok or t[2] <= 0:  # degenerate fit (no solution, or behind the camera): a frontal head at the face's distance
        R = _FRONTAL.copy()
        t = np.array([0.0, 0.0, f * 1.4 / max(float(np.ptp(lm68[:, 0])), 1.0)])
    w2c = np.eye(4)
    w2c[:3, :3], w2c[:3, 3] = R, t
    camera = PinholeCamera(K, w2c, width, height)
    proj = camera.project(obj)
    rms = float(np.sqrt(((proj - lm68) ** 2).sum(1).mean()))
    yaw, pitch, roll = euler_from_rotation(_FRONTAL @ R)
    return HeadPoseFit(yaw, pitch, roll, camera, _personalise(obj, lm68, R, t, K), rms)


def _personalise(obj: np.ndarray, lm68: np.ndarray, R: np.ndarray, t: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Move each template point, at its fitted depth, onto the ray through its observed landmark."""
    cam = obj @ R.T + t
    depth = cam[:, 2:3]
    rays = np.concatenate([lm68, np.ones((len(lm68), 1))], 1) @ np.linalg.inv(K).T
    return (rays * depth - t) @ R
