"""LANDMARKS controls given MediaPipe's 478 points (the mediapipe face detector's landmarks_478 of the
astronaut): the drawing in the MediaPipe-face ControlNet's style, and the guidance service accepting the
points over its in-process client (the tiny random SD1.5-layout backbone with its landmark ControlNet)."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.errors import InvalidArgument
from services.core import face_mesh as mp
from services.guidance.controls import MEDIAPIPE_PARTS, MEDIAPIPE_PUPILS, draw_landmarks
from services.guidance.service import InProcessGuidanceClient
from services.guidance.types import Conditions, ControlInput, DistillRequest, TimestepSchedule


@pytest.fixture(scope="module")
def astronaut_478():
    """(478, 2) pixels on the 512 x 512 astronaut, from the mediapipe face detector."""
    from skimage import data

    from services.face.config import FaceConfig
    from services.face.service import FaceService
    from services.face.types import AnalyzeOptions

    face = FaceService(FaceConfig(detector="mediapipe")).analyze(
        data.astronaut(), AnalyzeOptions(skip_embedding=True, skip_crop=True, skip_masks=True)).faces[0]
    return face.landmarks_478.astype(np.float32)


def _pixels_of(picture: np.ndarray, colour) -> np.ndarray:
    """(K, 2) x, y of the pixels of an RGB colour in a (3, H, W) [0, 1] picture."""
    rgb = np.round(picture.transpose(1, 2, 0) * 255).astype(np.int64)
    ys, xs = np.nonzero((rgb == colour).all(-1))
    return np.c_[xs, ys]


def test_478_drawing_has_the_controlnets_colours_in_place(astronaut_478):
    pic = draw_landmarks(astronaut_478, 512, 512)
    assert pic.shape == (3, 512, 512) and pic.dtype == np.float32
    rgb = np.round(pic.transpose(1, 2, 0) * 255).astype(np.int64)
    colours = {c for _, c in MEDIAPIPE_PARTS} | {c for _, c in MEDIAPIPE_PUPILS}
    used = {tuple(c) for c in np.unique(rgb.reshape(-1, 3), axis=0)}
    assert used == colours | {(0, 0, 0)}, "plain lines: only the scheme's colours on black, no blending"
    drawn = (rgb > 0).any(-1)
    assert 0.004 < drawn.mean() < 0.05  # thin lines around a face of ~100 x 100 px
    lo, hi = astronaut_478.min(0) - 3, astronaut_478.max(0) + 3
    ys, xs = np.nonzero(drawn)
    assert (xs >= lo[0]).all() and (xs <= hi[0]).all() and (ys >= lo[1]).all() and (ys <= hi[1]).all()
    # each part's colour lies along its own points: the subject's right eye (image left) in (180, 200, 10)
    for lines, colour in MEDIAPIPE_PARTS:
        px = _pixels_of(pic, colour)
        pts = astronaut_478[sorted({i for line in lines for i in line})]
        assert len(px) > 20
        nearest = np.linalg.norm(px[:, None] - pts[None], axis=-1).min(1)
        assert np.median(nearest) < 3.0, colour
    right_eye, left_eye = _pixels_of(pic, (180, 200, 10)), _pixels_of(pic, (10, 200, 180))
    assert right_eye[:, 0].mean() < left_eye[:, 0].mean()
    # the pupils: 4 x 4 squares at the iris centres, drawn over the eye lines
    for i, colour in MEDIAPIPE_PUPILS:
        px = _pixels_of(pic, colour)
        assert len(px) == 16 and np.abs(px.mean(0) - np.floor(astronaut_478[i]) + 0.5).max() <= 0.5


def test_478_drawing_scales_and_skips_what_is_outside(astronaut_478):
    small = draw_landmarks(astronaut_478 * 0.25, 128, 128)
    assert (small > 0).any() and len(_pixels_of(small, MEDIAPIPE_PUPILS[0][1])) == 4, "1 px lines, 2 x 2 pupils"
    shifted = astronaut_478 + [300, 0]  # the image-right half of the face falls off a 512 x 512 picture
    pic = draw_landmarks(shifted, 512, 512)
    assert len(_pixels_of(pic, MEDIAPIPE_PUPILS[0][1])) == 16 and len(_pixels_of(pic, MEDIAPIPE_PUPILS[1][1])) == 0
    with pytest.raises(ValueError):
        draw_landmarks(np.zeros((100, 2), np.float32), 64, 64)


def test_guidance_accepts_478_points(tiny_service, astronaut_478):
    client = InProcessGuidanceClient(tiny_service)
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
    points = astronaut_478 * (64 / 512)

    def distill(control: ControlInput | None):
        return client.distill(DistillRequest(
            images=x, seed=3, guidance_scale=7.5, timesteps=TimestepSchedule(t=[0.5, 0.5]),
            conditions=Conditions(backbone="sd15-tiny", prompt="a photo of a face",
                                  controls=[control] if control else [])))

    by_points = distill(ControlInput(kind="landmarks", landmarks=points))
    by_picture = distill(ControlInput(kind="landmarks", image=draw_landmarks(points, 64, 64)))
    per_image = distill(ControlInput(kind="landmarks", landmarks=np.stack([points, points])))
    plain = distill(None)
    np.testing.assert_allclose(by_points.grad, by_picture.grad, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(per_image.grad, by_points.grad, rtol=1e-5, atol=1e-7)
    assert not np.allclose(by_points.grad, plain.grad, atol=1e-6), "the drawing reaches the ControlNet"
    for bad in (points[:100], np.stack([points] * 3), np.full((478, 2), np.nan, np.float32)):
        with pytest.raises(InvalidArgument) as info:
            distill(ControlInput(kind="landmarks", landmarks=bad))
        assert info.value.violations[0].field.endswith("landmarks")
