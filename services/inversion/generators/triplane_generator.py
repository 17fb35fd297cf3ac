"""The 3D-aware generator: mapping -> StyleGAN2 synthesis of feature planes -> MLP decoder -> volume
rendering (the shared renderer, services/core/volume.py) -> optional 2D
super-resolution. One class for the three kinds:

  "triplane"         EG3D: the synthesis output (3*C, R, R) viewed as planes (3, C, R, R).
  "trigrid"          PanoHead: output (3*C*D, R, R) viewed as (3, C, D, R, R) (PanoHead's order:
                     channel outer, depth slice inner); exported as the NPZ's (3, D, C, R, R).
  "pyramid_trigrid"  pyramid_style "headforge" (HeadForge's own design): level L is the toRGB output of
                     synthesis block L (not the skip-summed image), each viewed as (3, C, D, L, L);
                     levels are summed when sampled. pyramid_style "3dportraitgan": the published
                     3DPortraitGAN backbone (generators/portraitgan.py), levels 8..2R from its 3D-aware
                     blocks, same (3, C, D, L, L) views and level sum.

With cfg.raw_torgb the raw image is `torgb` (a w-modulated 1x1 ToRGB, w = ws[:, -1]) of the rendered
feature image (in [-1, 1] after EG3D's 2c - 1 for a sigmoid decoder, as is for a linear one), and the
super-resolution head gets that image; decoder_activation "none" keeps the decoded features linear.

Units: the generator's frame has the world axes (+Y up, face towards +Z) but its own scale (EG3D: head
within [-0.5, 0.5]); x_world = x_generator * world_units_per_generator_unit (2 by default, so the head
radius is ~1 world unit). Rendering happens in world units (cameras, depth); densities stay per
generator unit (VolumeSettings.density_scale = 1 / world_units_per_generator_unit), so a converted
generator renders as trained. Colours are in [0, 1] (EG3D's [-1, 1] feature images are 2c - 1; the
super-resolution head sees and returns that range).

The architecture and rendering settings, and the camera conventions, are GeneratorConfig
(generators/config.py). Parameter names follow the official EG3D TriPlaneGenerator: backbone.mapping.*,
backbone.synthesis.*, decoder.net.{0,2}.*, superresolution.block{i}.*.
"""

from __future__ import annotations

from typing import Collection

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from services.common.errors import FailedPrecondition
from services.core import volume
from services.core.camera_batch import CameraBatch
from services.core.field_npz import FieldArrays, write_field_npz
from services.core.planes import decode_osg, feature_sampler
from services.inversion.generators.config import GeneratorConfig
from services.inversion.generators.layers import FullyConnectedLayer, ToRGBLayer
from services.inversion.generators.mapping import MappingNetwork
from services.inversion.generators.portraitgan import HierarchySynthesisNetwork
from services.inversion.generators.superres import SuperResolution
from services.inversion.generators.synthesis import SynthesisNetwork

