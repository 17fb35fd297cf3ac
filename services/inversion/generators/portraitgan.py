"""3DPortraitGAN's pyramid tri-grid synthesis (the released `3DPortraitGAN_pyramid` generator, whose
`model_512.pkl` convert_portraitgan.py converts), written from a reading of the published code; no
code of it is used here. HeadForge's own "pyramid_trigrid" (pyramid_style "headforge") is a different
design; GeneratorConfig.pyramid_style "3dportraitgan" selects this one.

The published generator (training/smpl_triplane.py TriPlaneGenerator, model_512.pkl):

  mapping      StyleGAN2 MappingNetwork `backbone.mapping` (embed, fc0.., w_avg) with c_dim = 25 + 6:
               the EG3D camera label followed by 6 body-pose parameters p (head/neck rotations); the
               input is cat(c, p) * rendering_kwargs c_scale (1.0 for model_512), p = 0 when no pose
               is given. num_ws = 14 (2D backbone of resolution 256).
  backbone     `backbone.synthesis` (networks_stylegan2.Hierarchy3DAwareSynthesisNetwork, after
               Mimic3D), img_resolution R = 256, img_channels = 3 * C * D with C = 12 (trigrid_channel)
               and D = 3 (rendering_kwargs triplane_depth): 108.
    2D branch  blocks b4 .. b256 ('skip' StyleGAN2 blocks), every block 108 channels wide whatever
               channel_base / channel_max say (in = out = img_channels; b4 starts from `const`, stored
               (1, 108, 4, 4)); each has conv0 (up-sampling, not b4), conv1 and torgb (108 -> 108);
               the running skip image img_r = up(img_{r/2}) + torgb_r.
    3D branch  one Aware3DBlock `b3d<r>` per 2D block r in 4..256: a StyleGAN2 block `b3d<r>.block`
               at resolution 2r (conv0 up-sampling, conv1, torgb, all with w = the last w of 2D block
               r's slice, i.e. ws[:, index of block r's torgb]) over the three planes as a batch
               (B*3, 36, .., ..), 36 = C * D channels per plane. Its input is the 2D skip image img_r
               viewed as three planes plus the previous 3D block's output (same size r); its output
               at 2r x 2r is pyramid level 2r. So the levels are 8, 16, .., 512 (keys 4..256 in the
               official dict, sides twice the key), each (B, 3, 36, 2r, 2r) = (B, 3, C, D, 2r, 2r).
    roll-out   the 3D blocks' layers (roll_out 'b') see every plane together with axis means of the
               other two: before each conv / ToRGB the (B*3, C, S, S) input becomes (B*3, 3C, S, S)
               per plane P0 (xy), P1, P2 (rows = height index i, cols = width index k):
                 P0: [P0, rowmean(P1) laid along rows, colmean(P2) laid along cols]
                 P1: [colmean(P0) laid along cols, P1, rowmean(P2) laid along rows]
                 P2: [rowmean(P0) laid along rows, colmean(P1) laid along cols, P2]
               where rowmean(P) = mean over rows (a vector over columns), colmean = mean over columns,
               "laid along rows" T[i, k] = v[i], "along cols" T[i, k] = v[k]. Their parameters: affine
               FC(w_dim, 9 C) (bias init 1) whose (B, 9C) styles are read as (B*3, 3C), one style
               vector per plane; weight (C_out, 3C, k, k); ToRGB weight gain 1 / sqrt(C) (C, not 3C).
               State names: backbone.synthesis.b3d<r>.block.{conv0,conv1}.{affine.weight,
               affine.bias, weight, bias, noise_const (2r, 2r), noise_strength, resample_filter},
               .block.torgb.{affine.weight, affine.bias, weight, bias}, .block.resample_filter.
  sampling     renderer.sample_from_planes: x -> (2 / box_warp) x (box_warp 0.7), projected on
               PanoHead's corrected planes ((x, y | z), (x, z | y), (y, z | x): plane_axes "panohead"),
               each level (B*3, C, D, H, W) sampled trilinearly (grid_sample, align_corners False,
               zero padding); the levels are summed and divided by their number, and the OSGDecoder
               takes the mean over the 3 planes: features = sum over planes and levels / (3 * 7).
               HeadForge stores this as plane_reduction "sum" with the constant 1 / (3 * levels)
               folded into decoder.net.0.weight (the decoder's first layer is linear: exact).
  decoder      OSGDecoder FC(12, 32) -> softplus -> FC(32, 1 + 32); decoder_activation "none"
               (features stay linear); density softplus(raw - 1) (MipRayMarcher2, clamp_mode
               softplus); 48 + 48 samples from ray_start 2.385 to ray_end 3.12.
  raw image    use_torgb_raw: `torgb` = ToRGBLayer(32, 3, w_dim) (no conv clamp) applied to the
               volume-rendered 32-channel feature image with ws[:, -1]: image_raw (in [-1, 1]).
  SR           SuperresolutionHybrid8XDC on (image_raw, feature image, ws): `superresolution.block0`
               (-> 256) and `block1` (-> 512), the feature image resized to 128 first when rendered
               at 64 (EG3D's module; HeadForge's SuperResolution, superres.py).
  not ported   (convert_portraitgan.py reports them): `pose_branch` (GPoseBranch: z, c -> 6 pose
               parameters, MLP 128-32-6), the SMPL deformation of sample points (apply_def, renderer
               buffers shaped_smpl / align_points / face_mask / head_face_mask, "thickness"), the
               background `bcg_synthesis` (a StyleGAN2 network whose 32-channel image fills
               (1 - alpha) of the feature image before ToRGB; HeadForge composites over zero
               features), and the renderer's triplane_crop (densities -1e3 near the box's side walls).

This module: HierarchySynthesisNetwork, a drop-in for synthesis.SynthesisNetwork (same forward
signature, num_ws, noise_buffers) whose levels are {2r: (N, 3*C*D, 2r, 2r)}.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from services.inversion.generators.layers import (FullyConnectedLayer, SynthesisBlock, bias_act, fir_filter,
                                                  modulated_conv2d)


def cross_plane_context(x: torch.Tensor) -> torch.Tensor:
    """(B*3, C, S, S) planes -> (B*3, 3C, S, S): each plane with the other two's axis means (see the
    module docstring's roll-out table)."""
    n, c, s, _ = x.shape
    p = x.view(-1, 3, c, s, s)
    p0, p1, p2 = p[:, 0], p[:, 1], p[:, 2]

    def rows(v):  # v (B, C, S) -> T[i, k] = v[i]
        return v[..., :, None].expand(-1, -1, s, s)

    def cols(v):  # v (B, C, S) -> T[i, k] = v[k]
        return v[..., None, :].expand(-1, -1, s, s)

    out0 = torch.cat([p0, rows(p1.mean(-2)), cols(p2.mean(-1))], 1)
    out1 = torch.cat([cols(p0.mean(-1)), p1, rows(p2.mean(-2))], 1)
    out2 = torch.cat([rows(p0.mean(-2)), cols(p1.mean(-1)), p2], 1)
    return torch.stack([out0, out1, out2], 1).reshape(n, 3 * c, s, s)


