"""Camera conventions, head pose round trips and the aligned-crop geometry, on synthetic landmarks."""

from __future__ import annotations

import numpy as np
import pytest

from services.core import cameras
from services.face.geometry import alignment
from services.core.landmarks import TEMPLATE_68, five_from_68
from services.face.geometry.pose import euler_from_rotation, fit_head_pose, head_rotation


def test_orbit_conventions():
    front = cameras.orbit_camera(0, 0, 3, fov_deg=30, width=64, height=64)
    np.testing.assert_allclose(front.position, [0, 0, 3], atol=1e-9)
    # the head's +X (subject's left) appears on the image's right, +Y up on screen
    u = front.project(np.array([[0.0, 0, 0], [0.5, 0, 0], [0, 0.5, 0]]))
    assert u[1, 0] > u[0, 0] and u[2, 1] < u[0, 1]
    np.testing.assert_allclose(u[0], [32, 32], atol=1e-9)
    side = cameras.orbit_camera(90, 0, 3, fov_deg=30, width=64, height=64)
    np.testing.assert_allclose(side.position, [3, 0, 0], atol=1e-9)
    above = cameras.orbit_camera(0, 60, 3, fov_deg=30, width=64, height=64)
    assert above.position[1] > 2.5
    down = cameras.orbit_camera(0, 90, 3, fov_deg=30, width=64, height=64)  # straight above: still valid
    assert np.isfinite(down.world_to_camera).all()
    gl = cameras.opencv_to_opengl(front.world_to_camera)
    assert (gl @ [0, 0, 0, 1])[2] < 0, "OpenGL cameras look down -z"


def test_camera_proto_validation():
    from services.common.errors import InvalidArgument

    cam = cameras.orbit_camera(30, 10, 2.7, fov_deg=20, width=128, height=96)
    back = cameras.PinholeCamera.from_proto(cam.to_proto())
    np.testing.assert_allclose(back.world_to_camera, cam.world_to_camera, atol=1e-6)
    bad = cam.to_proto()
    bad.fx = float("nan")
    with pytest.raises(InvalidArgument):
        cameras.PinholeCamera.from_proto(bad)
    bad = cam.to_proto()
    bad.world_to_camera[0] = 5.0
    with pytest.raises(InvalidArgument, match="rigid"):
        cameras.PinholeCamera.from_proto(bad)


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (25, -10, 5), (-40, 15, -12), (60, 5, 0)])
def test_euler_round_trip(yaw, pitch, roll):
    assert euler_from_rotation(head_rotation(yaw, pitch, roll)) == pytest.approx((yaw, pitch, roll), abs=1e-9)


def _photo_of_template(yaw, pitch, roll, size=640, distance=6.0):
    """Landmarks of the template head posed by (yaw, pitch, roll) in front of a 25-degree camera."""
    cam = cameras.orbit_camera(0, 0, distance, fov_deg=25, width=size, height=size)
    pts = TEMPLATE_68 @ head_rotation(yaw, pitch, roll).T
    return cam.project(pts)


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (20, 0, 0), (-30, 10, 0), (10, -15, 8)])
def test_fit_recovers_pose_of_a_known_head(yaw, pitch, roll):
    lm = _photo_of_template(yaw, pitch, roll)
    fit = fit_head_pose(lm, 640, 640)
    assert (fit.yaw, fit.pitch, fit.roll) == pytest.approx((yaw, pitch, roll), abs=0.5)
    np.testing.assert_allclose(fit.landmarks_3d, TEMPLATE_68, atol=1e-3)
    assert fit.reprojection_error_px < 0.1
    # the nose points toward image right when the head turns to its left (yaw > 0)
    if yaw > 0:
        assert lm[30, 0] > (lm[0, 0] + lm[16, 0]) / 2


def test_crop_removes_roll_and_camera_follows_pose():
    lm = _photo_of_template(0, 0, 20)
    T = alignment.crop_transform(lm, 512, "ffhq")
    eyes = np.c_[five_from_68(lm)[:2], np.ones(2)] @ T.T
    assert abs(eyes[0, 1] - eyes[1, 1]) < 0.5, "eyes level after alignment"
    cam, label = alignment.crop_camera(30, 0, 512, "ffhq")
    assert cam.position[0] < 0, "head turned to its left = camera toward the subject's right (-X)"
    assert label.shape == (25,)
    np.testing.assert_allclose(label[16:], [4.2647, 0, 0.5, 0, 4.2647, 0.5, 0, 0, 1], atol=1e-5)
    head_cam, head_label = alignment.crop_camera(0, 0, 512, "head")
    assert head_label[16] < label[16], "whole-head framing = shorter focal length"
    # the template's eye centre projects to the same crop pixel through either route
    frontal = _photo_of_template(0, 0, 0, size=512)
    T_head = alignment.crop_transform(frontal, 512, "head")
    T_ffhq = alignment.crop_transform(frontal, 512, "ffhq")
    c_ffhq = T_ffhq @ [256, 256, 1]
    c_head = T_head @ [256, 256, 1]
    assert c_head[1] > c_ffhq[1] - 512 * 0.2 and abs(c_head[0] - c_ffhq[0]) < 40


def test_fit_of_collapsed_landmarks_falls_back_to_a_frontal_head():
    """68 points on one pixel (a detector's degenerate answer): no pose to solve, so a frontal head, not a crash."""
    fit = fit_head_pose(np.full((68, 2), 100.0), 512, 512)
    assert (fit.yaw, fit.pitch, fit.roll) == pytest.approx((0.0, 0.0, 0.0), abs=1e-9)
    assert np.isfinite(fit.landmarks_3d).all() and fit.camera.position[2] > 0
    np.testing.assert_allclose(fit.camera.project(fit.landmarks_3d), np.full((68, 2), 100.0), atol=1e-6)
