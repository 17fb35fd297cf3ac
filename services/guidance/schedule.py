"""Timestep choice and SDS weighting w(t) (guidance.proto TimestepSchedule, SdsWeighting).

Fractions f in [0, 1] map to integer steps round(f * T) clamped to [1, T - 1]."""

from __future__ import annotations

import numpy as np
import torch

from services.guidance.types import TimestepSchedule

DEFAULT_RANGE = (0.02, 0.98)
WEIGHTINGS = ("sds", "uniform", "sqrt", "fantasia")


def to_step(fraction: float | np.ndarray, num_train_timesteps: int) -> np.ndarray:
    """Fraction(s) of the schedule -> integer step(s) in [1, T - 1]."""
    return np.clip(np.rint(np.asarray(fraction, dtype=np.float64) * num_train_timesteps), 1,
                   num_train_timesteps - 1).astype(np.int64)


def current_range(s: TimestepSchedule) -> tuple[float, float]:
    """The (t_min, t_max) fractions in use at s.training_fraction (annealed linearly when an end range is set)."""
    lo, hi = (s.t_min, s.t_max) if (s.t_min or s.t_max) else DEFAULT_RANGE
    if not (s.t_min_end or s.t_max_end):
        return lo, hi
    a = s.training_fraction
    return lo + a * (s.t_min_end - lo), hi + a * (s.t_max_end - hi)


def choose_steps(s: TimestepSchedule, n: int, rng: np.random.Generator, num_train_timesteps: int) -> np.ndarray:
    """(n,) integer timesteps for a distillation request."""
    if s.t:
        fractions = np.asarray(s.t, dtype=np.float64)
        return to_step(np.broadcast_to(fractions, (n,)), num_train_timesteps)
    if s.sampling == "linear_decay":
        lo, hi = (s.t_min, s.t_max) if (s.t_min or s.t_max) else DEFAULT_RANGE
        return to_step(np.full(n, hi - s.training_fraction * (hi - lo)), num_train_timesteps)
    lo, hi = current_range(s)
    fractions = rng.uniform(lo, hi, size=1 if s.shared else n)
    return to_step(np.broadcast_to(fractions, (n,)), num_train_timesteps)


def sds_weight(kind: str, alphas_cumprod_t: torch.Tensor) -> torch.Tensor:
    """w(t) for alpha_bar_t values (any shape)."""
    a = alphas_cumprod_t
    if kind == "sds":
        return 1.0 - a
    if kind == "uniform":
        return torch.ones_like(a)
    if kind == "sqrt":
        return torch.sqrt(1.0 - a)
    if kind == "fantasia":
        return torch.sqrt(a) * (1.0 - a)
    raise ValueError(f"unknown weighting {kind!r}; one of {WEIGHTINGS}")
