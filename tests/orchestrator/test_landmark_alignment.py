"""Landmark alignment (Portrait3D-ID B.1): rays through 2D detections cast to a surface's rendered depth, and
the similarity transform from the face model's 3D keypoints to the hits. The surface is the procedural head,
sphere-traced independently of the code under test."""

import numpy as np
import pytest
import torch

from orchestrator.landmark_alignment import KEYPOINTS_68, align_landmarks, cast_rays, pixels_in
from services.core.camera_batch import CameraBatch
from services.core.cameras import camera_for_box, orbit_camera, rotation_x, rotation_y
from services.core.procedural_head import head_sdf, render_head

# pixels of a frontal 128 px view on the face (eyes, nose, mouth corners of the procedural head, roughly)
PIXELS = np.array([[46.3, 57.2], [57.8, 58.1], [70.1, 58.4], [81.6, 57.0], [64.2, 70.5], [52.4, 84.7], [75.9, 84.1]])


@pytest.fixture(scope="module")
def frontal():
    cam = orbit_camera(0.0, 5.0, 4.0, fov_deg=35.0, width=128, height=128)
    out = render_head(CameraBatch.from_pinholes([cam], dtype=torch.float64), supersample=1, steps=160)
    return cam, out["depth"][0, 0].numpy(), out["alpha"][0, 0].numpy()


def test_rays_land_on_the_surface(frontal):
    cam, depth, alpha = frontal
    hits = cast_rays(PIXELS, depth, alpha, cam)
    assert not np.isnan(hits).any()
    # each hit projects back to its pixel and sits on the head's surface (the render's depth there)
    np.testing.assert_allclose(cam.project(hits), PIXELS, atol=1e-6)
    assert (hits[:, 2] > 0.4).all()                      # on the face side (+Z), not the back of the head
    sdf = head_sdf(torch.as_tensor(hits)).numpy()        # on the analytic surface, to the depth's precision
    assert np.abs(sdf).max() < 0.01, sdf
    miss = cast_rays(np.array([[2.0, 2.0], [500.0, 10.0]]), depth, alpha, cam)
    assert np.isnan(miss).all()


def test_recovers_a_known_similarity_transform(frontal):
    cam, depth, alpha = frontal
    truth = cast_rays(PIXELS, depth, alpha, cam)
    # the face model's keypoints: the true points in another frame (scale 0.8, rotated 12 / -7 degrees, moved)
    s, R, t = 0.8, rotation_y(12.0)[:3, :3] @ rotation_x(-7.0)[:3, :3], np.array([0.05, -0.12, 0.3])
    source = (truth - t) @ R / s                       # dst = s R src + t  <=>  src = R^T (dst - t) / s
    fit = align_landmarks(source, PIXELS, depth, alpha, cam)
    assert fit.scale == pytest.approx(s, rel=1e-6)
    np.testing.assert_allclose(fit.rotation, R, atol=1e-6)
    np.testing.assert_allclose(fit.translation, t, atol=1e-6)
    assert fit.residual < 1e-6
    np.testing.assert_allclose(fit.apply(source), truth, atol=1e-6)
    # a different transform is a different answer: the test can fail
    wrong = align_landmarks(source * 1.1, PIXELS, depth, alpha, cam)
    assert wrong.scale == pytest.approx(s / 1.1, rel=1e-6)


def test_too_few_hits_is_an_error(frontal):
    cam, depth, alpha = frontal
    pts = PIXELS.copy()
    pts[2:] = [1.0, 1.0]                                # off the head
    with pytest.raises(ValueError, match="only 2 of 7"):
        align_landmarks(np.random.default_rng(0).normal(size=(7, 3)), pts, depth, alpha, cam)


def test_pixels_between_a_photo_and_its_crop():
    photo = orbit_camera(10.0, 0.0, 5.0, fov_deg=30.0, width=640, height=480)
    crop = camera_for_box(photo, (200, 100, 456, 356), 512)
    points = np.array([[10.0, 20.0], [400.0, 300.0]])
    world = np.array([[0.1, 0.2, 0.3], [-0.4, 0.1, 0.5]])
    np.testing.assert_allclose(pixels_in(photo.project(world), photo, crop), crop.project(world), atol=1e-9)
    np.testing.assert_allclose(pixels_in(points, photo, crop), (points - [200, 100]) * 2, atol=1e-9)
    with pytest.raises(ValueError):
        pixels_in(points, photo, orbit_camera(20.0, 0.0, 5.0, fov_deg=30.0, width=640, height=480))


def test_keypoints_are_seven_distinct_ibug_points():
    assert len(set(KEYPOINTS_68)) == 7 and all(0 <= k < 68 for k in KEYPOINTS_68)
