"""3D Gaussians (3DGS) for the render service: parameters, a pure-torch tile rasteriser, a gsplat path.

A scene is P anisotropic Gaussians with the 3DGS parameterisation (raw, un-activated tensors):
  means (P, 3) world units; scales (P, 3) log of the standard deviations (world units);
  quats (P, 4) rotation as (w, x, y, z), normalised when used; opacities (P,) logits;
  sh0 (P, 1, 3) and shN (P, K - 1, 3) spherical-harmonics colour coefficients, K = (degree + 1)^2,
  colour = max(0, sum_k sh_k Y_k(d) + 0.5) with d the unit direction camera centre -> mean and Y the
  real SH basis of 3DGS (degree <= 3).

Rendering (both backends, same inputs and outputs): EWA splatting. Each mean is projected with the
OpenCV pinhole (pixel centres at +0.5); its 2D covariance is J W S W^T J^T + 0.3 px^2 (the low-pass of
3DGS and gsplat). Gaussians behind the near plane (z <= 0.01) or whose screen box misses the image are
culled; the box is the 3-sigma box, widened or narrowed to where the Gaussian's alpha falls to 1/255
(at most 3.33 sigma), in whole pixels, as current gsplat does. The rest are sorted by camera z per
16x16 tile and alpha-composited front to back: alpha = min(alpha_max, o exp(-d^2 / 2)), contributions
below 1/255 skipped, a pixel finished before the Gaussian that would take its transmittance to <= 1e-4.
Outputs (render.proto): rgb over the background; albedo, the view-independent colour (SH degree 0 only,
max(0, sh0 Y_0 + 0.5)) over the background; alpha; depth = sum(w z) / alpha with z the camera z of
each Gaussian's centre (0 where alpha = 0); normal_camera = sum(w n) with n the Gaussian's shortest
axis turned toward the camera (alpha-weighted, not re-normalised: length <= alpha); normal_world the
same rotated into the world frame.

Backends:
  "torch"  `rasterize_torch`, the reference; runs anywhere. Each tile's depth-sorted Gaussians are
           packed into fixed-size chunks so the work is dense batched tensors; log-alpha is a quadratic
           polynomial per Gaussian evaluated for a whole tile by one matrix product; compositing has a
           hand-written backward that recomputes per-pixel terms in batches (no large saved tensors).
  "gsplat" `rasterize_gsplat`: `gsplat.rasterization` (CUDA; compiled on first use), chosen when the
           scene is on CUDA and gsplat is installed.
Expected agreement (float32, same scene and cameras; the gpu test checks it): gsplat clamps alpha at
0.999 where this reference uses 0.99 (3DGS), so compare with `alpha_max=0.999` on the torch side; then
rgb, alpha and normals agree to max |diff| <= 2e-3 and mean |diff| <= 1e-4, depth to 1e-3 relative where
alpha > 0.5, the differences coming from summation order, the CUDA fast exp and pixels at the edge of a
screen box (gsplat rounds the box from float32 maths). With the default 0.99, pixels whose first
Gaussian is near-opaque differ by up to 0.01.

Densification statistics: during backward the screen-space gradient of every visible Gaussian's 2D
mean is converted to NDC units (x W/2, y H/2) and multiplied by the number of cameras of the render
(as gsplat: the threshold assumes a loss averaged over the cameras); its norm is accumulated per
Gaussian with a visibility count (buffers grad2d_sum, grad2d_count) for gaussians_strategy.py.
"""

from __future__ import annotations

import io
import math
from typing import Any, ClassVar, Collection, Mapping

import numpy as np
import torch
from torch import nn

