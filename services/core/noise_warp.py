"""Warping diffusion noise between views so that it stays i.i.d. standard normal (multi-view noise
resampling, PortraitDiffusion eq. 12-13; the warp is the "integral noise" of Chang et al. 2024, "How I
Warped Your Noise").

The paper lifts the driving view's anchor noise into the point cloud of that view's rendered depth,
renders it into the next view and refills the voids with fresh noise. A plain nearest-neighbour or
bilinear warp of a noise image does not stay white noise (values repeat where the target magnifies,
bilinear blends shrink the variance), so here:

1. Conditional upsampling: each source pixel value x (one per channel) becomes k x k sub-samples
   s_ij = x / k + (z_ij - mean(z)), z_ij ~ N(0, 1) i.i.d. Then var(s_ij) = 1/k^2 + (1 - 1/k^2) = 1, the
   covariance of two sub-samples of one pixel is 1/k^2 - 1/k^2 = 0, and sum_ij s_ij / k = x: the
   sub-samples are i.i.d. N(0, 1) and sum back (divided by sqrt(k^2)) to the pixel they came from.
2. Each sub-sample centre is lifted with its pixel's depth (world units along the source camera's +z)
   and projected into the target camera; it lands in one target pixel.
3. Each target pixel is the sum of the sub-samples that land in it divided by sqrt(count). Distinct
   target pixels use disjoint sets of i.i.d. N(0, 1) sub-samples, so the result is again i.i.d. N(0, 1)
   whatever the geometry (magnification, foreshortening, occlusion).
4. Target pixels that no sub-sample reaches (outside the source view, disocclusions, background where
   the source depth is 0) get fresh N(0, 1) from the caller's Generator; `mask` says which were warped.

Occlusion: a z-buffer per target pixel. The nearest landing depth z_min of each target pixel wins, and
the sub-samples within a relative band (z <= z_min * (1 + depth_tolerance)) count as the same visible
surface and are all summed; farther ones are behind it and dropped. A per-sub-pixel winner (one sample
per target pixel) would also stay N(0, 1), but it throws away the area integral that makes the warped
noise follow the surface (a target pixel covering four source pixels should carry all four); summing
everything that lands without a z-buffer would let the back of the head bleed through the front. The
tolerance band is what separates "same surface, slightly different depth across the pixel" from
"another surface behind it"; it is relative so that it does not depend on the scene's scale.

Conventions: services/core/cameras.py (OpenCV pinhole, world-to-camera 4x4, pixel (i, j) centre at
x = j + 0.5, y = i + 0.5 as services/core/camera_batch.py). Pure torch, float32 on the input's device.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from services.core.cameras import PinholeCamera


def upsample_noise(noise: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Conditional k x k upsampling of white noise: (C, H, W) -> (C, H*k, W*k), every sub-sample
    N(0, 1) i.i.d. given nothing, and each pixel's k^2 sub-samples sum to k * that pixel's value
    (module docstring, step 1). k = 1 returns the input."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k == 1:
        return noise
    c, h, w = noise.shape
    z = torch.randn((c, h, w, k, k), generator=generator, dtype=noise.dtype, device=noise.device)
    sub = noise[..., None, None] / k + (z - z.mean(dim=(-2, -1), keepdim=True))
    return sub.permute(0, 1, 3, 2, 4).reshape(c, h * k, w * k)


def _as_tensor(a, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, np.float64), dtype=torch.float64, device=device)


def _landing(depth: torch.Tensor, source: PinholeCamera, target: PinholeCamera, k: int,
             depth_tolerance: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the source's k x k sub-pixel samples land in the target, after the z-buffer (module
    docstring, steps 2-3). depth (1, H, W). Returns (keep (H*k*W*k,) bool: the sample is visible in the
    target; idx (H*k*W*k,) long: its flattened target pixel row * Wt + col, meaningful where keep).
    Samples are ordered as upsample_noise lays them out (row-major over the (H*k, W*k) grid)."""
    _, h, w = depth.shape
    dev = depth.device
    offs = (torch.arange(k, dtype=torch.float64, device=dev) + 0.5) / k
    ys = (torch.arange(h, dtype=torch.float64, device=dev)[:, None] + offs[None]).reshape(-1)   # (H*k,)
    xs = (torch.arange(w, dtype=torch.float64, device=dev)[:, None] + offs[None]).reshape(-1)   # (W*k,)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    d = depth[0].double().repeat_interleave(k, 0).repeat_interleave(k, 1).reshape(-1)   # (P,)
    good = torch.isfinite(d) & (d > 0)
    d = torch.where(good, d, torch.zeros_like(d))
    pix = torch.stack([xx, yy, torch.ones_like(xx)], -1).reshape(-1, 3)            # (P, 3)
    cam = (pix @ torch.linalg.inv(_as_tensor(source.K, dev)).T) * d[:, None]       # source camera frame
    c2w = torch.linalg.inv(_as_tensor(source.world_to_camera, dev))
    world = cam @ c2w[:3, :3].T + c2w[:3, 3]
    w2c_t = _as_tensor(target.world_to_camera, dev)
    cam_t = world @ w2c_t[:3, :3].T + w2c_t[:3, 3]
    uvw = cam_t @ _as_tensor(target.K, dev).T
    z_t = cam_t[:, 2]
    valid = good & (z_t > 1e-9)
    zs = z_t.clamp_min(1e-9)
    col, row = torch.floor(uvw[:, 0] / zs), torch.floor(uvw[:, 1] / zs)
    ht, wt = int(target.height), int(target.width)
    valid &= (col >= 0) & (col < wt) & (row >= 0) & (row < ht)
    idx = (row.clamp(0, ht - 1) * wt + col.clamp(0, wt - 1)).long()
    # z-buffer: the nearest landing depth per target pixel, and the samples within the band behind it
    zmin = torch.full((ht * wt,), math.inf, dtype=torch.float64, device=dev)
    zmin.scatter_reduce_(0, idx[valid], z_t[valid], reduce="amin")
    keep = valid & (z_t <= zmin[idx] * (1 + depth_tolerance))
    return keep, idx


