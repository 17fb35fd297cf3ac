"""The resampling retention rule of PortraitDiffusion's multi-view noise resampling (eq. 14-17).

Each iteration, view v_i has two candidate targets: the one denoised from freshly resampled noise
(gradient g_new = grad^D) and the previous iteration's target from the anchor noise (g_prev = grad^P).
Each is scored by the cosine of its parameter gradient with the driving view's applied parameter
gradient g_d (eq. 16); the resampled candidate (and its noise, as the new anchor) is kept only when its
score is strictly larger (eq. 17: "if S^D > S^P"), so ties keep the previous one.

Pure functions on flattened parameter gradients (any shape, flattened; torch or numpy). Over the wire the
render service's GradientCosine answers the cosines without stepping; `keep_new` takes those.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def cosine(a, b, eps: float = 1e-12) -> float:
    """Cosine of two gradients flattened (same number of elements); 0 when either is (near) zero."""
    a = np.asarray(a.detach().cpu() if hasattr(a, "detach") else a, np.float64).reshape(-1)
    b = np.asarray(b.detach().cpu() if hasattr(b, "detach") else b, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"gradients differ in size: {a.size} vs {b.size}")
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na < eps or nb < eps:
        return 0.0
    return float(a @ b / (na * nb))


def keep_new(score_new: float, score_prev: float) -> bool:
    """Eq. 17: the resampled candidate wins only with a strictly larger score (ties keep the previous)."""
    return score_new > score_prev


@dataclass(frozen=True)
class Retention:
    keep_new: bool       # True: take the resampled noise, its target and gradient; False: keep the previous
    score_new: float     # cosine(g_new, g_driving)
    score_prev: float    # cosine(g_prev, g_driving)


def retain(g_driving, g_new, g_prev) -> Retention:
    """Which candidate to keep, given the driving view's parameter gradient and the two candidates'
    (all the same size): the one whose cosine with g_driving is larger; ties keep the previous."""
    s_new, s_prev = cosine(g_new, g_driving), cosine(g_prev, g_driving)
    return Retention(keep_new(s_new, s_prev), s_new, s_prev)
