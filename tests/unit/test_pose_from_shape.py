"""The head's rotation from a 3D face shape (services.face.geometry.pose.rotation_from_shape), on the
astronaut's own MediaPipe shape placed at known poses and seen as MediaPipe reports a face (x, y pixels,
z a relative depth in x's scale): the rotation comes back, on and off the optical axis, and fit_head_pose
keeps it while fitting the head's position."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.cameras import PinholeCamera
from services.face.backends.mediapipe_backend import MediaPipeFace
from services.face.geometry.dense import head_frame_478
from services.face.geometry.pose import (_FRONTAL, assumed_intrinsics, fit_head_pose, head_rotation,
                                         rotation_from_shape)
from services.core.face_mesh import ibug68_from_478

W = H = 640


@pytest.fixture(scope="module")
def head_shape(astronaut) -> np.ndarray:
    """(478, 3) the astronaut's MediaPipe points in her head frame."""
    mp = MediaPipeFace()
    det = mp.detect(astronaut, 0)[0]
    points = mp.landmarks_478(astronaut, det)
    h, w = astronaut.shape[:2]
    fit = fit_head_pose(ibug68_from_478(points[:, :2]), w, h,
                        rotation=rotation_from_shape(points, assumed_intrinsics(w, h)))
    return head_frame_478(points, fit)


def _seen(shape: np.ndarray, yaw: float, pitch: float, offset: tuple[float, float]) -> tuple[np.ndarray, PinholeCamera]:
    """shape at a head pose, 12 units in front of a camera (offset: its x, y off the optical axis), as
    MediaPipe reports a face: the face's own view along the ray through it (an orthographic shape in the
    ray's frame, which is what the mesh model sees in its crop), scaled to pixels at the face's centre; and
    the camera."""
    K = assumed_intrinsics(W, H)
    w2c = np.eye(4)
    w2c[:3, :3] = _FRONTAL @ head_rotation(yaw, pitch, 0.0)
    w2c[:3, 3] = [offset[0], offset[1], 12.0]
    camera = PinholeCamera(K, w2c, W, H)
    cam = shape @ w2c[:3, :3].T + w2c[:3, 3]
    centre = cam.mean(0)
    ray = centre / np.linalg.norm(centre)
    x_axis = np.cross([0.0, 1.0, 0.0], ray)
    x_axis /= np.linalg.norm(x_axis)
    to_ray_frame = np.stack([x_axis, np.cross(ray, x_axis), ray])   # rows: the ray frame's axes
    local = (cam - centre) @ to_ray_frame.T * (K[0, 0] / np.linalg.norm(centre))
    centre_px = (K @ centre)[:2] / centre[2]
    return np.c_[centre_px + local[:, :2], local[:, 2]], camera


@pytest.mark.parametrize("yaw,pitch", [(0, 0), (25, 0), (-40, 0), (45, 10), (-30, -12)])
@pytest.mark.parametrize("offset", [(0.0, 0.0), (3.0, -1.5)])
def test_rotation_from_shape_recovers_the_pose(head_shape, yaw, pitch, offset):
    points, camera = _seen(head_shape, yaw, pitch, offset)
    R = rotation_from_shape(points, camera.K)
    fit = fit_head_pose(ibug68_from_478(points[:, :2]), W, H, rotation=R)
    # the shape's iBUG 68 are the astronaut's, the reference the generic template: a degree or two apart
    assert (fit.yaw, fit.pitch) == pytest.approx((yaw, pitch), abs=2.5)
    assert abs(fit.roll) < 2.5
    np.testing.assert_allclose(fit.camera.world_to_camera[:3, :3], R, atol=1e-9)   # the rotation is kept
    # the head is placed: the camera seen from the head's origin in the same direction (its distance
    # follows the generic template's size, not the astronaut's)
    cosine = fit.camera.position @ camera.position / np.linalg.norm(fit.camera.position) / np.linalg.norm(
        camera.position)
    assert np.degrees(np.arccos(min(cosine, 1.0))) < 3.0
