"""The training noise schedule (alpha_bar_t), timestep choice and SDS weighting w(t) (guidance.proto
TimestepSchedule, SdsWeighting).

Fractions f in [0, 1] map to integer steps round(f * T) clamped to [1, T - 1]."""

from __future__ import annotations

import numpy as np
import torch

from services.guidance.types import TimestepSchedule

DEFAULT_RANGE = (0.02, 0.98)
WEIGHTINGS = ("sds", "uniform", "sqrt", "fantasia")

# Stable Diffusion 1.x/2.x's training schedule, as scheduler_config.json keys.
SD_SCHEDULE = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def alphas_cumprod(config: dict) -> torch.Tensor:
    """(T,) float64 cumulative product of (1 - beta_t) for a diffusers scheduler config (its
    num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, rescale_betas_zero_snr keys;
    diffusers' defaults where absent). "linear" and "scaled_linear" (SD_SCHEDULE) are computed here in
    float64; other schedules and zero-SNR rescaling come from diffusers' own DDPMScheduler (float32)."""
    T = int(config.get("num_train_timesteps", 1000))
    trained = config.get("trained_betas")
    schedule = config.get("beta_schedule", "linear")
    b0, b1 = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
    if config.get("rescale_betas_zero_snr") or (trained is None and schedule not in ("linear", "scaled_linear")):
        from diffusers import DDPMScheduler

        return DDPMScheduler.from_config(config).alphas_cumprod.to(torch.float64)
    if trained is not None:
        betas = torch.tensor(trained, dtype=torch.float64)
    elif schedule == "linear":
        betas = torch.linspace(b0, b1, T, dtype=torch.float64)
    else:
        betas = torch.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


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
