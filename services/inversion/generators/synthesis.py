"""StyleGAN2 'skip' synthesis network producing feature planes instead of an RGB image.

Blocks b4, b8, ..., b{R} (R = plane resolution), channels min(channel_base // res, channel_max); each
block's toRGB has `img_channels` = 3 * C * D outputs (three planes, C channels, D depth slices; D = 1
for a tri-plane). forward(ws (N, num_ws, w_dim)) -> (img (N, 3*C*D, R, R), per-block toRGB outputs
{res: (N, 3*C*D, res, res)}), the latter for the pyramid tri-grid, whose level R is block R's own toRGB
output. num_ws = sum of the blocks' convolutions + 1 (StyleGAN2's sharing of the toRGB w with the
next block's first convolution).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from services.inversion.generators.layers import SynthesisBlock


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, use_noise: bool = True, conv_clamp: float | None = 256.0):
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"plane resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_channels, channels[res], w_dim, res, img_channels, use_noise=use_noise,
                                   conv_clamp=conv_clamp)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1

    def blocks(self) -> list[tuple[str, SynthesisBlock]]:
        return [(f"b{res}", getattr(self, f"b{res}")) for res in self.block_resolutions]

    def noise_buffers(self) -> dict[str, torch.Tensor]:
        """The constant noise inputs by name ("b8.conv0", ...): (res, res) each."""
        return {f"{name}.{k}": layer.noise_const for name, block in self.blocks()
                for k, layer in block.noise_layers().items()}

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", noise: dict[str, torch.Tensor] | None = None,
                keep_levels: tuple[int, ...] = ()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        noise = noise or {}
        x = img = None
        w_idx = 0
        levels: dict[int, torch.Tensor] = {}
        for name, block in self.blocks():
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            block_noise = {k.split(".", 1)[1]: v for k, v in noise.items() if k.startswith(name + ".")}
            x, img, y = block(x, img, block_ws, noise_mode, block_noise)
            if block.resolution in keep_levels:
                levels[block.resolution] = y
        return img, levels
