"""The optimise stage's image-space loss terms (orchestrator/stages/losses.py): gradients against central
differences, hand-computed values, mask exclusion, Pearson affine invariance, normal-cosine geometry, and
the landmark control points."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.stages import losses
from services.common.errors import InvalidArgument
from services.core.cameras import PinholeCamera, intrinsics, orbit_camera
from services.core.landmarks import TEMPLATE_68

SHAPE = (2, 3, 3, 4)       # N, C, H, W
PIXELS = (2, 1, 3, 4)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _mask(rng):
    m = (rng.random(PIXELS) > 0.4).astype(np.float64) * rng.uniform(0.5, 1.0, PIXELS)
    m[:, :, 0, 0] = 1.0        # each view keeps some pixels
    m[:, :, 0, 1] = 1.0
    return m


def _normals(rng, shape=SHAPE):
    v = rng.normal(size=shape)
    return v / np.linalg.norm(v, axis=1, keepdims=True) * rng.uniform(0.3, 1.0, (shape[0], 1, *shape[2:]))


def _cases():
    """name -> (loss of the prediction only, prediction) on random float64 inputs."""
    rng = _rng(1)
    pred, target, mask = rng.random(SHAPE), rng.random(SHAPE), _mask(rng)
    # l1 needs |pred - target| well above the finite-difference step
    target_l1 = pred + np.where(rng.random(SHAPE) > 0.5, 1, -1) * rng.uniform(0.05, 0.5, SHAPE)
    alpha, target_alpha = rng.random(PIXELS), rng.random(PIXELS)
    n_pred, n_target = _normals(rng), _normals(rng)
    d_pred, d_target = rng.uniform(2, 4, PIXELS), rng.uniform(2, 4, PIXELS)
    return {
        "l2": (lambda p: losses.l2(p, target), pred),
        "l2_masked": (lambda p: losses.l2(p, target, mask), pred),
        "l1": (lambda p: losses.l1(p, target_l1), pred),
        "l1_masked": (lambda p: losses.l1(p, target_l1, mask), pred),
        "photometric": (lambda p: losses.photometric(p, target_l1, mask, l1_weight=0.3, l2_weight=2.0), pred),
        "mask_loss": (lambda a: losses.mask_loss(a, target_alpha), alpha),
        "normal": (lambda p: losses.normal_loss(p, n_target), n_pred),
        "normal_masked": (lambda p: losses.normal_loss(p, n_target, mask), n_pred),
        "pearson": (lambda d: losses.pearson_depth_loss(d, d_target), d_pred),
        "pearson_masked": (lambda d: losses.pearson_depth_loss(d, d_target, mask), d_pred),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_gradient_matches_central_differences(name):
    fn, x = _cases()[name]
    loss, grad = fn(x)
    assert grad.shape == x.shape and grad.dtype == np.float64
    h, fd = 1e-6, np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        fd[i] = (fn(up)[0] - fn(down)[0]) / (2 * h)
    assert np.linalg.norm(grad) > 0
    assert np.linalg.norm(fd - grad) / np.linalg.norm(grad) < 1e-4
    assert np.isclose(fn(x)[0], loss)


def test_l1_l2_hand_values_on_2x2():
    pred = np.array([[[[0.0, 1.0], [2.0, 3.0]]]])
    target = np.array([[[[0.0, 3.0], [1.0, 1.0]]]])      # diff: 0, -2, 1, 2
    mask = np.array([[[[1.0, 0.0], [1.0, 1.0]]]])
    loss, grad = losses.l2(pred, target)
    assert loss == pytest.approx((0 + 4 + 1 + 4) / 4)
    np.testing.assert_allclose(grad, [[[[0.0, -1.0], [0.5, 1.0]]]])     # 2 diff / 4, optimise's formula
    loss, grad = losses.l2(pred, target, mask)
    assert loss == pytest.approx((0 + 1 + 4) / 3)
    np.testing.assert_allclose(grad, [[[[0.0, 0.0], [2 / 3, 4 / 3]]]])
    loss, grad = losses.l1(pred, target)
    assert loss == pytest.approx((0 + 2 + 1 + 2) / 4)
    np.testing.assert_allclose(grad, [[[[0.0, -0.25], [0.25, 0.25]]]])  # sign(0) = 0
    loss, grad = losses.l1(pred, target, mask)
    assert loss == pytest.approx(3 / 3)
    np.testing.assert_allclose(grad, [[[[0.0, 0.0], [1 / 3, 1 / 3]]]])
    loss, grad = losses.photometric(pred, target, mask, l1_weight=0.5, l2_weight=2.0)
    assert loss == pytest.approx(0.5 * 1 + 2.0 * 5 / 3)
    np.testing.assert_allclose(grad, 0.5 * np.array([[[[0, 0], [1 / 3, 1 / 3]]]])
                               + 2.0 * np.array([[[[0, 0], [2 / 3, 4 / 3]]]]))


def test_float32_in_float32_out_and_empty_mask():
    rng = _rng(2)
    pred, target = rng.random(SHAPE).astype(np.float32), rng.random(SHAPE).astype(np.float32)
    loss, grad = losses.l2(pred, target)
    assert grad.dtype == np.float32 and isinstance(loss, float)
    assert loss == pytest.approx(float(np.mean((pred.astype(np.float64) - target) ** 2)))
    loss, grad = losses.l1(pred, target, np.zeros(PIXELS))
    assert loss == 0.0 and not grad.any()


def test_mask_loss_is_the_optimise_stage_reference_mask_l2():
    rng = _rng(3)
    alpha, mask = rng.random(PIXELS), rng.random(PIXELS)
    loss, grad = losses.mask_loss(alpha, mask)
    assert loss == pytest.approx(np.mean((alpha - mask) ** 2))
    np.testing.assert_allclose(grad, 2 * (alpha - mask) / alpha.size)
    with pytest.raises(InvalidArgument) as e:
        losses.mask_loss(rng.random(SHAPE), rng.random(SHAPE))
    assert e.value.field == "alpha"


def _masked_cases(rng):
    """name -> (fn(pred, target, mask), pred, target) for the losses that take a mask."""
    return {
        "l2": (losses.l2, rng.random(SHAPE), rng.random(SHAPE)),
        "l1": (losses.l1, rng.random(SHAPE), rng.random(SHAPE)),
        "normal": (losses.normal_loss, _normals(rng), _normals(rng)),
        "pearson": (losses.pearson_depth_loss, rng.uniform(1, 3, PIXELS), rng.uniform(1, 3, PIXELS)),
    }


@pytest.mark.parametrize("name", ["l2", "l1", "normal", "pearson"])
def test_masked_out_pixels_change_neither_loss_nor_grad(name):
    rng = _rng(4)
    fn, pred, target = _masked_cases(rng)[name]
    mask = _mask(rng)
    loss, grad = fn(pred, target, mask)
    out = np.broadcast_to(mask == 0, pred.shape)
    assert out.any() and (~out).any()
    pred2, target2 = pred.copy(), target.copy()
    pred2[out] = rng.normal(size=out.sum()) * 10
    target2[out] = np.nan
    loss2, grad2 = fn(pred2, target2, mask)
    assert loss2 == loss
    np.testing.assert_array_equal(grad2, grad)
    assert not grad[out].any()
    # and the mask does exclude something: the unmasked loss differs
    assert fn(pred, target, None)[0] != pytest.approx(loss)


def test_pearson_invariant_to_affine_depth_changes():
    rng = _rng(5)
    pred, target, mask = rng.uniform(2, 4, PIXELS), rng.uniform(2, 4, PIXELS), _mask(rng)
    for m in (None, mask):
        loss, grad = losses.pearson_depth_loss(pred, target, m)
        assert 0.1 < loss < 1.9
        loss2, grad2 = losses.pearson_depth_loss(3.7 * pred - 20.0, 0.05 * target + 7.0, m)
        assert abs(loss2 - loss) < 1e-9
        np.testing.assert_allclose(grad2 * 3.7, grad, rtol=1e-7, atol=1e-12)   # chain rule of p -> a p + b


def test_pearson_identical_negated_and_flat():
    rng = _rng(6)
    depth, mask = rng.uniform(2, 4, PIXELS), _mask(rng)
    loss, grad = losses.pearson_depth_loss(depth, depth, mask)
    assert abs(loss) < 1e-12 and np.abs(grad).max() < 1e-12
    assert abs(losses.pearson_depth_loss(2 * depth + 1, depth, mask)[0]) < 1e-12
    assert abs(losses.pearson_depth_loss(-depth, depth, mask)[0] - 2.0) < 1e-12
    assert abs(losses.pearson_depth_loss(5.0 - 0.5 * depth, depth)[0] - 2.0) < 1e-12
    flat = depth.copy()
    flat[0] = 3.0                          # view 0 flat: undefined r, counts 1 with no gradient
    loss, grad = losses.pearson_depth_loss(flat, depth)
    assert loss == pytest.approx(0.5) and not grad[0].any() and np.abs(grad[1]).max() < 1e-12


def test_normal_loss_identical_opposite_and_orthogonal_gradient():
    rng = _rng(7)
    n = _normals(rng)
    unit = n / np.linalg.norm(n, axis=1, keepdims=True)
    loss, grad = losses.normal_loss(n, unit)     # alpha-weighted lengths: only the direction counts
    assert abs(loss) < 1e-12 and np.abs(grad).max() < 1e-9
    assert losses.normal_loss(n, -3 * unit)[0] == pytest.approx(2.0)
    other = _normals(rng)
    loss, grad = losses.normal_loss(n, other)
    assert 0.2 < loss < 1.8
    dots = np.sum(grad * n, axis=1) / (np.linalg.norm(grad, axis=1) * np.linalg.norm(n, axis=1))
    assert np.abs(dots).max() < 1e-9               # scaling a predicted normal leaves its cosine alone
    # and descending the gradient turns the prediction toward the target
    assert losses.normal_loss(n - 0.05 * grad / np.abs(grad).max(), other)[0] < loss


def test_normal_loss_leaves_out_missing_normals_and_reads_pictures():
    rng = _rng(8)
    n, target = _normals(rng), _normals(rng)
    target[:, :, 1:] = 0.0                          # a rendered target's background
    loss, grad = losses.normal_loss(n, target)
    only = losses.normal_loss(n[:, :, :1], target[:, :, :1])
    assert loss == pytest.approx(only[0]) and not grad[:, :, 1:].any()
    n[:, :, 0, :2] = 0.0                            # a prediction with no coverage there (alpha 0)
    loss, grad = losses.normal_loss(n, target)
    only = losses.normal_loss(n[:, :, :1, 2:], target[:, :, :1, 2:])
    assert loss == pytest.approx(only[0]) and not grad[:, :, 0, :2].any()
    np.testing.assert_allclose(grad[:, :, :1, 2:], only[1], rtol=1e-12)
    unit = target[:, :, :1] / np.linalg.norm(target[:, :, :1], axis=1, keepdims=True)
    np.testing.assert_allclose(losses.normals_from_picture((unit + 1) / 2), unit, atol=1e-12)


def _camera():
    """fx 100, fy 120, cx 32, cy 24, at world (0, 0, 3) looking down -Z (x right, y down on screen)."""
    w2c = np.array([[1.0, 0, 0, 0], [0, -1, 0, 0], [0, 0, -1, 3], [0, 0, 0, 1]])
    return PinholeCamera(intrinsics(100, 120, 32, 24), w2c, 64, 48).validate()


def test_landmark_projection_matches_a_hand_computed_pinhole():
    pts = np.tile(TEMPLATE_68.mean(0), (68, 1))
    pts[0] = (0.1, 0.2, 0.5)         # camera frame (0.1, -0.2, 2.5): u = 100 * 0.04 + 32, v = 120 * -0.08 + 24
    px = losses.landmark_control_points(pts, _camera())
    assert px.shape == (68, 2)
    np.testing.assert_allclose(px[0], (36.0, 14.4), atol=1e-12)
    # a frontal orbit view of the template: the subject's right eye (36) on the image's left
    cam = orbit_camera(0, 0, 3, fov_deg=40, width=128, height=128)
    px = losses.landmark_control_points(TEMPLATE_68, cam)
    assert np.isfinite(px).all() and px[36, 0] < 64 < px[45, 0] and px[27, 1] < px[8, 1]


def test_landmarks_behind_the_camera_are_nan_and_refused_as_a_control():
    pts = np.tile((0.0, 0.0, 0.0), (68, 1))
    pts[5] = (0.0, 0.0, 4.0)                      # camera depth -1
    pts[6] = (0.3, 0.1, 3.0)                      # on the camera plane, depth 0
    px = losses.landmark_control_points(pts, _camera())
    assert np.isnan(px[5]).all() and np.isnan(px[6]).all()
    assert np.isfinite(np.delete(px, [5, 6], axis=0)).all()
    with pytest.raises(InvalidArgument) as e:
        losses.landmark_control(px)
    assert e.value.field == "landmarks" and "first index 5" in str(e.value)


def test_landmark_control_is_what_guidance_draws():
    from services.guidance.controls import draw_landmarks   # the server side, to check the format only

    cams = [orbit_camera(a, 0, 3, fov_deg=40, width=96, height=96) for a in (-30, 0, 30)]
    pts = np.stack([losses.landmark_control_points(TEMPLATE_68, c) for c in cams])
    ctrl = losses.landmark_control(pts, scale=0.8)
    assert ctrl.kind == "landmarks" and ctrl.image is None and ctrl.scale == 0.8
    assert ctrl.landmarks.shape == (3, 68, 2) and ctrl.landmarks.dtype == np.float32
    picture = draw_landmarks(ctrl.landmarks[1], 96, 96)
    assert picture.shape == (3, 96, 96) and picture.max() > 0.5
    ys, xs = np.nonzero(picture.max(0))
    # the drawing spans the points, clipped to the picture (the chin is below this close-up's frame)
    lo, hi = ctrl.landmarks[1].min(0), np.minimum(ctrl.landmarks[1].max(0), 95)
    assert ctrl.landmarks[1].max(0)[1] > 96
    np.testing.assert_allclose([xs.min(), ys.min()], lo, atol=2)
    np.testing.assert_allclose([xs.max(), ys.max()], hi, atol=2)
    with pytest.raises(InvalidArgument):
        losses.landmark_control(pts[:, :5])
