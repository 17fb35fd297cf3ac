"""The 2D super-resolution head (EG3D's SuperresolutionHybrid family): the neural rendering's RGB and
feature image at the neural resolution r -> RGB at the output resolution S = r * 2^k.

A chain of StyleGAN2 synthesis blocks (block0, block1, ...), each up-sampling 2x, every block
conditioned on the last w of ws repeated, noise off at render time (EG3D's superresolution_noise_mode
"none"); the image path starts from the neural RGB (skip architecture), so an untrained head adds a
residual to the up-sampled rendering. Values follow EG3D: inputs and output in [-1, 1] (callers map
[0, 1] colours with 2c - 1 and back).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from services.inversion.generators.layers import SynthesisBlock


class SuperResolution(nn.Module):
    def __init__(self, in_channels: int, w_dim: int, input_resolution: int, output_resolution: int,
                 channels: tuple[int, ...] = (128, 64), conv_clamp: float | None = 256.0):
        super().__init__()
        steps = int(round(math.log2(output_resolution / input_resolution)))
        if steps < 1 or input_resolution * 2 ** steps != output_resolution:
            raise ValueError(f"output resolution {output_resolution} must be the neural resolution "
                             f"{input_resolution} times a power of two >= 2")
        self.input_resolution, self.output_resolution, self.steps = input_resolution, output_resolution, steps
        widths = [in_channels] + [channels[min(i, len(channels) - 1)] for i in range(steps)]
        for i in range(steps):
            setattr(self, f"block{i}", SynthesisBlock(widths[i], widths[i + 1], w_dim, input_resolution * 2 ** (i + 1),
                                                      3, use_noise=True, conv_clamp=conv_clamp))

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
        """rgb (N, 3, r, r), x (N, K, r, r) in [-1, 1]; ws (N, num_ws, w_dim) -> (N, 3, S, S) in ~[-1, 1]."""
        w = ws[:, -1:].repeat(1, 3, 1)
        img = rgb
        for i in range(self.steps):
            x, img, _ = getattr(self, f"block{i}")(x, img, w, noise_mode="none")
        return img