def _check(values: torch.Tensor, depth: torch.Tensor, source: PinholeCamera, what: str) -> torch.Tensor:
    if values.dim() != 3:
        raise ValueError(f"{what} must be (C, H, W), got {tuple(values.shape)}")
    _, h, w = values.shape
    depth = depth.reshape(-1, depth.shape[-2], depth.shape[-1])
    if depth.shape != (1, h, w):
        raise ValueError(f"depth must be (1, {h}, {w}) like {what}, got {tuple(depth.shape)}")
    if (source.height, source.width) != (h, w):
        raise ValueError(f"source camera is {source.width}x{source.height}, {what} is {w}x{h}")
    return depth.to(values.device)


def warp_noise(noise: torch.Tensor, depth: torch.Tensor, source: PinholeCamera, target: PinholeCamera, *,
               k: int = 2, depth_tolerance: float = 0.02,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp standard-normal `noise` seen from `source` into `target` through the source's depth.

    noise (C, H, W) i.i.d. N(0, 1) at the source camera's size (H = source.height, W = source.width);
    depth (1, H, W) or (H, W), world units along the source camera's +z (the render service's "depth"),
    <= 0 or non-finite where nothing was rendered (those pixels carry no sample). k: sub-samples per pixel
    side (module docstring). depth_tolerance: the relative z-buffer band. generator: for the sub-samples
    and the refill (seeded: the same call gives the same noise).

    Returns (warped (C, Ht, Wt) float32, i.i.d. N(0, 1); mask (1, Ht, Wt) bool, True where the value was
    warped from the source, False where it was refilled with fresh noise). Ht, Wt = target.height, width.
    """
    depth = _check(noise, depth, source, "noise")
    c = noise.shape[0]
    noise = noise.float()
    sub = upsample_noise(noise, k, generator).reshape(c, -1)                       # (C, P)
    keep, idx = _landing(depth, source, target, k, depth_tolerance)
    ht, wt = int(target.height), int(target.width)
    ki = idx[keep]
    count = torch.bincount(ki, minlength=ht * wt).to(torch.float32)                 # (Ht*Wt,)
    total = torch.zeros((c, ht * wt), dtype=torch.float32, device=noise.device)
    total.index_add_(1, ki, sub[:, keep])
    warped = count > 0
    fresh = torch.randn((c, ht * wt), generator=generator, dtype=torch.float32, device=noise.device)
    out = torch.where(warped, total / count.clamp_min(1).sqrt(), fresh)
    return out.reshape(c, ht, wt), warped.reshape(1, ht, wt)


def warp_image(image: torch.Tensor, depth: torch.Tensor, source: PinholeCamera, target: PinholeCamera, *,
               k: int = 2, depth_tolerance: float = 0.02, fill: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The same splat for an image (C, H, W) (colours, latents, x0 predictions): each target pixel is the
    MEAN of the source pixel values whose sub-samples land in it (an image keeps its values, noise its
    variance). Returns (warped (C, Ht, Wt), `fill` where nothing lands; mask (1, Ht, Wt) bool)."""
    depth = _check(image, depth, source, "image")
    c = image.shape[0]
    sub = image.float().repeat_interleave(k, 1).repeat_interleave(k, 2).reshape(c, -1)
    keep, idx = _landing(depth, source, target, k, depth_tolerance)
    ht, wt = int(target.height), int(target.width)
    ki = idx[keep]
    count = torch.bincount(ki, minlength=ht * wt).to(torch.float32)
    total = torch.zeros((c, ht * wt), dtype=torch.float32, device=image.device)
    total.index_add_(1, ki, sub[:, keep])
    warped = count > 0
    out = torch.where(warped, total / count.clamp_min(1), torch.full_like(total, fill))
    return out.reshape(c, ht, wt), warped.reshape(1, ht, wt)


def resample(eps_anchor: torch.Tensor, s: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's per-iteration noise (eq. 12): sqrt(1 - s^2) * eps_anchor + s * xi, xi ~ N(0, I) of
    eps_anchor's shape, s in [0, 1]. Standard normal in, standard normal out; s = 0 returns eps_anchor
    exactly (no xi is drawn), s = 1 fresh noise independent of it."""
    if not 0.0 <= s <= 1.0:
        raise ValueError(f"s must be in [0, 1], got {s}")
    if s == 0:
        return eps_anchor.clone()
    xi = torch.randn(eps_anchor.shape, generator=generator, dtype=eps_anchor.dtype, device=eps_anchor.device)
    if s == 1:
        return xi
    return math.sqrt(1 - s * s) * eps_anchor + s * xi
