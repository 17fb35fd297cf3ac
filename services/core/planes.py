"""Tri-plane / tri-grid feature sampling and the OSG decoder: how a field of feature grids turns a
world point into (raw density, colour). Shared by the render service's field scenes and the inversion
service's 3D-GAN generators, so a field samples and decodes the same wherever it lives.

Layouts (render.proto's field NPZ): "triplane" grids (3, C, R, R); "trigrid" and each
"pyramid_trigrid" level (3, D, C, R, R) on file, sampled channel-first (3, C, D, R, R). Coordinates:
a world point p maps to q = p / box_size in [-1, 1]^3; grid_sample with align_corners=False and zero
padding (EG3D, PanoHead). Plane axes: per plane, the world-axis indices read as (u = width, v = height,
w = depth):
  "xy_xz_zy" (default): xy -> (x, y | z), xz -> (x, z | y), zy -> (z, y | x);
  "eg3d":     EG3D's released generate_planes, whose third plane is (z, x | y);
  "panohead": PanoHead's tri-grid: (x, y | z), (x, z | y), (y, z | x).
Features of the three planes are reduced by "mean" (EG3D, PanoHead) or "sum" (the pyramid's default),
then levels are summed.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F

FIELD_KINDS = ("triplane", "trigrid", "pyramid_trigrid")
PLANE_REDUCTIONS = ("mean", "sum")
PLANE_AXES = {
    "xy_xz_zy": ((0, 1, 2), (0, 2, 1), (2, 1, 0)),
    "eg3d": ((0, 1, 2), (0, 2, 1), (2, 0, 1)),
    "panohead": ((0, 1, 2), (0, 2, 1), (1, 2, 0)),
}
COLOUR_WIDENING = 0.001  # EG3D's sigmoid(x) * (1 + 2 * 0.001) - 0.001, so 0 and 1 are reachable


def sample_planes(planes: torch.Tensor, coords: torch.Tensor, axes) -> torch.Tensor:
    """Bilinear features of three planes. planes (3, C, R, R) indexed [plane, channel, v, u]; coords
    (P, 3) in [-1, 1] (zero outside); axes: per plane the (u, v, w) world-axis indices. -> (3, C, P)."""
    uv = torch.stack([torch.stack((coords[:, a[0]], coords[:, a[1]]), -1) for a in axes])  # (3, P, 2)
    out = F.grid_sample(planes, uv[:, None], mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.squeeze(2)  # a view (indexing would zero-fill a full-size gradient in backward)


def sample_trigrid(grids: torch.Tensor, coords: torch.Tensor, axes) -> torch.Tensor:
    """Trilinear features of three depth-D planes. grids (3, C, D, R, R) (channel-first: the NPZ's
    (3, D, C, R, R) permuted) indexed [plane, channel, w, v, u]; coords (P, 3) in [-1, 1]; the depth
    slices sit at w = (2k + 1) / D - 1 (align_corners=False). -> (3, C, P)."""
    uvw = torch.stack([torch.stack([coords[:, i] for i in a], -1) for a in axes])  # (3, P, 3)
    out = F.grid_sample(grids, uvw[:, None, None], mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.flatten(2)


def feature_sampler(kind: str, grids: Sequence[torch.Tensor], *, plane_axes: str, box_size: float,
                    reduction: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """points (P, 3) world units -> features (C, P), channel-first. grids: channel-first tensors, one per
    level: (3, C, R, R) for "triplane", (3, C, D, R, R) otherwise."""
    axes = PLANE_AXES[plane_axes]
    sample = sample_planes if kind == "triplane" else sample_trigrid
    grids, mean = list(grids), reduction == "mean"

    def features(points: torch.Tensor) -> torch.Tensor:
        coords = points / box_size
        total = None
        for g in grids:
            f = sample(g, coords, axes).sum(0)
            total = f if total is None else total + f
        return total / 3 if mean else total  # the mean over planes, scaled once after the level sum

    return features


COLOUR_ACTIVATIONS = ("sigmoid", "none")


def decode_osg(layers: Sequence[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor, colour_activation: str = "sigmoid"
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """EG3D's OSGDecoder on channel-first features: x (C, P); layers [(weight (out, in), bias (out,))],
    softplus between them. -> raw density (P,) (before activation), colour (P, K): in [-0.001, 1.001] for
    colour_activation "sigmoid" (EG3D), the last layer's output as is for "none" (a linear decoder, e.g. a
    3DPortraitGAN field whose ToRGB is folded into that layer). Works on (width, P) activations, so the big
    (P, C) transposes are never materialised."""
    last = len(layers) - 1
    for i, (w, b) in enumerate(layers):
        x = torch.addmm(b[:, None], w, x)
        if i < last:
            x = F.softplus(x)
    if colour_activation == "none":
        return x[0], x[1:].t()
    return x[0], (torch.sigmoid(x[1:]) * (1 + 2 * COLOUR_WIDENING) - COLOUR_WIDENING).t()