from services.common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from services.core.camera_batch import CameraBatch
from services.render.representations import gaussians_strategy as strategy_ops
from services.render.representations.base import Representation, SceneKind
from services.render.representations.gaussians_config import BACKENDS, OPTIONS, GaussiansConfig
from services.render.representations.gaussians_gsplat import gsplat_available, rasterize_gsplat
from services.render.representations.gaussians_ply import read_ply, write_ply
from services.render.representations.gaussians_projection import SH_C0, sh_to_colors, shortest_axis_normals
from services.render.representations.gaussians_raster import TILE_SIZE, rasterize_torch
from services.render.representations.gaussians_strategy import GaussianStrategy, GaussianStrategyConfig
from services.render.types import DensifyResult

GROUPS = ("means", "scales", "quats", "opacities", "sh0", "shN")
OUTPUTS = frozenset({"rgb", "albedo", "alpha", "depth", "normal_camera", "normal_world"})


def _knn_mean_distance(points: torch.Tensor, k: int = 3) -> torch.Tensor:
    """(P,) mean distance of each point to its k nearest other points (scipy's KD-tree when present)."""
    P = points.shape[0]
    if P <= 1:
        return torch.ones(P, dtype=points.dtype)
    k = min(k, P - 1)
    try:
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(points.double().numpy()).query(points.double().numpy(), k=k + 1)
        return torch.as_tensor(dist[:, 1:].mean(1), dtype=points.dtype)
    except ImportError:  # quadratic fallback, in blocks
        out = []
        for block in points.split(4096):
            d = torch.cdist(block, points)
            out.append(d.topk(k + 1, largest=False).values[:, 1:].mean(1))
        return torch.cat(out)


def _random_ball(n: int, radius: float, generator: torch.Generator) -> torch.Tensor:
    """n points (n, 3) uniform in the ball of `radius` around the origin."""
    d = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    r = radius * torch.rand(n, 1, generator=generator, dtype=torch.float64) ** (1 / 3)
    return (d * r).float()


def _check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ValueError(f"unknown Gaussian backend {name!r} (auto, torch, gsplat)")
    if name == "gsplat" and not gsplat_available():
        raise FailedPrecondition("the gsplat backend needs CUDA and the gsplat package",
                                 reason="BACKEND_UNAVAILABLE")
    return name


