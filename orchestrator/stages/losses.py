"""Image-space loss terms of the optimise stage, in numpy: each returns (loss, dLoss/dPrediction) with the
gradient in the prediction's shape and dtype, ready to be weighted and sent to the render service's
ApplyGradients. Arithmetic is float64 whatever the inputs.

Images are (N, C, H, W) as the render service returns them (protos/headforge/v1/render.proto). A mask is
(N, 1, H, W) (or the prediction's shape) of non-negative per-pixel weights, usually in [0, 1]; a weight-0
pixel takes no part: neither its prediction nor its target changes the loss or the gradient (they may even
be NaN). A "mean over masked pixels" is the mask-weighted mean sum(m * l) / sum(m); with no mask, the plain
mean. An empty mask (sum 0) gives loss 0 and a zero gradient.

Also here: the landmark control for the guidance service (ControlInput kind "landmarks" takes 68 pixel
points per view and the server draws the picture itself; see services/guidance/types.py).
"""

from __future__ import annotations

import numpy as np

from services.common.errors import InvalidArgument
from services.core.cameras import PinholeCamera
from services.guidance.types import ControlInput

_NORMAL_EPS = 1e-6    # a normal shorter than this has no direction (a background pixel)


def _check_pair(pred: np.ndarray, target: np.ndarray, names: tuple[str, str], channels: int | None = None):
    if pred.ndim != 4:
        raise InvalidArgument(names[0], f"must be (N, C, H, W), got shape {pred.shape}")
    if channels is not None and pred.shape[1] != channels:
        raise InvalidArgument(names[0], f"must have {channels} channel(s), got shape {pred.shape}")
    if target.shape != pred.shape:
        raise InvalidArgument(names[1], f"must match {names[0]}'s shape {pred.shape}, got {target.shape}")


def _weights(mask: np.ndarray | None, shape: tuple[int, ...], field: str = "mask") -> np.ndarray:
    """The mask as float64 weights of `shape` (per-pixel (N, 1, H, W) broadcast over channels)."""
    if mask is None:
        return np.ones(shape)
    m = np.asarray(mask, np.float64)
    if m.shape not in (shape, (shape[0], 1, *shape[2:])):
        raise InvalidArgument(field, f"must be {(shape[0], 1, *shape[2:])} or {shape}, got {m.shape}")
    if not np.isfinite(m).all() or (m < 0).any():
        raise InvalidArgument(field, "weights must be finite and >= 0")
    return np.broadcast_to(m, shape)


def _masked_mean(per_element: np.ndarray, dper: np.ndarray, w: np.ndarray, dtype) -> tuple[float, np.ndarray]:
    """sum(w * l) / sum(w) and its gradient w * dl/dpred / sum(w); weight-0 elements give exact zeros."""
    total = w.sum()
    if total <= 0:
        return 0.0, np.zeros(w.shape, dtype)
    on = w > 0
    loss = float(np.where(on, w * per_element, 0.0).sum() / total)
    return loss, np.where(on, w * dper / total, 0.0).astype(dtype)


