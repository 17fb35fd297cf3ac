"""Volume rendering of density + colour fields along camera rays: ray/box limits, stratified and
importance sampling, alpha compositing. Shared by the render service's field scenes (tri-plane,
tri-grid, pyramid tri-grid) and the inversion service's 3D-GAN generators, so a field renders the same
wherever it lives.

The field is any callable `query(points) -> (raw_density, colour)`: points (P, 3) in world units,
raw_density (P,) *before* the density activation, colour (P, K) (K >= 3; the first three are RGB in
[0, 1], the rest optional features for a super-resolution head).

Integration follows EG3D's MipRayMarcher2, so generators trained with it render as trained: sample
distances t_0 < ... < t_{S-1} along each (unit-length) ray; each interval [t_i, t_i+1] takes the mean
of its end points' raw density and colour, the density activation is applied to that mean, and
  tau_i = sigma_i * (t_{i+1} - t_i),  w_i = exp(-sum_{j<i} tau_j) * (1 - exp(-tau_i)),
  colour = sum_i w_i c_i,  alpha = sum_i w_i  (= 1 - exp(-sum tau), the coverage).
Densities are per world unit (the distance unit of `t`). EG3D's marcher maps colour to [-1, 1] at the
end (2c - 1); here colour stays in [0, 1] and is composited over a background: rgb = colour + (1 - alpha)
* background.

Density activations: "softplus" is EG3D's (and PanoHead's) softplus(raw - 1) (the -1 bias lowers the
initial density); "trunc_exp" is exp(raw) with the exponent capped at 15 in the forward and the
backward pass (instant-NGP / threestudio style, exp with truncated gradients).

Depth is the camera z (not the ray length): the alpha-normalised sum_i w_i t_mid_i times the cosine
between the ray and the camera's forward axis; 0 where alpha is ~0.

Normals are the normalised negative gradient of the raw density (its activation is monotonic, so the
direction is the same) at every sample, composited with the same weights, normalised per pixel and
multiplied by alpha (so (0, 0, 0) where nothing is hit). Two methods:
  "finite_difference" (default): central differences with step `normal_eps` world units (renderers pass
     one texel of the finest grid). This smooths over a texel: the exact gradient of a bilinearly
     interpolated grid is piecewise constant per texel and gives blocky normals. Costs 6 extra density
     queries per sample (forward + backward ~10x the colour-only render on CPU).
  "autograd": the exact gradient by torch.autograd (create_graph when gradients are needed, i.e. a
     double backward through grid_sample, which PyTorch supports). Forward + backward ~5x the
     colour-only render on CPU, and ~2.5x its memory.
Both are differentiable w.r.t. the field's parameters.

Memory: rays are processed in chunks of `chunk_rays`; when gradients are enabled and the render
evaluates more than `checkpoint_samples` field points, each chunk runs under (non-reentrant) activation
checkpointing, so only per-ray outputs stay alive between the forward and backward passes, at the price
of recomputing each chunk's forward during backward. Random numbers (stratified jitter,
importance-sampling uniforms) are drawn before chunking, so the recomputation sees the same samples.

One module (~480 lines) on purpose: sampling, compositing, normals and chunked marching share the
settings and the order in which random numbers are drawn; split apart, that order would be a contract
between modules.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Callable, Collection

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from services.core.camera_batch import CameraBatch

DENSITY_ACTIVATIONS = ("softplus", "trunc_exp")
NORMAL_METHODS = ("finite_difference", "autograd")
CHECKPOINT_MODES = ("auto", "always", "never")
# exponent cap of trunc_exp: exp(15) ~ 3.3e6 per world unit is opaque over any sample spacing
_TRUNC_EXP_MAX = 15.0

Query = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class _TruncExp(torch.autograd.Function):
    """exp(min(x, 15)) with gradient exp(min(x, 15)) everywhere (straight-through above the cap)."""

    @staticmethod
    def forward(ctx, x):
        y = torch.exp(x.clamp(max=_TRUNC_EXP_MAX))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y


def activate_density(raw: torch.Tensor, activation: str) -> torch.Tensor:
    """Raw decoder density (any shape) -> density >= 0 per world unit (same shape)."""
    if activation == "softplus":
        return F.softplus(raw - 1.0)
    if activation == "trunc_exp":
        return _TruncExp.apply(raw)
    raise ValueError(f"unknown density activation {activation!r}; expected one of {DENSITY_ACTIVATIONS}")


@dataclass(frozen=True)
class RaySettings:
    """The ray-marching settings a field scene (render FieldConfig) or a generator (inversion
    GeneratorConfig) declares: both inherit these fields, and volume_settings() turns them into the
    VolumeSettings a render uses, copying every one (meanings: VolumeSettings). Here normal_eps 0 means
    the owner's default step (one texel of its finest grid)."""

    samples_per_ray: int = 48
    importance_samples: int = 48
    ray_start: float = 0.0
    ray_end: float = 0.0
    density_activation: str = "softplus"
    density_scale: float = 1.0
    normal_method: str = "finite_difference"
    normal_eps: float = 0.0
    chunk_rays: int = 4096


