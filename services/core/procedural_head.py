"""A procedural textured head: the known ground truth for renderer fit tests, benchmarks and the
guidance service's oracle prior (a test prior).

An analytic signed distance field (smooth union of ellipsoids: cranium, jaw, nose, ears, neck) with an
albedo field (skin with fine variation, hair, brows, eyes, lips), in the world conventions (+Y up, face
toward +Z, radius about 1). It is rendered by sphere tracing, independently of every representation
under test, and can be meshed by marching cubes.

The shape and the default albedo are left/right symmetric. With `markings=True` the albedo gets one
saturated green patch (MARKING_RGB) on the +X cheek and temple (the subject's left; seen by a camera at
azimuth +90) and none on -X, so a mirrored convention shows: in a frontal view (azimuth 0, camera on +Z,
world up on screen up) +X is on the image's right, so the patch is in the right half of the image.
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

# Known expression variants of the head (a test ground truth for per-expression shape codes): part index
# -> (centre, radii) replacing that part of _PARTS. Each moves the lower face's surface by up to 0.2 world
# units (two cells of a 32-cell grid over [-1.6, 1.6]).
EXPRESSIONS: dict[str, dict[int, tuple]] = {
    "neutral": {},
    "jaw_open": {1: ((0.0, -0.45, 0.22), (0.60, 0.70, 0.66))},        # the jaw drops and lengthens
    "cheeks_puffed": {1: ((0.0, -0.33, 0.28), (0.78, 0.60, 0.74))},   # wider and fuller cheeks
}

# markings=True: albedo inside this ball (centre, radius; world units) is MARKING_RGB. It cuts the +X
# cheek and temple (clear of the eye, brow and ear) and nothing on -X.
MARKING_BALL = ((0.6, 0.0, 0.5), 0.22)
MARKING_RGB = (0.1, 0.85, 0.2)


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


def _parts(expression: str) -> list:
    if expression not in EXPRESSIONS:
        raise ValueError(f"unknown expression {expression!r}; the head has {sorted(EXPRESSIONS)}")
    return [EXPRESSIONS[expression].get(i, part) for i, part in enumerate(_PARTS)]


def head_sdf(p: torch.Tensor, expression: str = "neutral") -> torch.Tensor:
    """Signed distance (approximately, a lower bound) for points p (..., 3); negative inside. expression:
    one of EXPRESSIONS (ValueError otherwise)."""
    parts = _parts(expression)
    d = _ellipsoid_sdf(p, *parts[0])
    for centre, radii in parts[1:]:
        d = _smooth_min(d, _ellipsoid_sdf(p, centre, radii), _SMOOTH)
    return torch.maximum(d, -(p[..., 1] + 1.45))  # neck cut flat at y = -1.45


def head_albedo(p: torch.Tensor, markings: bool = False) -> torch.Tensor:
    """sRGB albedo in [0, 1] for surface points p (..., 3); markings: the +X-only patch (module docstring)."""
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
    if markings:
        centre, radius = MARKING_BALL
        patch = (p - p.new_tensor(centre)).norm(dim=-1) < radius
        colour = torch.where(patch[..., None], colour.new_tensor(MARKING_RGB), colour)
    return colour.clamp(0, 1)


def _normals(p: torch.Tensor, expression: str = "neutral") -> torch.Tensor:
    eps = 1e-3
    offsets = torch.eye(3, dtype=p.dtype, device=p.device) * eps
    grad = torch.stack([head_sdf(p + o, expression) - head_sdf(p - o, expression) for o in offsets], -1)
    return grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _trace(cameras: CameraBatch, supersample: int, steps: int, expression: str = "neutral"):
    """Sphere-trace at `supersample` x the cameras' size: (the supersampled cameras, surface points
    (N, Hs, Ws, 3), zero at misses, hit mask (N, Hs, Ws, 1) float)."""
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
        d = head_sdf(p, expression)
        hit = hit | (d.abs() < 1e-4)
        t = torch.where(hit | (t > 10), t, t + 0.9 * d.clamp_min(-0.05))
    p = origins + dirs * t[..., None]
    hit = hit & (head_sdf(p, expression).abs() < 1e-3) & (t < 10)
    p = torch.where(hit[..., None], p, torch.zeros_like(p))  # misses: keep the maths finite
    return hi, p, hit.to(origins.dtype)[..., None]


def _down(a: torch.Tensor, s: int) -> torch.Tensor:
    """(N, Hs, Ws, C) -> (N, C, H, W) box filter."""
    return torch.nn.functional.avg_pool2d(a.permute(0, 3, 1, 2), s)


@torch.no_grad()
def render_head(cameras: CameraBatch, background: torch.Tensor | None = None, supersample: int = 2,
                steps: int = 96, markings: bool = False, expression: str = "neutral") -> dict[str, torch.Tensor]:
    """Sphere-trace the head: rgb (N, 3, H, W), alpha, depth (N, 1, H, W), normal_camera, normal_world
    (N, 3, H, W); `supersample`^2 rays per pixel averaged, so edges are anti-aliased. background: (3,)
    or (N, 3) in [0, 1], default white. The normals here are re-normalised to unit length wherever alpha > 0
    (head_normals gives the render service's alpha-weighted encoding). markings: the +X-only patch;
    expression: one of EXPRESSIONS."""
    s = supersample
    hi, p, alpha = _trace(cameras, s, steps, expression)
    bg = torch.ones(3, dtype=p.dtype) if background is None else background.to(p.dtype)
    if bg.dim() == 2:
        bg = bg[:, None, None, :]                                   # (N, 3) -> per camera
    rgb = head_albedo(p, markings) * alpha + bg * (1 - alpha)
    n_world = _normals(p, expression) * alpha
    w2c = hi.world_to_camera
    n_cam = torch.einsum("nij,nhwj->nhwi", w2c[:, :3, :3], n_world)
    z = torch.einsum("nj,nhwj->nhw", w2c[:, 2, :3], p) + w2c[:, 2, 3][:, None, None]
    depth = (z * alpha[..., 0])[..., None]

    out = {"rgb": _down(rgb, s), "alpha": _down(alpha, s)}
    a = out["alpha"].clamp_min(1e-6)
    out["depth"] = torch.where(out["alpha"] > 0, _down(depth, s) / a, torch.zeros_like(a))
    for name, n in (("normal_world", n_world), ("normal_camera", n_cam)):
        v = _down(n, s)
        out[name] = v / v.norm(dim=1, keepdim=True).clamp_min(1e-6) * (out["alpha"] > 0)
    return out


@torch.no_grad()
def head_normals(cameras: CameraBatch, frame: str = "world", supersample: int = 2, steps: int = 96,
                 expression: str = "neutral") -> torch.Tensor:
    """The head's normals (N, 3, H, W) in the render service's "normal_world" / "normal_camera" encoding
    (services/render/representations/base.py): unit normals weighted by coverage, so in [-1, 1] with
    length <= alpha at anti-aliased silhouettes and 0 on the background. frame: "world" or "camera"
    (OpenCV camera frame: x right, y down, z forward). As guidance normal pictures (guidance.proto):
    (head_normals(cams, "camera") + 1) / 2."""
    if frame not in ("world", "camera"):
        raise ValueError(f"frame must be 'world' or 'camera', got {frame!r}")
    hi, p, alpha = _trace(cameras, supersample, steps, expression)
    n = _normals(p, expression) * alpha
    if frame == "camera":
        n = torch.einsum("nij,nhwj->nhwi", hi.world_to_camera[:, :3, :3], n)
    return _down(n, supersample)


def head_mesh(resolution: int = 96, markings: bool = False,
              expression: str = "neutral") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marching-cubes mesh of the head: vertices (V, 3) float32, faces (F, 3) int32 (counter-clockwise
    from outside), vertex colours (V, 3) float32 in [0, 1] (with the +X-only patch when markings)."""
    from skimage.measure import marching_cubes

    lin = torch.linspace(-1.6, 1.6, resolution, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1)
    sdf = head_sdf(grid, expression).numpy()
    verts, faces, _, _ = marching_cubes(sdf, level=0.0, spacing=(float(lin[1] - lin[0]),) * 3)
    verts = verts - 1.6
    # skimage's winding (its gradient direction) already makes faces counter-clockwise seen from outside
    colours = head_albedo(torch.as_tensor(verts), markings).numpy()
    return verts.astype(np.float32), faces.astype(np.int32), colours.astype(np.float32)
