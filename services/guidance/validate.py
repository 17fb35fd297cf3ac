"""Checks on the request fields the guidance RPCs share (images, cameras, timesteps, sizes, noise, masks):
each returns the cleaned value or raises InvalidArgument naming the field (guidance.proto documents the
ranges)."""

from __future__ import annotations

import math

import numpy as np
import torch

from services.common.errors import require
from services.common.tensors import require_finite
from services.guidance.types import BackboneInfo, TimestepSchedule

MIN_SIDE, MAX_SIDE = 16, 2048   # pixels, for every image side the service takes or makes
MAX_PROMPT_CHARS = 4096         # prompt, negative_prompt, expression (guidance.proto Conditions)
MAX_CACHE_KEY_CHARS = 256       # text_cache_key, identity_cache_key


def text(value: str, field: str, limit: int = MAX_PROMPT_CHARS) -> str:
    """A prompt-like string of at most `limit` characters (text encoders truncate long prompts anyway,
    and the work before that grows with the length)."""
    require(len(value) <= limit, field, f"at most {limit} characters, got {len(value)}")
    return value


def images(value: np.ndarray, field: str, *, max_images: int, max_pixels: int) -> np.ndarray:
    """(N, 3, H, W) float in [0, 1] (a 1e-3 slack is clipped), 1 <= N <= max_images, H * W <= max_pixels ->
    float32."""
    require(isinstance(value, np.ndarray) and value.ndim == 4 and value.shape[1] == 3, field,
            f"must be (N, 3, H, W), got {getattr(value, 'shape', None)}")
    n, _, h, w = value.shape
    require(1 <= n <= max_images, field, f"N must be 1..{max_images} (max_batch_images), got {n}")
    require(MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE, field,
            f"H and W must be {MIN_SIDE}..{MAX_SIDE}, got {h}x{w}")
    require(h * w <= max_pixels, field, f"{h}x{w} is above max_image_pixels")
    require(value.dtype in (np.float32, np.float16, np.float64), field, f"must be float, got {value.dtype}")
    value = value.astype(np.float32)
    require_finite(value, field)
    require(value.min() >= -1e-3 and value.max() <= 1 + 1e-3, field,
            f"values must be in [0, 1], got [{value.min():.3g}, {value.max():.3g}]")
    return np.clip(value, 0, 1)


def cameras(value: list, n: int, field: str) -> list:
    """0 or n PinholeCameras, each validated."""
    require(len(value) in (0, n), field, f"give 0 or {n} cameras, got {len(value)}")
    return [c.validate(f"{field}[{i}]") for i, c in enumerate(value)]


def background(value: np.ndarray | None, n: int, field: str) -> np.ndarray | None:
    """None, or (3,) / (n, 3) sRGB in [0, 1] -> (n, 3) float32."""
    if value is None:
        return None
    value = np.asarray(value)
    require(value.shape in ((3,), (n, 3)), field, f"must be (3,) or ({n}, 3), got {value.shape}")
    value = value.astype(np.float32)
    require_finite(value, field)
    require(value.min() >= 0 and value.max() <= 1, field, "values must be in [0, 1]")
    return np.ascontiguousarray(np.broadcast_to(value, (n, 3)))


def timesteps(s: TimestepSchedule, n: int) -> None:
    """Fractions in [0, 1], ranges ordered, a known sampling, 1 or n explicit timesteps."""
    for f in ("t_min", "t_max", "t_min_end", "t_max_end", "training_fraction"):
        v = getattr(s, f)
        require(math.isfinite(v) and 0 <= v <= 1, f"timesteps.{f}", f"must be in [0, 1], got {v}")
    require(s.t_min <= s.t_max, "timesteps.t_min", f"t_min {s.t_min} > t_max {s.t_max}")
    require(s.t_min_end <= s.t_max_end, "timesteps.t_min_end", f"t_min_end {s.t_min_end} > t_max_end {s.t_max_end}")
    require(s.sampling in ("uniform", "linear_decay"), "timesteps.sampling", f"unknown {s.sampling!r}")
    if s.t:
        require(len(s.t) in (1, n), "timesteps.t", f"give 1 or {n} values, got {len(s.t)}")
        require(all(math.isfinite(v) and 0 <= v <= 1 for v in s.t), "timesteps.t", "fractions must be in [0, 1]")


def resolution(value: int, info: BackboneInfo, field: str) -> int:
    """The working resolution in pixels (0 = the backbone's native one), a multiple of its latent scale factor."""
    r = value or info.native_resolution
    f = info.latent_scale_factor
    require(MIN_SIDE <= r <= MAX_SIDE and r % f == 0, field,
            f"must be a multiple of the latent scale factor {f} in {MIN_SIDE}..{MAX_SIDE}, got {r}")
    return r


def guidance_scale(scale: float, default: float = 7.5) -> float:
    """The classifier-free guidance scale (0 = default), >= 1."""
    g = scale or default
    require(math.isfinite(g) and g >= 1, "guidance_scale", f"must be >= 1, got {scale}")
    return g


def scheduler(name: str, info: BackboneInfo) -> str:
    """A sampler the backbone offers ("" = "ddim")."""
    name = name or "ddim"
    require(name in info.schedulers, "scheduler", f"unknown scheduler {name!r}; one of {list(info.schedulers)}")
    return name


def noise(given: np.ndarray | None, shape: tuple, seed: int, field: str) -> torch.Tensor:
    """The caller's noise (it must have `shape` and be finite), else standard normal noise drawn on the CPU from
    `seed`, float32."""
    if given is not None:
        require(tuple(given.shape) == tuple(shape), field, f"must have shape {tuple(shape)}, got {tuple(given.shape)}")
        given = given.astype(np.float32)
        require_finite(given, field)
        return torch.from_numpy(given)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed % (2 ** 63)))


def mask(value: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
    """(1, H, W) or (N, 1, H, W), float in [0, 1] or uint8 0/255 -> (N, 1, H, W) float32 in [0, 1]."""
    require(isinstance(value, np.ndarray) and value.shape in ((1, h, w), (n, 1, h, w)), "mask",
            f"must be (1, {h}, {w}) or ({n}, 1, {h}, {w}), got {getattr(value, 'shape', None)}")
    m = value.astype(np.float32) / (255.0 if value.dtype == np.uint8 else 1.0)
    require_finite(m, "mask")
    require(m.min() >= 0 and m.max() <= 1, "mask", "values must be in [0, 1] (UINT8: 0 or 255)")
    return np.broadcast_to(m.reshape(-1, 1, h, w), (n, 1, h, w)).copy()