def volume_settings(ray: RaySettings, box_size: float, default_normal_eps: float,
                    length_scale: float = 1.0) -> "VolumeSettings":
    """The VolumeSettings of a config holding RaySettings fields, with every field copied. box_size
    and default_normal_eps (used when ray.normal_eps is 0) are in world units; ray_start, ray_end and a
    given normal_eps are in the config's length units, multiplied by length_scale (world units per
    unit), and density_scale is divided by it (a density per config unit is 1 / length_scale of one per
    world unit). ValueError for invalid settings."""
    values = {f.name: getattr(ray, f.name) for f in fields(RaySettings)}
    values["ray_start"] *= length_scale
    values["ray_end"] *= length_scale
    values["density_scale"] /= length_scale
    values["normal_eps"] = values["normal_eps"] * length_scale or default_normal_eps
    return VolumeSettings(box_size=box_size, **values)


@dataclass(frozen=True)
class VolumeSettings(RaySettings):
    """How rays are sampled and integrated.

    samples_per_ray: stratified samples per ray (>= 2). importance_samples: extra samples drawn from the
    stratified pass's weights (>= 0; EG3D uses 48 + 48). box_size: half side of the field's box in world
    units; near/far are the ray's intersection with the box unless ray_start and ray_end (distances along
    the ray, world units) are both > 0, as in EG3D's fixed ray_start/ray_end: then samples outside the box
    are evaluated too (zero-padded features, so the decoder's response to zero features). normal_eps:
    finite-difference step in world units (> 0). chunk_rays: rays per chunk. checkpoint: "auto"
    (checkpoint chunks when gradients are on and a render evaluates more than `checkpoint_samples`
    field points, normal probes included: about 1 KB of saved activations each), "always", "never".
    density_scale: multiplies the activated density (> 0; 1 = densities per world unit). A field
    trained in other length units (a 3D-GAN whose head spans [-0.5, 0.5], rendered here in world units
    where it spans [-1, 1]) renders as trained with density_scale = 1 / (world units per its unit).
    """

    normal_eps: float = 1.0 / 128  # a VolumeSettings' step is always explicit (RaySettings' 0 = default)
    box_size: float = 1.0
    checkpoint: str = "auto"
    checkpoint_samples: int = 1 << 21

    def __post_init__(self):
        if not (self.density_scale > 0 and self.density_scale < float("inf")):
            raise ValueError(f"density_scale must be > 0, got {self.density_scale}")
        if self.samples_per_ray < 2:
            raise ValueError(f"samples_per_ray must be >= 2, got {self.samples_per_ray}")
        if self.importance_samples < 0:
            raise ValueError(f"importance_samples must be >= 0, got {self.importance_samples}")
        if not self.box_size > 0:
            raise ValueError(f"box_size must be > 0, got {self.box_size}")
        if self.fixed_range and not self.ray_end > self.ray_start:
            raise ValueError(f"ray_end ({self.ray_end}) must exceed ray_start ({self.ray_start})")
        if self.density_activation not in DENSITY_ACTIVATIONS:
            raise ValueError(f"density_activation must be one of {DENSITY_ACTIVATIONS}")
        if self.normal_method not in NORMAL_METHODS:
            raise ValueError(f"normal_method must be one of {NORMAL_METHODS}")
        if not self.normal_eps > 0:
            raise ValueError(f"normal_eps must be > 0, got {self.normal_eps}")
        if self.chunk_rays < 1:
            raise ValueError(f"chunk_rays must be >= 1, got {self.chunk_rays}")
        if self.checkpoint not in CHECKPOINT_MODES:
            raise ValueError(f"checkpoint must be one of {CHECKPOINT_MODES}")

    @property
    def fixed_range(self) -> bool:
        """True when near/far are ray_start/ray_end rather than the box intersection."""
        return self.ray_start > 0 and self.ray_end > 0

    def with_(self, **changes) -> "VolumeSettings":
        """A copy with some fields changed (validated)."""
        return replace(self, **changes)


