"""A procedural textured head: the ground truth for renderer fit tests and benchmarks.

An analytic signed distance field (smooth union of ellipsoids: cranium, jaw, nose, ears, neck) with an
albedo field (skin with fine variation, hair, brows, eyes, lips), in the world conventions (+Y up, face
toward +Z, radius about 1). It is rendered by sphere tracing, independently of every representation
under test, and can be meshed by marching cubes.
"""

from __future__ import annotations

import numpy as np
import torch

from services.core.camera_batch import CameraBatch

# (centre, radii) of each part, world units
_PARTS = [
    ((0.0, 0.15, -0.05), (0.78, 0.90, 0.95)),   # cranium
    ((0.0, -0.35, 0.22), (0.62, 0.60, 0.66)),   # jaw and cheeks
    ((0.0, -0.08, 0.86), (0.11, 0.20, 0.16)),   # nose
    ((0.78, -0.05, -0.05), (0.09, 0.22, 0.14)),  # left ear (+X)
    ((-0.78, -0.05, -0.05), (0.09, 0.22, 0.14)),  # right ear
    ((0.0, -0.95, -0.10), (0.36, 0.55, 0.36)),   # neck
]
_SMOOTH = 0.08


def _ellipsoid_sdf(p: torch.Tensor, centre, radii) -> torch.Tensor:
    c = p.new_tensor(centre)
    r = p.new_tensor(radii)
    q = (p - c) / r
    k0 = q.norm(dim=-1)
    k1 = (q / r).norm(dim=-1)
    return k0 * (k0 - 1.0) / k1.clamp_min(1e-9)  # a good bound near and away from the surface


