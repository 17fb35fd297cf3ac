"""Render a field file (services/core/field_npz.py) without a render service: the same sampling (planes.py),
decoder (planes.decode_osg) and ray marching (volume.py) a field scene uses, read-only. For the places that
must see a known field but may not depend on the render service: the oracle prior's exemplars of a GAN
sample and the closed-loop checks' ground truth. Settings come from the file's meta exactly as the render
service reads them (defaults: 48 + 48 samples, the box intersection, softplus, density_scale 1, plane axes
"xy_xz_zy", planes reduced by "sum" for a pyramid tri-grid and "mean" otherwise, sigmoid colours)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection

import numpy as np
import torch

from services.core import volume
from services.core.camera_batch import CameraBatch
from services.core.field_npz import FieldArrays, read_field_npz
from services.core.planes import decode_osg, feature_sampler

_RAY_KEYS = ("samples_per_ray", "importance_samples", "ray_start", "ray_end", "density_activation", "density_scale")


@dataclass
class FieldRenderer:
    """A field file ready to render. grids: channel-first tensors, one per level; decoder: [(W, b)]."""

    kind: str
    grids: list[torch.Tensor]
    decoder: list[tuple[torch.Tensor, torch.Tensor]]
    settings: volume.VolumeSettings
    plane_axes: str
    reduction: str
    colour_activation: str = "sigmoid"

    @classmethod
    def from_arrays(cls, f: FieldArrays) -> "FieldRenderer":
        meta = f.meta
        box = float(meta.get("box_size", 1.0))
        ray = {k: meta[k] for k in _RAY_KEYS if meta.get(k) not in (None, "auto")}
        settings = volume.volume_settings(volume.RaySettings(**ray), box, 2.0 * box / f.resolution)
        grids = [torch.from_numpy(np.asarray(g, np.float32)) for g in f.grids.values()]
        if f.kind != "triplane":
            grids = [g.permute(0, 2, 1, 3, 4).contiguous() for g in grids]   # (3, D, C, R, R) -> (3, C, D, R, R)
        decoder = [(torch.from_numpy(np.asarray(w, np.float32)), torch.from_numpy(np.asarray(b, np.float32)))
                   for w, b in f.decoder]
        reduction = meta.get("plane_reduction") or ("sum" if f.kind == "pyramid_trigrid" else "mean")
        return cls(f.kind, grids, decoder, settings, meta.get("plane_axes") or "xy_xz_zy", reduction,
                   meta.get("colour_activation") or "sigmoid")

    @classmethod
    def from_npz(cls, data: bytes) -> "FieldRenderer":
        """From NPZ bytes; InvalidArgument("asset") when malformed (field_npz checks the layout)."""
        return cls.from_arrays(read_field_npz(data))

    def query(self) -> volume.Query:
        features = feature_sampler(self.kind, self.grids, plane_axes=self.plane_axes,
                                   box_size=self.settings.box_size, reduction=self.reduction)
        return lambda points: decode_osg(self.decoder, features(points), self.colour_activation)

    @torch.no_grad()
    def render(self, cameras: CameraBatch, outputs: Collection[str] = ("rgb",),
               background: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """volume.render_cameras' images (N, C, H, W) for float32 CPU cameras, deterministic (no jitter)."""
        return volume.render_cameras(self.query(), cameras.to(dtype=torch.float32), outputs, self.settings,
                                     background=background)