# ---------------------------------------------------------------------------------------------------
# sampling


def ray_box_intersection(origins: torch.Tensor, dirs: torch.Tensor, half: float
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test against the box [-half, half]^3. origins, dirs (R, 3) world units (dirs unit length).
    Returns near (R,), far (R,) distances along the ray (near >= 0: a camera inside the box starts at 0)
    and hit (R,) bool (far > near)."""
    tiny = torch.finfo(dirs.dtype).tiny
    safe = torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12).copysign(dirs), dirs)
    inv = 1.0 / safe
    t0 = (-half - origins) * inv
    t1 = (half - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(0.0)
    far = torch.maximum(t0, t1).amin(-1)
    hit = far > near + tiny
    return near, far, hit


def stratified_samples(near: torch.Tensor, far: torch.Tensor, n: int,
                       jitter: torch.Tensor | None = None) -> torch.Tensor:
    """n sorted distances per ray in [near, far]: evenly spaced from near to far (both included) and,
    with jitter (R, n) uniform in [0, 1), each moved by (jitter - 0.5) spacings (clamped to the range).
    near, far (R,). Returns (R, n)."""
    s = torch.linspace(0.0, 1.0, n, dtype=near.dtype, device=near.device)
    span = (far - near)[:, None]
    t = near[:, None] + span * s
    if jitter is not None:
        t = torch.minimum(torch.maximum(t + (jitter - 0.5) * span / (n - 1), near[:, None]), far[:, None])
    return t


def _blur_weights(weights: torch.Tensor) -> torch.Tensor:
    """(R, S-1) interval weights -> the same smoothed: max of each pair of neighbours, then the mean of
    neighbouring maxima (mip-NeRF's 'blurpool', as EG3D does before importance sampling)."""
    padded = F.pad(weights, (1, 1))
    maxed = torch.maximum(padded[:, :-1], padded[:, 1:])
    return 0.5 * (maxed[:, :-1] + maxed[:, 1:])


@torch.no_grad()
def importance_samples(t: torch.Tensor, weights: torch.Tensor, n: int,
                       uniforms: torch.Tensor | None = None, floor: float = 0.01) -> torch.Tensor:
    """n distances per ray drawn from the piecewise-constant density given by the interval weights.

    t (R, S) sorted sample distances; weights (R, S-1) of the intervals between them (smoothed here and
    raised by `floor`, EG3D's 0.01, so empty rays still spread samples). uniforms (R, n) in [0, 1) for
    random draws; None = deterministic quantiles (i + 0.5) / n. Returns (R, n), not sorted, detached."""
    w = _blur_weights(weights) + floor
    cdf = torch.cumsum(w, -1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf / cdf[:, -1:]], -1)  # (R, S)
    if uniforms is None:
        u = (torch.arange(n, dtype=t.dtype, device=t.device) + 0.5) / n
        u = u.expand(t.shape[0], n).contiguous()
    else:
        u = uniforms.contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, t.shape[1] - 1)
    c_lo, c_hi = cdf.gather(1, idx - 1), cdf.gather(1, idx)
    t_lo, t_hi = t.gather(1, idx - 1), t.gather(1, idx)
    frac = ((u - c_lo) / (c_hi - c_lo).clamp_min(1e-12)).clamp(0, 1)
    return t_lo + frac * (t_hi - t_lo)


# ---------------------------------------------------------------------------------------------------
# compositing