def _smooth_min(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    h = (0.5 + 0.5 * (b - a) / k).clamp(0, 1)
    return b * (1 - h) + a * h - k * h * (1 - h)


def head_sdf(p: torch.Tensor) -> torch.Tensor:
    """Signed distance (approximately, a lower bound) for points p (..., 3); negative inside."""
    d = _ellipsoid_sdf(p, *_PARTS[0])
    for centre, radii in _PARTS[1:]:
        d = _smooth_min(d, _ellipsoid_sdf(p, centre, radii), _SMOOTH)
    return torch.maximum(d, -(p[..., 1] + 1.45))  # neck cut flat at y = -1.45


def head_albedo(p: torch.Tensor) -> torch.Tensor:
    """sRGB albedo in [0, 1] for surface points p (..., 3)."""
    x, y, z = p.unbind(-1)
    skin = torch.stack([0.86 + 0 * x, 0.64 + 0 * x, 0.52 + 0 * x], -1)
    skin = skin * (1 + 0.06 * torch.sin(9 * x) * torch.sin(7 * y + 2 * z))[..., None]
    colour = skin
    hair = torch.stack([0.28 + 0.04 * torch.sin(25 * y), 0.17 + 0 * x, 0.09 + 0 * x], -1)
    hairline = y > 0.42 - 0.25 * torch.relu(-z) + 0.08 * torch.cos(3 * x)
    back = (z < -0.25) & (y > -0.55)
    colour = torch.where((hairline | back)[..., None], hair, colour)
    for sx in (-1.0, 1.0):
        eye = ((x - 0.27 * sx) ** 2 + ((y - 0.08) * 1.7) ** 2 < 0.09 ** 2) & (z > 0.5)
        iris = ((x - 0.27 * sx) ** 2 + (y - 0.08) ** 2 < 0.045 ** 2) & (z > 0.5)
        brow = ((x - 0.28 * sx) ** 2 / 0.16 ** 2 + (y - 0.25) ** 2 / 0.03 ** 2 < 1) & (z > 0.5)
        colour = torch.where(eye[..., None], colour.new_tensor([0.95, 0.95, 0.93]), colour)
        colour = torch.where(iris[..., None], colour.new_tensor([0.20, 0.30, 0.45]), colour)
        colour = torch.where(brow[..., None], colour.new_tensor([0.25, 0.15, 0.08]), colour)
    lips = (x ** 2 / 0.2 ** 2 + (y + 0.47) ** 2 / 0.06 ** 2 < 1) & (z > 0.5)
    colour = torch.where(lips[..., None], colour.new_tensor([0.72, 0.32, 0.33]), colour)
    return colour.clamp(0, 1)


def _normals(p: torch.Tensor) -> torch.Tensor:
    eps = 1e-3
    offsets = torch.eye(3, dtype=p.dtype, device=p.device) * eps
    grad = torch.stack([head_sdf(p + o) - head_sdf(p - o) for o in offsets], -1)
    return grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def render_head(cameras: CameraBatch, background: torch.Tensor | None = None, supersample: int = 2,
                steps: int = 96) -> dict[str, torch.Tensor]:
    """Sphere-trace the head: rgb (N, 3, H, W), alpha, depth (N, 1, H, W), normal_camera, normal_world
    (N, 3, H, W); `supersample`^2 rays per pixel averaged, so edges are anti-aliased."""
    s = supersample
    hi = CameraBatch(cameras.K.clone(), cameras.world_to_camera, cameras.width * s, cameras.height * s)
    hi.K[:, :2] *= s
    origins, dirs = hi.pixel_rays()
    t = torch.zeros(origins.shape[:-1], dtype=origins.dtype)
    # start at the bounding sphere (radius 2) to save steps
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - 4.0
    disc = b * b - c
    t = torch.where(disc > 0, (-b - disc.clamp_min(0).sqrt()).clamp_min(0), t)
    hit = torch.zeros_like(t, dtype=torch.bool)
    for _ in range(steps):
        p = origins + dirs * t[..., None]
        d = head_sdf(p)
        hit = hit | (d.abs() < 1e-4)
        t = torch.where(hit | (t > 10), t, t + 0.9 * d.clamp_min(-0.05))
    p = origins + dirs * t[..., None]
    hit = hit & (head_sdf(p).abs() < 1e-3) & (t < 10)
    p = torch.where(hit[..., None], p, torch.zeros_like(p))  # misses: keep the maths finite
    bg = torch.ones(3, dtype=origins.dtype) if background is None else background.to(origins.dtype)
    alpha = hit.to(origins.dtype)[..., None]
    rgb = head_albedo(p) * alpha + bg * (1 - alpha)
    n_world = _normals(p) * alpha
    w2c = hi.world_to_camera
    n_cam = torch.einsum("nij,nhwj->nhwi", w2c[:, :3, :3], n_world)
    z = torch.einsum("nj,nhwj->nhw", w2c[:, 2, :3], p) + w2c[:, 2, 3][:, None, None]
    depth = (z * alpha[..., 0])[..., None]

    def down(a: torch.Tensor) -> torch.Tensor:  # (N, Hs, Ws, C) -> (N, C, H, W) box filter
        return torch.nn.functional.avg_pool2d(a.permute(0, 3, 1, 2), s)

    out = {"rgb": down(rgb), "alpha": down(alpha)}
    a = out["alpha"].clamp_min(1e-6)
    out["depth"] = torch.where(out["alpha"] > 0, down(depth) / a, torch.zeros_like(a))
    for name, n in (("normal_world", n_world), ("normal_camera", n_cam)):
        v = down(n)
        out[name] = v / v.norm(dim=1, keepdim=True).clamp_min(1e-6) * (out["alpha"] > 0)
    return out


def head_mesh(resolution: int = 96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marching-cubes mesh of the head: vertices (V, 3) float32, faces (F, 3) int32 (counter-clockwise
    from outside), vertex colours (V, 3) float32 in [0, 1]."""
    from skimage.measure import marching_cubes

    lin = torch.linspace(-1.6, 1.6, resolution, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1)
    sdf = head_sdf(grid).numpy()
    verts, faces, _, _ = marching_cubes(sdf, level=0.0, spacing=(float(lin[1] - lin[0]),) * 3)
    verts = verts - 1.6
    # skimage's winding (its gradient direction) already makes faces counter-clockwise seen from outside
    colours = head_albedo(torch.as_tensor(verts)).numpy()
    return verts.astype(np.float32), faces.astype(np.int32), colours.astype(np.float32)