RENDER_OUTPUTS = frozenset({"rgb", "rgb_raw", "alpha", "depth", "normal_camera", "normal_world", "features"})


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
        img_channels = 3 * cfg.channels * cfg.depth
        if cfg.kind == "pyramid_trigrid" and cfg.pyramid_style == "3dportraitgan":
            self.backbone.synthesis = HierarchySynthesisNetwork(cfg.w_dim, cfg.plane_resolution, img_channels,
                                                                cfg.use_noise, cfg.conv_clamp)
        else:
            self.backbone.synthesis = SynthesisNetwork(cfg.w_dim, cfg.plane_resolution, img_channels,
                                                       cfg.channel_base, cfg.channel_max, cfg.use_noise, cfg.conv_clamp)
        self.backbone.mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, cfg.w_dim, self.backbone.synthesis.num_ws,
                                               cfg.mapping_layers, pose_dim=cfg.pose_dim)
        self.decoder = OSGDecoder(cfg.channels, cfg.decoder_hidden, cfg.decoder_features, cfg.decoder_lr_multiplier)
        if cfg.raw_torgb:  # the official ToRGBLayer(decoder features, 3, w_dim): no conv clamp
            self.torgb = ToRGBLayer(cfg.decoder_features, 3, cfg.w_dim, conv_clamp=None)
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
        if c.decoder_activation == "none":
            (w0, b0), (w1, b1) = layers

            def query(points: torch.Tensor):  # the OSG decoder with linear features (3DPortraitGAN)
                x = torch.addmm(b1[:, None], w1, F.softplus(torch.addmm(b0[:, None], w0, features(points))))
                return x[0], x[1:].t()

            return query

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
            n = len(cams)
            if self.cfg.decoder_activation == "sigmoid":  # features in [0, 1]; the official image is 2c - 1
                feats = res["features"] * 2 - 1 if sr or self.cfg.raw_torgb else None
            else:  # a linear decoder's feature image is used as is
                feats = res["features"]
            if self.cfg.raw_torgb:
                raw = self.torgb(feats, ws[:, -1].expand(n, -1))  # [-1, 1]
                raw01 = (raw + 1) / 2
            elif feats is None or self.cfg.decoder_activation == "sigmoid":
                raw01 = res["features"][:, :3]
                raw = raw01 * 2 - 1
            else:
                raw = feats[:, :3]
                raw01 = (raw + 1) / 2
            if "rgb_raw" in outputs:
                out["rgb_raw"] = raw01
            if "rgb" in outputs:
                if sr:
                    if cams.width != self.cfg.neural_resolution or cams.height != self.cfg.neural_resolution:
                        raise ValueError(f"rgb with super-resolution needs {self.cfg.neural_resolution}-pixel cameras")
                    img = self.superresolution(raw, feats, ws.expand(n, -1, -1))
                    out["rgb"] = (img + 1) / 2
                else:
                    out["rgb"] = raw01
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

    def raw_torgb_map(self, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(A (3, K), a (3,)): the w-modulated ToRGB at ws[:1, -1] as the affine map raw = A f + a of decoded
        features f (it is a 1x1 modulated conv without demodulation, so linear). raw_torgb generators only."""
        t = self.torgb
        styles = t.affine(ws[:1, -1].to(t.weight)) * t.weight_gain                  # (1, K)
        return (t.weight[:, :, 0, 0] * styles).float(), t.bias.float()

    def _linear_colour_rows(self, ws: torch.Tensor, w: torch.Tensor, b: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's last layer (1 + K, H), (1 + K,) -> (1 + 3, H), (1 + 3,): density row kept, colour rows
        c = (A f + a + 1) / 2 for decoded features f = W h + b, where raw = A f + a is the raw image in [-1, 1]:
        the w-modulated ToRGB at ws[:, -1] (raw_torgb; exact, it is linear), else the first 3 features. The
        compositing is linear, so per-sample colours composite to (raw + 1) / 2 where alpha is 1."""
        if self.cfg.raw_torgb:
            A, a = self.raw_torgb_map(ws)
        else:
            A = torch.eye(3, w.shape[0] - 1, dtype=w.dtype, device=w.device)
            a = torch.zeros(3, dtype=w.dtype, device=w.device)
        A, a = A.to(w), a.to(w)
        colour_w = 0.5 * A @ w[1:]
        colour_b = 0.5 * (A @ b[1:] + a + 1.0)
        return torch.cat([w[:1], colour_w]), torch.cat([b[:1], colour_b])

    @torch.no_grad()
    def export_field(self, ws: torch.Tensor, noise: dict[str, torch.Tensor] | None = None,
                     dtype: str = "float32") -> bytes:
        """The NPZ (render.proto's field layout) of the field for ws: grids (3, C, R, R) or
        (3, D, C, R, R), the decoder with gains folded, and settings (box, rays, density scale). A linear
        decoder (decoder_activation "none", 3DPortraitGAN) is written with colour_activation "none" and its
        colour rows replaced by the raw image's affine map (_linear_colour_rows): the file renders the
        generator's rgb_raw wherever the head covers a pixel (the generator composites over zero features,
        the file over the render's background)."""
        grids = {}
        for name, g in self.synthesize(ws, noise).items():
            g = g.detach().float().cpu()
            grids[name] = (g if self.cfg.kind == "triplane" else g.permute(0, 2, 1, 3, 4)).numpy()
        layers = [(w.detach().float(), b.detach().float()) for w, b in self.decoder.plain_weights()]
        if self.cfg.decoder_activation == "none" or self.cfg.raw_torgb:
            layers[-1] = self._linear_colour_rows(ws, *layers[-1])
        decoder = [(w.cpu().numpy(), b.cpu().numpy()) for w, b in layers]
        return write_field_npz(FieldArrays(self.cfg.kind, grids, decoder, self.cfg.field_meta()), grid_dtype=dtype)
