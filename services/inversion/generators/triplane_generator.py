"""The 3D-aware generator: mapping -> StyleGAN2 synthesis of feature planes -> MLP decoder -> volume
rendering (the shared renderer, services/core/volume.py) -> optional 2D
super-resolution. One class for the three kinds:

  "triplane"         EG3D: the synthesis output (3*C, R, R) viewed as planes (3, C, R, R).
  "trigrid"          PanoHead: output (3*C*D, R, R) viewed as (3, C, D, R, R) (PanoHead's order:
                     channel outer, depth slice inner); exported as the NPZ's (3, D, C, R, R).
  "pyramid_trigrid"  3DPortraitGAN-style: level L is the toRGB output of synthesis block L (not the
                     skip-summed image), each viewed as (3, C, D, L, L); levels are summed when sampled.

Units: the generator's frame has the world axes (+Y up, face towards +Z) but its own scale (EG3D: head
within [-0.5, 0.5]); x_world = x_generator * world_units_per_generator_unit (2 by default, so the head
radius is ~1 world unit). Rendering happens in world units (cameras, depth); densities stay per
generator unit (VolumeSettings.density_scale = 1 / world_units_per_generator_unit), so a converted
generator renders as trained. Colours are in [0, 1] (EG3D's [-1, 1] feature images are 2c - 1; the
super-resolution head sees and returns that range).

Parameter names follow the official EG3D TriPlaneGenerator: backbone.mapping.*, backbone.synthesis.*,
decoder.net.{0,2}.*, superresolution.block{i}.*.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Collection

import numpy as np
import torch
from torch import nn

from services.core.cameras import PinholeCamera, intrinsics, look_at, orbit_position
from services.core import volume
from services.core.camera_batch import CameraBatch
from services.core.field_npz import FieldArrays, write_field_npz
from services.core.planes import FIELD_KINDS, PLANE_AXES, PLANE_REDUCTIONS, decode_osg, feature_sampler
from services.inversion.generators.layers import FullyConnectedLayer
from services.inversion.generators.mapping import MappingNetwork
from services.inversion.generators.superres import SuperResolution
from services.inversion.generators.synthesis import SynthesisNetwork

KINDS = FIELD_KINDS
CROP_STYLES = ("ffhq", "head")
RENDER_OUTPUTS = frozenset({"rgb", "rgb_raw", "alpha", "depth", "normal_camera", "normal_world", "features"})


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture and rendering settings of one generator (checkpoint.py stores it as config.json).

    Sizes: z_dim, w_dim latent widths; c_dim camera-label width (25, or 0 = unconditional), c_scale
    the factor on the label before the mapping network (EG3D / PanoHead's rendering_kwargs c_scale;
    0 = conditioning off);
    plane_resolution R (power of two), channels C per plane, depth D slices (1 for "triplane"),
    pyramid_levels (sides, each a synthesis block resolution; "pyramid_trigrid" only); channel_base /
    channel_max the synthesis widths min(channel_base // res, channel_max). Decoder: decoder_hidden
    width, decoder_features K decoded channels (the first 3 are RGB, all K feed the super-resolution
    head). Images: neural_resolution r of the volume rendering, output_resolution S (> r: a
    super-resolution head with sr_channels). Rendering, in generator units: box_warp (the box is
    [-box_warp/2, box_warp/2]^3), ray_start/ray_end (both 0 = the box intersection), samples.
    Cameras: the range seen in training (orbit degrees, azimuth_min..max, elevation_min..max) plus
    pose_margin_deg tolerance; the frontal camera (radius, target, normalised focal) conditions the
    mapping network by default. default_density_threshold: the iso-level on the raw decoder density
    for meshes.
    """

    kind: str = "triplane"
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 25
    c_scale: float = 1.0
    mapping_layers: int = 2
    plane_resolution: int = 256
    channels: int = 32
    depth: int = 1
    pyramid_levels: tuple[int, ...] = ()
    channel_base: int = 32768
    channel_max: int = 512
    use_noise: bool = True
    conv_clamp: float | None = 256.0
    decoder_hidden: int = 64
    decoder_features: int = 32
    decoder_lr_multiplier: float = 1.0
    neural_resolution: int = 128
    output_resolution: int = 512
    sr_channels: tuple[int, ...] = (128, 64)
    box_warp: float = 1.0
    ray_start: float = 0.0
    ray_end: float = 0.0
    samples_per_ray: int = 48
    importance_samples: int = 48
    density_activation: str = "softplus"
    plane_axes: str = "eg3d"
    plane_reduction: str = "mean"
    world_units_per_generator_unit: float = 2.0
    crop_style: str = "ffhq"
    azimuth_min: float = -60.0
    azimuth_max: float = 60.0
    elevation_min: float = -30.0
    elevation_max: float = 30.0
    pose_margin_deg: float = 10.0
    camera_radius: float = 2.7
    camera_target: tuple[float, float, float] = (0.0, 0.0, 0.2)
    focal: float = 4.2647
    default_density_threshold: float = 10.0

    def __post_init__(self):
        for name in ("pyramid_levels", "sr_channels", "camera_target"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.kind == "triplane":
            object.__setattr__(self, "depth", 1)
        self.validate()

    def validate(self) -> None:
        """ValueError naming the bad setting."""
        def need(cond, what):
            if not cond:
                raise ValueError(what)

        need(self.kind in KINDS, f"kind must be one of {KINDS}, got {self.kind!r}")
        r = self.plane_resolution
        need(r >= 4 and r & (r - 1) == 0, f"plane_resolution must be a power of two >= 4, got {r}")
        need(self.channels >= 1 and self.depth >= 1, "channels and depth must be >= 1")
        if self.kind == "pyramid_trigrid":
            lv = list(self.pyramid_levels)
            need(lv and lv == sorted(set(lv)) and all(4 <= v <= r and v & (v - 1) == 0 for v in lv),
                 f"pyramid_levels must be distinct ascending powers of two in [4, {r}], got {lv}")
        else:
            need(not self.pyramid_levels, "pyramid_levels is only for kind pyramid_trigrid")
        need(self.z_dim >= 1 and self.w_dim >= 1 and self.c_dim in (0, 25), "z_dim, w_dim >= 1; c_dim 0 or 25")
        need(self.decoder_features >= 3, "decoder_features must be >= 3")
        n, s = self.neural_resolution, self.output_resolution
        need(n >= 4 and s >= n and (s // n) * n == s and (s // n) & (s // n - 1) == 0,
             f"output_resolution ({s}) must be neural_resolution ({n}) times a power of two")
        need(self.box_warp > 0 and self.world_units_per_generator_unit > 0, "box_warp and world units must be > 0")
        need(self.crop_style in CROP_STYLES, f"crop_style must be one of {CROP_STYLES}")
        need(self.plane_axes in PLANE_AXES, f"plane_axes must be one of {tuple(PLANE_AXES)}")
        need(self.plane_reduction in PLANE_REDUCTIONS, f"plane_reduction must be one of {PLANE_REDUCTIONS}")
        need(self.azimuth_min < self.azimuth_max and self.elevation_min < self.elevation_max, "empty pose range")
        self.volume_settings()  # raises ValueError

    @property
    def super_resolution(self) -> bool:
        return self.output_resolution > self.neural_resolution

    @property
    def num_ws(self) -> int:
        """Latents per image: the synthesis blocks' convolutions (b4: 1, others: 2) + 1."""
        blocks = int(math.log2(self.plane_resolution)) - 1
        return 1 + 2 * (blocks - 1) + 1

    @property
    def world_scale(self) -> float:
        return self.world_units_per_generator_unit

    @property
    def box_size(self) -> float:
        """Half side of the rendering box in world units."""
        return self.box_warp / 2 * self.world_scale

    def level_sides(self) -> list[int]:
        return list(self.pyramid_levels) if self.kind == "pyramid_trigrid" else [self.plane_resolution]

    def grid_names(self) -> list[str]:
        return [f"level_{r}" for r in self.pyramid_levels] if self.kind == "pyramid_trigrid" else ["planes"]

    def volume_settings(self) -> volume.VolumeSettings:
        ws = self.world_scale
        return volume.VolumeSettings(
            samples_per_ray=self.samples_per_ray, importance_samples=self.importance_samples,
            box_size=self.box_size, ray_start=self.ray_start * ws, ray_end=self.ray_end * ws,
            density_activation=self.density_activation, density_scale=1.0 / ws,
            normal_eps=2.0 * self.box_size / max(self.level_sides()), chunk_rays=8192)

    def field_meta(self) -> dict:
        """The rendering settings an exported field file carries (services.core.field_npz.META_KEYS), in
        world units: a render-service field scene made from the file samples and integrates as this
        generator does (its normal step and chunking are the render service's own defaults)."""
        s = self.volume_settings()
        return {"box_size": s.box_size, "ray_start": s.ray_start, "ray_end": s.ray_end,
                "samples_per_ray": s.samples_per_ray, "importance_samples": s.importance_samples,
                "density_activation": s.density_activation, "density_scale": s.density_scale,
                "plane_reduction": self.plane_reduction, "plane_axes": self.plane_axes,
                "rgb_channels": self.decoder_features}

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        """ValueError for unknown keys or bad values."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown generator config keys {sorted(unknown)}")
        return cls(**d)

    def with_(self, **changes) -> "GeneratorConfig":
        return replace(self, **changes)

    # cameras ---------------------------------------------------------------------------------------

    def frontal_camera(self, size: int | None = None, azimuth: float = 0.0, elevation: float = 0.0) -> PinholeCamera:
        """The training-distribution camera at (azimuth, elevation) degrees, in WORLD units, for an image
        of `size` pixels (default the neural resolution)."""
        size = size or self.neural_resolution
        target = np.asarray(self.camera_target) * self.world_scale
        eye = orbit_position(azimuth, elevation, self.camera_radius * self.world_scale, target)
        f = self.focal * size
        return PinholeCamera(intrinsics(f, f, size / 2, size / 2), look_at(eye, target), size, size)

    def label(self, camera: PinholeCamera) -> np.ndarray:
        """EG3D's 25-float label of a WORLD-unit camera: cam2world (generator units) + normalised K."""
        c2w = np.linalg.inv(camera.world_to_camera)
        c2w[:3, 3] /= self.world_scale
        K = np.asarray(camera.K, dtype=np.float64) / np.array([[camera.width], [camera.height], [1.0]])
        return np.concatenate([c2w.reshape(-1), K.reshape(-1)]).astype(np.float32)

    def camera_from_label(self, label, size: int | None = None) -> PinholeCamera:
        """Inverse of label(): a WORLD-unit camera for an image of `size` pixels."""
        v = np.asarray(label, dtype=np.float64).reshape(-1)
        if v.shape != (25,) or not np.isfinite(v).all():
            raise ValueError("an EG3D label has 25 finite values")
        size = size or self.neural_resolution
        c2w = v[:16].reshape(4, 4).copy()
        c2w[:3, 3] *= self.world_scale
        K = v[16:].reshape(3, 3) * np.array([[size], [size], [1.0]])
        return PinholeCamera(K, np.linalg.inv(c2w), size, size)

    def camera_angles(self, camera: PinholeCamera) -> tuple[float, float]:
        """(azimuth, elevation) in degrees of a world camera's position around the camera target."""
        p = camera.position - np.asarray(self.camera_target) * self.world_scale
        r = float(np.linalg.norm(p)) or 1.0
        return math.degrees(math.atan2(p[0], p[2])), math.degrees(math.asin(max(-1.0, min(1.0, p[1] / r))))

    def pose_in_range(self, camera: PinholeCamera) -> bool:
        az, el = self.camera_angles(camera)
        m = self.pose_margin_deg
        full_circle = self.azimuth_max - self.azimuth_min >= 360
        az_ok = full_circle or self.azimuth_min - m <= az <= self.azimuth_max + m
        return az_ok and self.elevation_min - m <= el <= self.elevation_max + m


class OSGDecoder(nn.Module):
    """EG3D's OSGDecoder: mean (or sum) of the plane features -> FC(C, hidden) -> softplus ->
    FC(hidden, 1 + K). Output 0 = raw density, 1..K = sigmoid(x) * 1.002 - 0.001."""

    def __init__(self, channels: int, hidden: int, features: int, lr_multiplier: float = 1.0):
        super().__init__()
        self.net = nn.Sequential(FullyConnectedLayer(channels, hidden, lr_multiplier=lr_multiplier), nn.Softplus(),
                                 FullyConnectedLayer(hidden, 1 + features, lr_multiplier=lr_multiplier))

    def plain_weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """[(weight (out, in), bias (out,))] with the equalised-lr gains folded in (what the NPZ holds)."""
        return [self.net[0].effective(), self.net[2].effective()]


class TriplaneGenerator(nn.Module):
    """The generator. forward is not used; call synthesize() then render() (or generate())."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = nn.Module()
        self.backbone.synthesis = SynthesisNetwork(cfg.w_dim, cfg.plane_resolution, 3 * cfg.channels * cfg.depth,
                                                   cfg.channel_base, cfg.channel_max, cfg.use_noise, cfg.conv_clamp)
        self.backbone.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, cfg.w_dim, self.backbone.synthesis.num_ws,
                                               cfg.mapping_layers)
        self.decoder = OSGDecoder(cfg.channels, cfg.decoder_hidden, cfg.decoder_features, cfg.decoder_lr_multiplier)
        if cfg.super_resolution:
            self.superresolution = SuperResolution(cfg.decoder_features, cfg.w_dim, cfg.neural_resolution,
                                                   cfg.output_resolution, cfg.sr_channels, cfg.conv_clamp)
        self.settings = cfg.volume_settings()

    @property
    def num_ws(self) -> int:
        return self.backbone.synthesis.num_ws

    @property
    def mapping(self) -> MappingNetwork:
        return self.backbone.mapping

    def noise_buffers(self) -> dict[str, torch.Tensor]:
        return self.backbone.synthesis.noise_buffers()

    def tunable_parameters(self) -> list[nn.Parameter]:
        """What PTI fine-tunes: everything but the mapping network."""
        return [p for n, p in self.named_parameters() if not n.startswith("backbone.mapping.")]

    def tuned_bytes(self) -> int:
        """Bytes of a per-subject copy (everything but the mapping network)."""
        return sum(t.numel() * t.element_size() for n, t in [*self.named_parameters(), *self.named_buffers()]
                   if not n.startswith("backbone.mapping."))

    # synthesis -------------------------------------------------------------------------------------

    def synthesize(self, ws: torch.Tensor, noise: dict[str, torch.Tensor] | None = None,
                   noise_mode: str = "const") -> dict[str, torch.Tensor]:
        """ws (1, num_ws, w_dim) -> feature grids by name, channel-first for sampling: "planes"
        (3, C, R, R) for a tri-plane, (3, C, D, R, R) for a tri-grid, "level_<L>" (3, C, D, L, L)."""
        if ws.ndim != 3 or ws.shape[0] != 1:
            raise ValueError(f"ws must be (1, num_ws, w_dim), got {list(ws.shape)}")
        c = self.cfg
        keep = tuple(c.pyramid_levels) if c.kind == "pyramid_trigrid" else ()
        img, levels = self.backbone.synthesis(ws, noise_mode=noise_mode, noise=noise, keep_levels=keep)
        if c.kind == "triplane":
            return {"planes": img.view(3, c.channels, c.plane_resolution, c.plane_resolution)}
        if c.kind == "trigrid":
            return {"planes": img.view(3, c.channels, c.depth, c.plane_resolution, c.plane_resolution)}
        return {f"level_{r}": levels[r].view(3, c.channels, c.depth, r, r) for r in c.pyramid_levels}

    def query(self, grids: dict[str, torch.Tensor]) -> volume.Query:
        """points (P, 3) world units -> (raw density (P,), colour (P, K)): the shared samplers and OSG
        decoder (services.core.planes: same axes, box and reduction as a render-service field scene)."""
        c = self.cfg
        features = feature_sampler(c.kind, list(grids.values()), plane_axes=c.plane_axes,
                                   box_size=self.settings.box_size, reduction=c.plane_reduction)
        layers = self.decoder.plain_weights()

        def query(points: torch.Tensor):
            return decode_osg(layers, features(points))

        return query

    # rendering -------------------------------------------------------------------------------------

    def render(self, ws: torch.Tensor, cameras: CameraBatch, outputs: Collection[str] = ("rgb",), *,
               grids: dict[str, torch.Tensor] | None = None, noise: dict[str, torch.Tensor] | None = None,
               perturb: bool = False, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Render one latent ws (1, num_ws, w_dim) from N world-unit cameras of r x r pixels.

        outputs: "rgb" (N, 3, S, S) in ~[0, 1] after super-resolution (S = output resolution; cameras
        must then be at the neural resolution r) or the raw rendering without a super-resolution head;
        "rgb_raw" (N, 3, r, r) composited over black (EG3D's convention); "features" (N, K, r, r);
        "alpha", "depth", "normal_camera", "normal_world" as volume.render_cameras. grids: reuse a
        synthesize() result."""
        outputs = set(outputs)
        unknown = outputs - RENDER_OUTPUTS
        if unknown:
            raise ValueError(f"unknown outputs {sorted(unknown)}")
        if grids is None:
            grids = self.synthesize(ws, noise)
        sr = "rgb" in outputs and self.cfg.super_resolution
        want = (outputs - {"rgb", "rgb_raw"}) | ({"features"} if sr or outputs & {"rgb", "rgb_raw"} else set())
        p = next(iter(grids.values()))
        cams = cameras.to(device=p.device, dtype=p.dtype)
        res = volume.render_cameras(self.query(grids), cams, want, self.settings,
                                    background=torch.zeros(3, device=p.device, dtype=p.dtype),
                                    perturb=perturb, generator=generator)
        out = {k: v for k, v in res.items() if k in outputs}
        if outputs & {"rgb", "rgb_raw"}:
            raw = res["features"][:, :3]
            if "rgb_raw" in outputs:
                out["rgb_raw"] = raw
            if "rgb" in outputs:
                if sr:
                    if cams.width != self.cfg.neural_resolution or cams.height != self.cfg.neural_resolution:
                        raise ValueError(f"rgb with super-resolution needs {self.cfg.neural_resolution}-pixel cameras")
                    n = len(cams)
                    img = self.superresolution(raw * 2 - 1, res["features"] * 2 - 1, ws.expand(n, -1, -1))
                    out["rgb"] = (img + 1) / 2
                else:
                    out["rgb"] = raw
        return out

    def generate(self, ws: torch.Tensor, camera: CameraBatch, noise=None) -> torch.Tensor:
        """The final image (N, 3, S, S) for the cameras (at the neural resolution)."""
        return self.render(ws, camera, ("rgb",), noise=noise)["rgb"]

    # mapping helpers -------------------------------------------------------------------------------

    @torch.no_grad()
    def w_stats(self, label: np.ndarray | None, samples: int = 2000, seed: int = 123) -> tuple[torch.Tensor, float]:
        """(w_avg (w_dim,), w_std scalar) over `samples` random z mapped with the camera label (EG3D's
        projector; the label defaults to the frontal camera's)."""
        gen = torch.Generator().manual_seed(seed)
        dev = self.mapping.w_avg.device
        z = torch.randn(samples, self.cfg.z_dim, generator=gen).to(dev)
        c = None
        if self.cfg.c_dim:
            if label is None:
                label = self.cfg.label(self.cfg.frontal_camera())
            c = torch.as_tensor(np.asarray(label, np.float32), device=dev).expand(samples, -1) * self.cfg.c_scale
        w = self.mapping(z, c)[:, 0]
        w_avg = w.mean(0)
        return w_avg, float(((w - w_avg).square().sum() / samples) ** 0.5)

    @torch.no_grad()
    def map(self, z: torch.Tensor, label: np.ndarray | None = None) -> torch.Tensor:
        """z (N, z_dim) -> ws (N, num_ws, w_dim) with the camera label (default frontal)."""
        c = None
        if self.cfg.c_dim:
            if label is None:
                label = self.cfg.label(self.cfg.frontal_camera())
            c = torch.as_tensor(np.asarray(label, np.float32), device=z.device).expand(z.shape[0], -1) * self.cfg.c_scale
        return self.mapping(z, c)

    # export ----------------------------------------------------------------------------------------

    @torch.no_grad()
    def export_field(self, ws: torch.Tensor, noise: dict[str, torch.Tensor] | None = None,
                     dtype: str = "float32") -> bytes:
        """The NPZ (render.proto's field layout) of the field for ws: grids (3, C, R, R) or
        (3, D, C, R, R), the decoder with gains folded, and settings (box, rays, density scale)."""
        grids = {}
        for name, g in self.synthesize(ws, noise).items():
            g = g.detach().float().cpu()
            grids[name] = (g if self.cfg.kind == "triplane" else g.permute(0, 2, 1, 3, 4)).numpy()
        decoder = [(w.detach().float().cpu().numpy(), b.detach().float().cpu().numpy())
                   for w, b in self.decoder.plain_weights()]
        return write_field_npz(FieldArrays(self.cfg.kind, grids, decoder, self.cfg.field_meta()), grid_dtype=dtype)