def _plane_styles(styles: torch.Tensor) -> torch.Tensor:
    """(B, 9C) affine output -> (B*3, 3C): one style vector per plane."""
    return styles.reshape(styles.shape[0] * 3, styles.shape[1] // 3)


class RollOutLayer(nn.Module):
    """A 3D-aware modulated 3x3 conv (+ noise, bias, lrelu) on (B*3, C_in, S, S) planes."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: bool = False,
                 use_noise: bool = True, conv_clamp: float | None = 256.0):
        super().__init__()
        self.resolution, self.up, self.use_noise, self.conv_clamp = resolution, up, use_noise, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, 9 * in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn([out_channels, 3 * in_channels, 3, 3]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        if up:
            self.register_buffer("resample_filter", fir_filter())

    def forward(self, x, w, noise_mode: str = "const", noise: torch.Tensor | None = None):
        styles = _plane_styles(self.affine(w))
        x = modulated_conv2d(cross_plane_context(x), self.weight, styles, padding=1, up=self.up,
                             resample_filter=getattr(self, "resample_filter", None))
        if self.use_noise and noise_mode != "none":
            if noise is None:
                noise = (torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device, dtype=x.dtype)
                         if noise_mode == "random" else self.noise_const)
            x = x + noise * self.noise_strength
        return bias_act(x, self.bias, "lrelu", clamp=self.conv_clamp)


class RollOutToRGB(nn.Module):
    """The 3D-aware 1x1 ToRGB (no demodulation; weight gain 1 / sqrt(C_in), the per-plane width)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = 256.0):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, 9 * in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn([out_channels, 3 * in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x, w):
        styles = _plane_styles(self.affine(w) * self.weight_gain)
        x = modulated_conv2d(cross_plane_context(x), self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class _Aware3DInner(nn.Module):
    def __init__(self, channels: int, w_dim: int, resolution: int, use_noise: bool, conv_clamp):
        super().__init__()
        self.register_buffer("resample_filter", fir_filter())
        self.conv0 = RollOutLayer(channels, channels, w_dim, resolution, up=True, use_noise=use_noise,
                                  conv_clamp=conv_clamp)
        self.conv1 = RollOutLayer(channels, channels, w_dim, resolution, use_noise=use_noise, conv_clamp=conv_clamp)
        self.torgb = RollOutToRGB(channels, channels, w_dim, conv_clamp=conv_clamp)


class Aware3DBlock(nn.Module):
    """Level 2r from the 2D skip image at r (+ the previous level): (B*3, C*D, 2r, 2r)."""

    def __init__(self, plane_channels: int, w_dim: int, resolution: int, use_noise: bool = True,
                 conv_clamp: float | None = 256.0):
        super().__init__()
        self.block = _Aware3DInner(plane_channels, w_dim, 2 * resolution, use_noise, conv_clamp)

    def noise_layers(self) -> dict[str, RollOutLayer]:
        return {k: getattr(self.block, k) for k in ("conv0", "conv1") if getattr(self.block, k).use_noise}

    def forward(self, previous, img2d, w, noise_mode: str = "const", noise: dict | None = None):
        noise = noise or {}
        n, c3, r, _ = img2d.shape
        x = img2d.reshape(n * 3, c3 // 3, r, r)
        if previous is not None:
            x = x + previous
        x = self.block.conv0(x, w, noise_mode, noise.get("conv0"))
        x = self.block.conv1(x, w, noise_mode, noise.get("conv1"))
        return self.block.torgb(x, w)


class HierarchySynthesisNetwork(nn.Module):
    """3DPortraitGAN's backbone.synthesis: forward(ws) -> (None, {2r: (N, 3*C*D, 2r, 2r)})."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, use_noise: bool = True,
                 conv_clamp: float | None = 256.0):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1) or img_channels % 3:
            raise ValueError(f"resolution must be a power of two >= 4 and channels a multiple of 3, got "
                             f"{img_resolution}, {img_channels}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.num_ws = 1
        for res in self.block_resolutions:
            block = SynthesisBlock(img_channels if res > 4 else 0, img_channels, w_dim, res, img_channels,
                                   use_noise=use_noise, conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
            setattr(self, f"b3d{res}", Aware3DBlock(img_channels // 3, w_dim, res, use_noise, conv_clamp))

    def blocks(self) -> list[tuple[str, nn.Module]]:
        out = []
        for res in self.block_resolutions:
            out += [(f"b{res}", getattr(self, f"b{res}")), (f"b3d{res}", getattr(self, f"b3d{res}"))]
        return out

    def noise_buffers(self) -> dict[str, torch.Tensor]:
        return {f"{name}.{k}": layer.noise_const for name, block in self.blocks()
                for k, layer in block.noise_layers().items()}

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", noise: dict[str, torch.Tensor] | None = None,
                keep_levels: tuple[int, ...] = ()) -> tuple[None, dict[int, torch.Tensor]]:
        noise = noise or {}

        def block_noise(name):
            return {k.split(".", 1)[1]: v for k, v in noise.items() if k.startswith(name + ".")}

        x = img = level = None
        levels: dict[int, torch.Tensor] = {}
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img, _ = block(x, img, block_ws, noise_mode, block_noise(f"b{res}"))
            level = getattr(self, f"b3d{res}")(level, img, block_ws[:, -1], noise_mode, block_noise(f"b3d{res}"))
            levels[2 * res] = level.reshape(ws.shape[0], 3 * level.shape[1], 2 * res, 2 * res)
        return None, levels