def composite_weights(t: torch.Tensor, raw_density: torch.Tensor, activation: str,
                      density_scale: float = 1.0) -> torch.Tensor:
    """Interval weights (R, S-1) from sorted distances t (R, S) and raw densities (R, S) at the samples
    (interval density = density_scale * activation(mean of the end points' raw values), EG3D's midpoint
    rule)."""
    sigma = activate_density(0.5 * (raw_density[:, :-1] + raw_density[:, 1:]), activation)
    if density_scale != 1.0:
        sigma = sigma * density_scale
    tau = sigma * (t[:, 1:] - t[:, :-1])
    # exp(-cumsum) instead of cumprod(1 - alpha): exact transmittance, no 1e-10 fudge
    optical_depth = torch.cumsum(tau, -1)
    return torch.exp(tau - optical_depth) * (-torch.expm1(-tau))


def integrate(weights: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """sum_i w_i * mean(values_i, values_i+1): weights (R, S-1), values (R, S, K) -> (R, K)."""
    mid = 0.5 * (values[:, :-1] + values[:, 1:])
    return torch.einsum("rs,rsk->rk", weights, mid)


def _normals_at(query: Query, points: torch.Tensor, method: str, eps: float,
                raw: torch.Tensor | None = None) -> torch.Tensor:
    """Unit normals -grad(raw density) / |grad| at points (P, 3) -> (P, 3). For "autograd", `raw` must be
    the density of `points` computed with points.requires_grad."""
    if method == "autograd":
        (grad,) = torch.autograd.grad(raw.sum(), points, create_graph=torch.is_grad_enabled())
    else:
        offsets = torch.eye(3, dtype=points.dtype, device=points.device) * eps
        probes = torch.cat([points + offsets[k] for k in range(3)] + [points - offsets[k] for k in range(3)])
        d, _ = query(probes)
        d = d.view(6, -1)
        grad = (d[:3] - d[3:]).t() / (2 * eps)
    return -grad / torch.sqrt((grad * grad).sum(-1, keepdim=True) + 1e-20)


def _evaluate(query: Query, points: torch.Tensor, normals: str | None, eps: float
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Query points (R, S, 3) -> raw density (R, S), colour (R, S, K), unit normals (R, S, 3) or None."""
    R, S, _ = points.shape
    flat = points.reshape(-1, 3)
    if normals == "autograd":
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            flat = flat.detach().requires_grad_(True)
            raw, colour = query(flat)
            with torch.set_grad_enabled(outer):
                n = _normals_at(query, flat, "autograd", eps, raw)
        if not outer:
            raw, colour, n = raw.detach(), colour.detach(), n.detach()
    else:
        raw, colour = query(flat)
        n = _normals_at(query, flat, "finite_difference", eps) if normals else None
    return raw.view(R, S), colour.view(R, S, -1), None if n is None else n.view(R, S, 3)


def march_rays(query: Query, origins: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor,
               far: torch.Tensor, settings: VolumeSettings, *, want_normals: bool = False,
               jitter: torch.Tensor | None = None, uniforms: torch.Tensor | None = None,
               t: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Render one chunk of rays (no chunking, no checkpointing).

    origins, dirs (R, 3) world, dirs unit length; near, far (R,) distances along the ray. jitter (R, S)
    and uniforms (R, I) in [0, 1) make sampling random (None = deterministic). t (R, T): fixed sample
    distances (sorted per ray or not) replacing stratified + importance sampling (gradient checks,
    callers with their own sampler). Returns per ray: "colour" (R, K) composited without background,
    "alpha" (R,), "distance" (R,) the weighted sum of interval mid-point distances (not normalised),
    "normal" (R, 3) world normals composited (not normalised) when want_normals.
    """
    normals = settings.normal_method if want_normals else None
    eps = settings.normal_eps

    def points_at(ts: torch.Tensor) -> torch.Tensor:
        return origins[:, None] + ts[..., None] * dirs[:, None]

    if t is None:
        t = stratified_samples(near, far, settings.samples_per_ray, jitter)
        raw, colour, n = _evaluate(query, points_at(t), normals, eps)
        if settings.importance_samples > 0:
            with torch.no_grad():
                w = composite_weights(t, raw, settings.density_activation, settings.density_scale)
            t_fine = importance_samples(t, w, settings.importance_samples, uniforms)
            raw_f, colour_f, n_f = _evaluate(query, points_at(t_fine), normals, eps)
            t, raw, colour, n = _merge(t, t_fine, raw, raw_f, colour, colour_f, n, n_f)
    else:
        t = torch.sort(t, dim=-1).values
        raw, colour, n = _evaluate(query, points_at(t), normals, eps)
    w = composite_weights(t, raw, settings.density_activation, settings.density_scale)
    out = {"colour": integrate(w, colour), "alpha": w.sum(-1),
           "distance": (w * 0.5 * (t[:, :-1] + t[:, 1:])).sum(-1)}
    if n is not None:
        out["normal"] = integrate(w, n)
    return out


def _merge(t, t2, raw, raw2, colour, colour2, n, n2):
    """Concatenate two sets of samples per ray and sort them by distance."""
    t_all, order = torch.sort(torch.cat([t, t2], -1), dim=-1)
    raw_all = torch.cat([raw, raw2], -1).gather(1, order)
    c = torch.cat([colour, colour2], 1)
    colour_all = c.gather(1, order[..., None].expand(-1, -1, c.shape[-1]))
    n_all = None
    if n is not None:
        n_all = torch.cat([n, n2], 1).gather(1, order[..., None].expand(-1, -1, 3))
    return t_all, raw_all, colour_all, n_all


def render_rays(query: Query, origins: torch.Tensor, dirs: torch.Tensor, settings: VolumeSettings, *,
                want_normals: bool = False, generator: torch.Generator | None = None,
                perturb: bool = False, t: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Render R rays in chunks. origins, dirs (R, 3) world units, dirs unit length.

    perturb: jittered stratified samples and random importance samples drawn from `generator`
    (training); False renders deterministically. t (R, T): fixed sample distances (see march_rays).
    Returns per ray "colour" (R, K), "alpha" (R,), "distance" (R,) (alpha-weighted ray distance, not
    normalised), and "normal" (R, 3) when want_normals; rays that miss the box get zeros.
    """
    R = origins.shape[0]
    if settings.fixed_range:
        near = origins.new_full((R,), settings.ray_start)
        far = origins.new_full((R,), settings.ray_end)
        idx = None
    else:
        near, far, hit = ray_box_intersection(origins, dirs, settings.box_size)
        idx = hit.nonzero().squeeze(1) if not bool(hit.all()) else None
    jitter = uniforms = None
    if perturb and t is None:
        # drawn where the generator lives (a CPU generator may drive a CUDA render), then moved
        kw = dict(generator=generator, dtype=origins.dtype,
                  device=generator.device if generator is not None else origins.device)
        jitter = torch.rand((R, settings.samples_per_ray), **kw).to(origins.device)
        if settings.importance_samples:
            uniforms = torch.rand((R, settings.importance_samples), **kw).to(origins.device)

    def take(x):
        return x if x is None or idx is None else x[idx]

    o, d, nr, fr, jt, un, tt = map(take, (origins, dirs, near, far, jitter, uniforms, t))
    M = o.shape[0]
    chunk = settings.chunk_rays
    per_ray = (settings.samples_per_ray + settings.importance_samples) if t is None else t.shape[1]
    if want_normals:  # probes (6 per sample), or the double-backward graph of autograd normals
        per_ray *= 7 if settings.normal_method == "finite_difference" else 3
    use_ckpt = settings.checkpoint == "always" or (
        settings.checkpoint == "auto" and torch.is_grad_enabled() and M > chunk
        and M * per_ray > settings.checkpoint_samples)
    parts = []
    for s in range(0, M, chunk):
        sl = slice(s, s + chunk)
        args = [x[sl] if x is not None else None for x in (o, d, nr, fr, jt, un, tt)]

        def run(o_, d_, nr_, fr_, jt_, un_, tt_):
            out = march_rays(query, o_, d_, nr_, fr_, settings, want_normals=want_normals,
                             jitter=jt_, uniforms=un_, t=tt_)
            return tuple(out[k] for k in _KEYS if k in out)

        res = checkpoint(run, *args, use_reentrant=False) if use_ckpt else run(*args)
        parts.append(res)
    keys = [k for k in _KEYS if want_normals or k != "normal"]
    if parts:
        merged = {k: torch.cat([p[i] for p in parts]) for i, k in enumerate(keys)}
    else:  # no ray hits the box: ask the field for the colour width with one dummy point
        K = query(origins[:1])[1].shape[-1]
        merged = {"colour": origins.new_zeros((0, K)), "alpha": origins.new_zeros(0),
                  "distance": origins.new_zeros(0), "normal": origins.new_zeros((0, 3))}
        merged = {k: merged[k] for k in keys}
    if idx is None:
        return merged
    return {k: v.new_zeros((R, *v.shape[1:])).index_copy(0, idx, v) for k, v in merged.items()}


_KEYS = ("colour", "alpha", "distance", "normal")


# ---------------------------------------------------------------------------------------------------
# cameras -> images


def _background_image(background: torch.Tensor | None, n: int, h: int, w: int, like: torch.Tensor
                      ) -> torch.Tensor:
    """(3,), (N, 3), (3, H, W) or (N, 3, H, W) in [0, 1] (None = white) -> broadcastable to (N, 3, H, W)."""
    if background is None:
        return like.new_ones((1, 3, 1, 1))
    bg = background.to(dtype=like.dtype, device=like.device)
    if bg.dim() == 1:
        return bg.view(1, 3, 1, 1)
    if bg.dim() == 2:
        return bg.view(n, 3, 1, 1)
    if bg.dim() == 3:
        return bg.view(1, 3, h, w)
    return bg


def render_cameras(query: Query, cameras: CameraBatch, outputs: Collection[str], settings: VolumeSettings,
                   *, background: torch.Tensor | None = None, generator: torch.Generator | None = None,
                   perturb: bool = False) -> dict[str, torch.Tensor]:
    """Render images for N cameras of H x W pixels (render.proto's names and conventions).

    outputs: any of "rgb" (N, 3, H, W) over `background` (default white), "alpha" (N, 1, H, W), "depth"
    (N, 1, H, W) camera z in world units (0 where alpha ~ 0), "normal_world", "normal_camera"
    (N, 3, H, W) unit normals times alpha, "features" (N, K, H, W) every decoded colour channel
    composited without background. The cameras' dtype and device must match the field's.
    """
    outputs = set(outputs)
    N, H, W = len(cameras), cameras.height, cameras.width
    origins, dirs = cameras.pixel_rays()
    want_normals = bool(outputs & {"normal_world", "normal_camera"})
    res = render_rays(query, origins.reshape(-1, 3), dirs.reshape(-1, 3), settings,
                      want_normals=want_normals, generator=generator, perturb=perturb)

    def image(x: torch.Tensor) -> torch.Tensor:  # (N*H*W, C) -> (N, C, H, W)
        return x.view(N, H, W, -1).permute(0, 3, 1, 2)

    alpha = image(res["alpha"][:, None])
    out: dict[str, torch.Tensor] = {}
    if "alpha" in outputs:
        out["alpha"] = alpha
    colour = image(res["colour"])
    if "rgb" in outputs:
        out["rgb"] = colour[:, :3] + (1 - alpha) * _background_image(background, N, H, W, colour)
    if "features" in outputs:
        out["features"] = colour
    covered = alpha > 1e-6
    if "depth" in outputs:
        forward = cameras.world_to_camera[:, 2, :3]  # camera +z in world coordinates, (N, 3)
        cos = torch.einsum("nhwi,ni->nhw", dirs, forward)[:, None]
        dist = image(res["distance"][:, None]) / alpha.clamp_min(1e-6)
        out["depth"] = torch.where(covered, dist * cos, torch.zeros_like(dist))
    if want_normals:
        nw = image(res["normal"])
        nw = nw / torch.sqrt((nw * nw).sum(1, keepdim=True) + 1e-20) * alpha
        if "normal_world" in outputs:
            out["normal_world"] = nw
        if "normal_camera" in outputs:
            out["normal_camera"] = torch.einsum("nij,njhw->nihw", cameras.world_to_camera[:, :3, :3], nw)
    return out