class GaussianScene(Representation):
    """P 3D Gaussians (module docstring for the parameterisation and rendering). Parameter groups:
    means, scales, quats, opacities, sh0, shN; buffers grad2d_sum, grad2d_count (P,) the densification
    statistics. default_lrs are those of 3DGS with the means rate for a scene extent of 1; an instance's
    default_lrs scales it by its extent (the 3DGS position schedule 1.6e-4 -> 1.6e-6 x extent over 30k
    steps is a caller's LrSchedule)."""

    kind: ClassVar[str] = "gaussians"
    outputs: ClassVar[frozenset[str]] = OUTPUTS
    default_lrs: ClassVar[dict[str, float]] = {"means": 1.6e-4, "scales": 5e-3, "quats": 1e-3,
                                               "opacities": 5e-2, "sh0": 2.5e-3, "shN": 2.5e-3 / 20}

    def __init__(self, num_gaussians: int = 0, sh_degree: int = 0, *, extent: float = 1.0,
                 strategy: GaussianStrategyConfig | None = None, backend: str = "auto",
                 tile_size: int = TILE_SIZE, seed: int = 0):
        super().__init__()
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree must be 0..3, got {sh_degree}")
        if extent <= 0:
            raise ValueError(f"extent must be > 0, got {extent}")
        P, K = int(num_gaussians), (sh_degree + 1) ** 2
        self.sh_degree = sh_degree
        self.extent = float(extent)
        self.seed = int(seed)
        self.tile_size = int(tile_size)
        self.requested_backend = _check_backend(backend)
        self.strategy = GaussianStrategy(strategy, self.extent, self.seed)
        self.default_lrs = {**type(self).default_lrs, "means": type(self).default_lrs["means"] * self.extent}
        quats = torch.zeros(P, 4)
        quats[:, 0] = 1
        self.means = nn.Parameter(torch.zeros(P, 3))
        self.scales = nn.Parameter(torch.full((P, 3), -3.0))
        self.quats = nn.Parameter(quats)
        self.opacities = nn.Parameter(torch.zeros(P))
        self.sh0 = nn.Parameter(torch.zeros(P, 1, 3))
        self.shN = nn.Parameter(torch.zeros(P, K - 1, 3))
        self.register_buffer("grad2d_sum", torch.zeros(P))
        self.register_buffer("grad2d_count", torch.zeros(P))
        self.last_densify = DensifyResult(P, 0, 0)

    # ---- construction ----------------------------------------------------------------------------

    @classmethod
    def create(cls, init: GaussiansConfig, seed: int = 0) -> "GaussianScene":
        """A new scene from an init config; `seed` drives the random points and later split samples (the
        caller turns the proto's seed 0 into a random one). Scales start at the mean distance to the 3
        nearest points, rotations at identity, colours as given (grey otherwise)."""
        gen = torch.Generator().manual_seed(int(seed))
        if init.points is not None:
            means = torch.as_tensor(np.asarray(init.points), dtype=torch.float32).reshape(-1, 3)
            extent = init.extent or float((means - means.mean(0)).norm(dim=1).max().clamp_min(1e-6))
        else:
            means = _random_ball(int(init.num_points), float(init.radius), gen)
            extent = init.extent or float(init.radius)
        P = means.shape[0]
        colors = torch.full((P, 3), 0.5)
        if init.colors is not None:
            colors = torch.as_tensor(np.asarray(init.colors), dtype=torch.float32).reshape(P, 3)
        scene = cls(P, init.sh_degree, extent=extent, strategy=init.strategy, backend=init.backend,
                    tile_size=init.tile_size, seed=seed)
        with torch.no_grad():
            scene.means.copy_(means)
            scene.scales.copy_(_knn_mean_distance(means).clamp_min(1e-7).log()[:, None].expand(P, 3))
            scene.opacities.fill_(math.log(init.opacity / (1 - init.opacity)))
            scene.sh0.copy_(((colors - 0.5) / SH_C0)[:, None])
        return scene

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], **kwargs) -> "GaussianScene":
        """A scene from raw group arrays {means, scales, quats, opacities, sh0, shN} (shapes as the
        parameters); kwargs as __init__ (extent defaults to the points' largest distance from their
        centroid)."""
        t = {k: torch.as_tensor(np.asarray(arrays[k]), dtype=torch.float32) for k in GROUPS}
        degree = int(round(math.sqrt(t["shN"].shape[1] + 1))) - 1
        if "extent" not in kwargs:
            m = t["means"]
            kwargs["extent"] = float((m - m.mean(0)).norm(dim=1).max().clamp_min(1e-6)) if len(m) else 1.0
        scene = cls(0, degree, **kwargs)
        scene.load_state_tensors(t)
        return scene

    @classmethod
    def from_ply(cls, data: bytes, **kwargs) -> "GaussianScene":
        """A scene from standard 3DGS PLY bytes (gaussians_ply.py); ValueError when it is not one."""
        return cls.from_arrays(read_ply(data), **kwargs)

    @classmethod
    def from_npz(cls, data: bytes, **kwargs) -> "GaussianScene":
        """A scene from the NPZ written by export("npz")."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            missing = [k for k in GROUPS if k not in z.files]
            if missing:
                raise ValueError(f"NPZ lacks Gaussian groups {missing}")
            return cls.from_arrays({k: z[k] for k in GROUPS}, **kwargs)

    # ---- Representation API -----------------------------------------------------------------------

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    @property
    def backend(self) -> str:
        """The renderer render() uses now: gsplat when allowed, installed and the scene is on CUDA."""
        if self.requested_backend != "torch" and self.means.is_cuda and gsplat_available():
            return "gsplat"
        return "torch"

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {name: [getattr(self, name)] for name in GROUPS}

    def render(self, cameras: CameraBatch, outputs: Collection[str] = ("rgb", "alpha"),
               background: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Render `outputs` (rgb, albedo, alpha, depth, normal_camera, normal_world) for N cameras. background:
        (3,), (N, 3), (3, H, W) or (N, 3, H, W) in [0, 1]; default white."""
        outputs = list(outputs)
        unknown = set(outputs) - OUTPUTS
        if unknown:
            raise ValueError(f"gaussians cannot render {sorted(unknown)}")
        cams = cameras.to(device=self.means.device, dtype=self.means.dtype)
        want_normals = bool({"normal_camera", "normal_world"} & set(outputs))
        sh = torch.cat([self.sh0, self.shN], 1)
        colors = sh_to_colors(sh, self.means, cams.centers, self.sh_degree)
        normals = shortest_axis_normals(self.quats, self.scales) if want_normals else None
        extra = None
        if "albedo" in outputs:
            extra = (SH_C0 * self.sh0[:, 0] + 0.5).clamp_min(0.0).expand(len(cams), -1, -1)
        args = (self.means, self.quats, self.scales.exp(), torch.sigmoid(self.opacities), colors, cams, normals)
        raw = rasterize_gsplat(*args, extra=extra) if self.backend == "gsplat" else \
            rasterize_torch(*args, tile=self.tile_size, extra=extra)
        self._track_screen_grads(raw["means2d"], raw["visible"], cams.width, cams.height)
        out = {}
        alpha = raw["alpha"]
        if "rgb" in outputs:
            out["rgb"] = raw["rgb"] + (1 - alpha) * self._background(background, cams, alpha)
        if "albedo" in outputs:
            out["albedo"] = raw["extra"] + (1 - alpha) * self._background(background, cams, alpha)
        if "alpha" in outputs:
            out["alpha"] = alpha
        if "depth" in outputs:
            out["depth"] = raw["depth"]
        if "normal_camera" in outputs:
            out["normal_camera"] = raw["normal_camera"]
        if "normal_world" in outputs:
            c2w = cams.world_to_camera[:, :3, :3].transpose(1, 2)
            out["normal_world"] = torch.einsum("cij,cjhw->cihw", c2w, raw["normal_camera"])
        return out

    @staticmethod
    def _background(background: torch.Tensor | None, cams: CameraBatch, like: torch.Tensor) -> torch.Tensor:
        """Background broadcastable to (N, 3, H, W)."""
        if background is None:
            return like.new_ones(1, 3, 1, 1)
        bg = torch.as_tensor(background).to(like)
        shapes = {1: lambda b: b.reshape(1, 3, 1, 1), 2: lambda b: b.reshape(-1, 3, 1, 1),
                  3: lambda b: b[None], 4: lambda b: b}
        if bg.dim() not in shapes or bg.shape[-3 if bg.dim() >= 3 else -1] != 3:
            raise ValueError(f"background of shape {list(bg.shape)}; expected (3,), (N, 3), (3, H, W) or "
                             f"(N, 3, H, W)")
        return shapes[bg.dim()](bg)

    def _track_screen_grads(self, means2d: torch.Tensor, visible: torch.Tensor, width: int, height: int) -> None:
        """Accumulate |dL/d mean2d| in NDC units (x cameras, see module docstring) per visible Gaussian
        when the render is back-propagated."""
        if not (torch.is_grad_enabled() and means2d.requires_grad):
            return
        C, P = visible.shape
        scale = means2d.new_tensor([0.5 * width * C, 0.5 * height * C])
        seen = visible.detach().to(means2d.dtype)

        def hook(grad: torch.Tensor) -> None:
            if self.grad2d_sum.shape[0] != P:  # the Gaussians changed since this render
                return
            norms = (grad.detach() * scale).norm(dim=-1) * seen
            self.grad2d_sum += norms.sum(0).to(self.grad2d_sum)
            self.grad2d_count += seen.sum(0).to(self.grad2d_count)

        means2d.register_hook(hook)

    def after_step(self, step: int, optimizer) -> bool:
        """The automatic densification schedule (gaussians_strategy.py) after optimiser step `step`;
        `last_densify` then holds what it did."""
        changed = self.strategy.step(self, step, optimizer)
        self.last_densify = DensifyResult(self.num_gaussians, self.strategy.last_densified,
                                          self.strategy.last_pruned)
        return changed

    def densify_now(self, optimizer=None, *, grad_threshold: float = 0.0, prune_opacity: float = 0.0,
                    prune_max_scale: float = 0.0, reset_opacity: float = 0.0,
                    max_gaussians: int | None = None) -> "DensifyResult":
        """One explicit pass (DensifyGaussians): densify where the mean screen gradient >= grad_threshold
        (> 0), prune opacity < prune_opacity and largest scale > prune_max_scale (world units), then clamp
        opacities to at most reset_opacity (each 0 = skip). max_gaussians None = the strategy's cap.
        Errors: InvalidArgument (negative values, reset_opacity >= 1), FailedPrecondition (no gradient
        statistics for densification), ResourceExhausted (the result would exceed max_gaussians)."""
        for name, value in (("grad_threshold", grad_threshold), ("prune_opacity", prune_opacity),
                            ("prune_max_scale", prune_max_scale), ("reset_opacity", reset_opacity)):
            if not (math.isfinite(value) and value >= 0):
                raise InvalidArgument(name, f"must be a number >= 0, got {value}")
        if reset_opacity >= 1:
            raise InvalidArgument("reset_opacity", f"must be in (0, 1), got {reset_opacity}")
        cap = self.strategy.config.max_gaussians if max_gaussians is None else max_gaussians
        if grad_threshold > 0:
            if float(self.grad2d_count.sum()) == 0:
                raise FailedPrecondition("no gradient statistics yet: apply gradients to a render first",
                                         reason="NO_GRADIENT_STATISTICS")
            total = self.num_gaussians + int((strategy_ops.mean_screen_grads(self) >= grad_threshold).sum())
            if cap > 0 and total > cap:
                raise ResourceExhausted(f"densifying would give {total} Gaussians, above {cap}",
                                        reason="MAX_GAUSSIANS", metadata={"limit": str(cap), "got": str(total)})
        added, removed = self.strategy.refine(self, optimizer, 0, grad_threshold, prune_opacity, prune_max_scale)
        if reset_opacity > 0:
            strategy_ops.reset_opacity(self, optimizer, reset_opacity)
        self.last_densify = DensifyResult(self.num_gaussians, added, removed)
        return self.last_densify

    def regularizers(self) -> dict[str, "callable"]:
        """opacity_entropy: mean binary entropy of the opacities (pushes them to 0 or 1); scale: mean
        largest scale (world units)."""
        def opacity_entropy() -> torch.Tensor:
            o = torch.sigmoid(self.opacities).clamp(1e-6, 1 - 1e-6)
            return -(o * o.log() + (1 - o) * (1 - o).log()).mean()

        def scale() -> torch.Tensor:
            return self.scales.exp().amax(1).mean()

        return {"opacity_entropy": opacity_entropy, "scale": scale}

    def export(self, fmt: str, scale: float = 1.0) -> bytes:
        """"ply" (standard 3DGS layout, gaussians_ply.py) or "npz" (raw groups); positions and scales
        multiplied by `scale`."""
        a = {k: getattr(self, k).detach().cpu().float().numpy() for k in GROUPS}
        if scale != 1.0:
            a["means"] = a["means"] * scale
            a["scales"] = a["scales"] + math.log(scale)
        if fmt == "ply":
            return write_ply(**a)
        if fmt == "npz":
            buf = io.BytesIO()
            np.savez(buf, **a)
            return buf.getvalue()
        raise ValueError(f"gaussians cannot be exported as {fmt}")

    def config(self) -> dict:
        return {"num_gaussians": self.num_gaussians, "sh_degree": self.sh_degree, "extent": self.extent,
                "seed": self.seed, "tile_size": self.tile_size, "backend": self.requested_backend,
                "strategy": self.strategy.config.to_dict()}

    @classmethod
    def from_config(cls, config: dict) -> "GaussianScene":
        c = dict(config)
        return cls(int(c.get("num_gaussians", 0)), int(c.get("sh_degree", 0)), extent=float(c.get("extent", 1.0)),
                   strategy=GaussianStrategyConfig.from_dict(c.get("strategy")),
                   backend=c.get("backend", "auto"), tile_size=int(c.get("tile_size", TILE_SIZE)),
                   seed=int(c.get("seed", 0)))

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Replace the parameters (any number of Gaussians) and statistics (zeros when absent). The
        parameters are new objects: build the optimiser after this."""
        unknown = set(tensors) - set(GROUPS) - set(strategy_ops.STAT_BUFFERS)
        missing = set(GROUPS) - set(tensors)
        if unknown or missing:
            raise ValueError(f"Gaussian state: unknown {sorted(unknown)}, missing {sorted(missing)}")
        P = int(tensors["means"].shape[0])
        shapes = {"means": (P, 3), "scales": (P, 3), "quats": (P, 4), "opacities": (P,), "sh0": (P, 1, 3),
                  "shN": (P, (self.sh_degree + 1) ** 2 - 1, 3), "grad2d_sum": (P,), "grad2d_count": (P,)}
        for k, t in tensors.items():
            if tuple(t.shape) != shapes[k]:
                raise ValueError(f"Gaussian state {k}: shape {list(t.shape)}, expected {list(shapes[k])}")
        like = self.means
        for name in GROUPS:
            setattr(self, name, nn.Parameter(tensors[name].detach().to(like).clone(),
                                             requires_grad=getattr(self, name).requires_grad))
        for name in strategy_ops.STAT_BUFFERS:
            t = tensors.get(name)
            setattr(self, name, torch.zeros(P, dtype=self.grad2d_sum.dtype, device=like.device) if t is None
                    else t.detach().to(self.grad2d_sum).clone())


def _create(init: Mapping[str, Any], seed: int, options: Mapping[str, str], limits) -> GaussianScene:
    return GaussianScene.create(GaussiansConfig.from_init(init, options).within(limits.max_gaussians), seed)


def gaussians_bytes(count: int, sh_degree: int) -> int:
    """memory_bytes() of a GaussianScene: per Gaussian means 3, scales 3, quats 4, opacity 1, SH 3 K
    (K = (sh_degree + 1)^2) and the two densification statistics, float32."""
    return count * (3 + 3 + 4 + 1 + 3 * (sh_degree + 1) ** 2 + 2) * 4


def _init_bytes(init: Mapping[str, Any], options: Mapping[str, str], limits) -> int:
    cfg = GaussiansConfig.from_init(init, options).within(limits.max_gaussians)
    return gaussians_bytes(len(cfg.points) if cfg.points is not None else cfg.num_points, cfg.sh_degree)


def _from_asset(data: bytes, fmt: str, options: Mapping[str, str]) -> GaussianScene:
    kw = {"backend": options.get("backend", "auto")}
    if fmt == "ply":
        return GaussianScene.from_ply(data, **kw)
    if fmt == "npz":
        return GaussianScene.from_npz(data, **kw)
    raise InvalidArgument("asset.format", f"a Gaussian scene is created from PLY or NPZ, not {fmt}")


SCENE_KIND = SceneKind(GaussianScene, _create, _from_asset, OPTIONS, ("ply", "npz"), ("opacity_entropy", "scale"),
                       init_bytes=_init_bytes,
                       accelerated_backend="gsplat")