def l2(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Mean squared error over (masked) pixels and channels: sum(m (pred - target)^2) / sum(m), m broadcast
    over C (no mask: np.mean((pred - target)^2), the optimise stage's reference L2). pred, target (N, C, H, W)
    float; grad = 2 m (pred - target) / sum(m)."""
    pred, target = np.asarray(pred), np.asarray(target)
    _check_pair(pred, target, ("pred", "target"))
    d = pred.astype(np.float64) - target
    return _masked_mean(d * d, 2.0 * d, _weights(mask, pred.shape), pred.dtype)


def l1(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Mean absolute error over (masked) pixels and channels: sum(m |pred - target|) / sum(m). pred, target
    (N, C, H, W) float; grad = m sign(pred - target) / sum(m), the subgradient 0 where pred == target."""
    pred, target = np.asarray(pred), np.asarray(target)
    _check_pair(pred, target, ("pred", "target"))
    d = pred.astype(np.float64) - target
    return _masked_mean(np.abs(d), np.sign(d), _weights(mask, pred.shape), pred.dtype)


def photometric(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, *,
                l1_weight: float = 0.0, l2_weight: float = 1.0) -> tuple[float, np.ndarray]:
    """A reference-view colour term: l1_weight * l1 + l2_weight * l2 (see those), e.g. rendered rgb
    (N, 3, H, W) in [0, 1] against the reference photo. Weights >= 0; a 0 weight skips that part."""
    if l1_weight < 0 or l2_weight < 0:
        raise InvalidArgument("l1_weight" if l1_weight < 0 else "l2_weight", "must be >= 0")
    loss, grad = 0.0, np.zeros(np.shape(pred), np.asarray(pred).dtype)
    for weight, fn in ((l1_weight, l1), (l2_weight, l2)):
        if weight:
            part, g = fn(pred, target, mask)
            loss, grad = loss + weight * part, grad + (weight * g).astype(grad.dtype)
    return loss, grad


def alpha_weighted_photometric(pred: np.ndarray, alpha: np.ndarray, target: np.ndarray, *, l1_weight: float = 0.0,
                               l2_weight: float = 1.0) -> tuple[float, np.ndarray, np.ndarray]:
    """mean over every element of alpha * (l1_weight |pred - target| + l2_weight (pred - target)^2), alpha
    (N, 1, H, W) broadcast over the channels of pred, target (N, C, H, W): (loss, dloss/dpred, dloss/dalpha).
    Portrait3D-Text's regression (code: 1e3 * mean(mask * (x - x_hat)^2), the mask being the rendered alpha,
    not detached), so transparent pixels cost nothing and covering a pixel costs its error."""
    pred, target, alpha = np.asarray(pred), np.asarray(target), np.asarray(alpha)
    _check_pair(pred, target, ("pred", "target"))
    if alpha.shape != (pred.shape[0], 1, *pred.shape[2:]):
        raise InvalidArgument("alpha", f"must be {(pred.shape[0], 1, *pred.shape[2:])}, got {alpha.shape}")
    if l1_weight < 0 or l2_weight < 0:
        raise InvalidArgument("l1_weight" if l1_weight < 0 else "l2_weight", "must be >= 0")
    d = pred.astype(np.float64) - target
    a = alpha.astype(np.float64)
    per = l1_weight * np.abs(d) + l2_weight * d * d
    n = d.size
    grad_pred = a * (l1_weight * np.sign(d) + 2.0 * l2_weight * d) / n
    return float((a * per).sum() / n), grad_pred.astype(pred.dtype), (per.sum(1, keepdims=True) / n).astype(pred.dtype)


def mask_loss(alpha: np.ndarray, target_mask: np.ndarray) -> tuple[float, np.ndarray]:
    """Silhouette term, L2 (not BCE): mean((alpha - target_mask)^2) over all pixels, as the optimise stage's
    reference_mask. alpha, target_mask (N, 1, H, W) in [0, 1]; grad = 2 (alpha - target_mask) / size."""
    alpha = np.asarray(alpha)
    _check_pair(alpha, np.asarray(target_mask), ("alpha", "target_mask"), channels=1)
    return l2(alpha, target_mask)


def normals_from_picture(picture: np.ndarray) -> np.ndarray:
    """A normal-map picture (n + 1) / 2 in [0, 1] (the guidance service's normal images, OpenCV camera
    frame) -> normal vectors n = 2 picture - 1 in [-1, 1], the render service's encoding."""
    return 2.0 * np.asarray(picture, np.float64) - 1.0


def normal_loss(pred_normals: np.ndarray, target_normals: np.ndarray,
                mask: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """Mean over masked pixels of 1 - cos(pred, target), in [0, 2].

    pred_normals (N, 3, H, W): the render service's "normal_camera" or "normal_world" output as is: normal
    vectors in [-1, 1], alpha-weighted (length <= alpha for soft representations, 0 where alpha = 0), so the
    loss normalises them: cos = <p, t> / (|p| |t|), and the gradient goes back through that normalisation,
    d(1 - cos)/dp = -(t/|t| - cos p/|p|) / |p| (orthogonal to p: only the direction is supervised). That
    gradient grows as 1 / |p| ~ 1 / alpha: mask out low-alpha pixels (e.g. mask = target mask * (alpha >
    0.5)). target_normals (N, 3, H, W): vectors in the same frame, any length (pictures from the guidance
    service: normals_from_picture first). Pixels where either normal is shorter than 1e-6 (a background)
    have no direction and are left out as if masked."""
    p, t = np.asarray(pred_normals), np.asarray(target_normals)
    _check_pair(p, t, ("pred_normals", "target_normals"), channels=3)
    w = _weights(mask, (p.shape[0], 1, *p.shape[2:]))
    t64 = np.where(w > 0, t, 0.0)          # masked-out pixels may hold anything, NaN included
    t_len = np.linalg.norm(t64, axis=1, keepdims=True)
    w = np.where(t_len >= _NORMAL_EPS, w, 0.0)
    p64 = np.where(w > 0, p, 0.0)
    p_len = np.linalg.norm(p64, axis=1, keepdims=True)
    w = np.where(p_len >= _NORMAL_EPS, w, 0.0)
    t_hat, p_len = t64 / np.maximum(t_len, _NORMAL_EPS), np.maximum(p_len, _NORMAL_EPS)
    cos = np.sum(p64 * t_hat, axis=1, keepdims=True) / p_len
    dcos = (t_hat - cos * p64 / p_len) / p_len
    total = w.sum()
    if total <= 0:
        return 0.0, np.zeros(p.shape, p.dtype)
    on = w > 0
    loss = float(np.where(on, w * (1.0 - cos), 0.0).sum() / total)
    return loss, np.where(on, -w * dcos / total, 0.0).astype(p.dtype)


def pearson_depth_loss(pred_depth: np.ndarray, target_depth: np.ndarray,
                       mask: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """1 - r per view, averaged over the N views, r the mask-weighted Pearson correlation between the
    depths over masked pixels; in [0, 2] (0 = identical up to a*d + b with a > 0, 2 = negated).

    pred_depth, target_depth (N, 1, H, W) in any affine-related units (the render's "depth", a monocular
    estimator's relative depth or disparity: for disparity the sign flips, negate it first); the loss is
    invariant to d -> a d + b (a > 0) of either. With weights w~ = m / sum(m) per view, centred
    pc = p - sum(w~ p), tc likewise, S_xy = sum(w~ xc yc): r = S_pt / sqrt(S_pp S_tt) and
    dr/dp = w~ (tc / sqrt(S_pp S_tt) - r pc / S_pp). A view with fewer than 2 masked pixels or a flat
    (zero-variance) prediction or target has no defined r: it counts as loss 1 with a zero gradient."""
    p, t = np.asarray(pred_depth), np.asarray(target_depth)
    _check_pair(p, t, ("pred_depth", "target_depth"), channels=1)
    w_all = _weights(mask, p.shape)
    n = p.shape[0]
    losses, grad = np.ones(n), np.zeros(p.shape)
    for i in range(n):
        w = w_all[i]
        on = w > 0
        if on.sum() < 2:
            continue
        wn = np.where(on, w, 0.0) / w.sum()
        pv, tv = np.where(on, p[i], 0.0).astype(np.float64), np.where(on, t[i], 0.0).astype(np.float64)
        pc, tc = np.where(on, pv - np.sum(wn * pv), 0.0), np.where(on, tv - np.sum(wn * tv), 0.0)
        s_pp, s_tt, s_pt = np.sum(wn * pc * pc), np.sum(wn * tc * tc), np.sum(wn * pc * tc)
        # flat within rounding: the centred spread is ~1e-6 of the values' size or less
        if s_pp <= 1e-12 * np.sum(wn * pv * pv) or s_tt <= 1e-12 * np.sum(wn * tv * tv):
            continue
        norm = np.sqrt(s_pp * s_tt)
        r = s_pt / norm
        losses[i] = 1.0 - r
        grad[i] = -wn * (tc / norm - r * pc / s_pp) / n
    return float(losses.mean()), grad.astype(p.dtype)


def landmark_control_points(landmarks_3d: np.ndarray, camera: PinholeCamera,
                            min_depth: float = 1e-6) -> np.ndarray:
    """Head-frame landmarks (68, 3) iBUG or (478, 3) MediaPipe (head frame = world, as the face service's
    landmarks_3d_68 / landmarks_3d_478) -> (N, 2) float64 pixel coordinates (x right, y down;
    PinholeCamera.project) in `camera`'s image. A
    landmark at camera depth z <= min_depth (world units: on or behind the camera's plane) has no
    projection: its row is NaN. Points outside the image are kept (the guidance service's drawing clips
    them)."""
    pts = np.asarray(landmarks_3d, np.float64)
    if pts.shape not in ((68, 3), (478, 3)):
        raise InvalidArgument("landmarks_3d", f"must be (68, 3) or (478, 3), got {pts.shape}")
    m = np.asarray(camera.world_to_camera, np.float64)
    z = pts @ m[2, :3] + m[2, 3]
    out = np.full((len(pts), 2), np.nan)
    front = z > min_depth
    if front.any():
        out[front] = camera.project(pts[front])
    return out


def landmark_control(points: np.ndarray, scale: float = 0.0) -> ControlInput:
    """A landmark ControlInput from pixel points (P, 2) (one set for every image) or (N, P, 2) (one per
    image), in pixels of the request's images, P = 68 (iBUG order) or 478 (MediaPipe order); the guidance
    service draws the picture itself.
    scale 0..2, 0 = 1.0. InvalidArgument("landmarks") when a point is NaN (behind the camera in
    landmark_control_points): the server draws every point as connected lines and takes no partial sets, so
    such a view gets no landmark control."""
    pts = np.asarray(points, np.float64)
    if pts.ndim not in (2, 3) or pts.shape[-2:] not in ((68, 2), (478, 2)):
        raise InvalidArgument("landmarks", f"must be (P, 2) or (N, P, 2) pixel points, P = 68 or 478, got {pts.shape}")
    bad = ~np.isfinite(pts).all(axis=-1)
    if bad.any():
        raise InvalidArgument("landmarks", f"{int(bad.sum())} landmark(s) behind the camera or not finite "
                                           f"(first index {int(np.argwhere(bad)[0][-1])})")
    return ControlInput(kind="landmarks", landmarks=pts.astype(np.float32), scale=float(scale))
