"""Head pose, a camera for the photo and personalised 3D landmarks, from 68 2D landmarks.

The generic template (landmarks.TEMPLATE_68) is fitted with a perspective PnP under an assumed field of
view; the fitted pose gives yaw/pitch/roll (conventions in protos/headforge/v1/face.proto) and a camera
in the head frame. Each template point is then moved within its depth plane so that it projects exactly
onto the observed landmark: the subject's own 3D landmarks.

2D points alone underestimate a turned head's yaw by about half (at 40 degrees PnP says about 20: the
detectors put the far jaw on the silhouette and the generic template's depths are not the person's), so
when the detector gives a 3D shape (MediaPipe's 478 points, rotation_from_shape) the rotation comes from
that shape and the PnP only places the head (fit_head_pose's `rotation`).
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


def assumed_intrinsics(width: int, height: int, fov_deg: float = ASSUMED_FOV_DEG) -> np.ndarray:
    """(3, 3) K of a photo of unknown camera: vertical field of view fov_deg, principal point at the centre."""
    f = focal_from_fov(fov_deg, height)
    return intrinsics(f, f, width / 2, height / 2)


def rotation_from_shape(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """The head's world-to-camera rotation (3, 3) from a 3D face shape in camera axes: points (N, 3) with
    x, y in pixels and z a relative depth in x's scale (MediaPipe's), whose iBUG 68 (services.core.face_mesh)
    are rigidly aligned (eyes, nose, mouth) to the template's. The shape is an orthographic view along the
    ray through the face, so the rotation is carried from that ray to the optical axis."""
    from services.core.face_mesh import ibug68_from_478
    from services.core.similarity import similarity_transform
    from services.face.geometry.dense import RIGID

    shape = ibug68_from_478(np.asarray(points, np.float64))[RIGID]
    _, R_ray_frame, _ = similarity_transform((TEMPLATE_68.astype(np.float64) @ _FRONTAL.T)[RIGID], shape)
    return carry_to_ray(R_ray_frame @ _FRONTAL, shape[:, :2].mean(0), K)


def carry_to_ray(rotation: np.ndarray, centre_px: np.ndarray, K: np.ndarray) -> np.ndarray:
    """A head's world-to-camera rotation (3, 3) seen orthographically along the ray through the face at
    pixel centre_px (2,), carried from that ray to the optical axis: the rotation a pinhole camera with
    intrinsics K (3, 3) sees."""
    ray = np.linalg.inv(K) @ np.r_[np.asarray(centre_px, np.float64), 1.0]
    ray /= np.linalg.norm(ray)
    axis = np.cross([0.0, 0.0, 1.0], ray)
    angle = math.atan2(np.linalg.norm(axis), ray[2])
    to_ray, _ = cv2.Rodrigues(axis / max(np.linalg.norm(axis), 1e-12) * angle)
    return to_ray @ rotation


def rotation_from_bfm(R_bfm: np.ndarray, centre_px: np.ndarray, K: np.ndarray) -> np.ndarray:
    """The head's world-to-camera rotation from a 3DMM's rotation R_bfm (3, 3) that maps the model frame
    (= the head frame: +Y up, face along +Z) to an orthographic view with y up and z toward the viewer
    (3DDFA-V2's crop frame): the nearest rotation to it (a predicted one is only nearly orthonormal),
    flipped in y and z into OpenCV axes, then carry_to_ray at the face's centre."""
    u, _, vt = np.linalg.svd(np.asarray(R_bfm, np.float64))
    nearest = u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0]) @ vt
    return carry_to_ray(_FRONTAL @ nearest, centre_px, K)


def _translation(obj: np.ndarray, lm68: np.ndarray, R: np.ndarray, K: np.ndarray) -> np.ndarray:
    """The t that best projects R obj + t onto lm68 (linear least squares on the projection equations)."""
    rotated = obj @ R.T
    uv = (lm68 - K[:2, 2]) / np.diag(K)[:2]          # normalised image coordinates
    A = np.zeros((2 * len(obj), 3))
    A[0::2, 0], A[1::2, 1] = 1.0, 1.0
    A[0::2, 2], A[1::2, 2] = -uv[:, 0], -uv[:, 1]
    b = (uv * rotated[:, 2:3] - rotated[:, :2]).reshape(-1)   # rows x0, y0, x1, y1, ... as in A
    return np.linalg.lstsq(A, b, rcond=None)[0]


def fit_head_pose(lm68: np.ndarray, width: int, height: int, fov_deg: float = ASSUMED_FOV_DEG,
                  rotation: np.ndarray | None = None) -> HeadPoseFit:
    """Fit the template to (68, 2) pixel landmarks of an image of width x height pixels. rotation: the
    head's (3, 3) world-to-camera rotation when known (rotation_from_shape); then only the head's
    position is fitted."""
    K = assumed_intrinsics(width, height, fov_deg)
    f = K[0, 0]
    obj = TEMPLATE_68.astype(np.float64)
    img = lm68.astype(np.float64).reshape(-1, 1, 2)
    ok = False
    if rotation is not None:
        R = np.asarray(rotation, np.float64)
        t = _translation(obj, lm68.astype(np.float64), R, K)
        ok = bool(np.isfinite(t).all())
    else:
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
