"""Feature-field representations: EG3D tri-plane, PanoHead tri-grid and 3DPortraitGAN pyramid tri-grid,
decoded by a small MLP and volume-rendered by services/render/representations/volume.py.

Kinds and parameter layouts (exactly the NPZ layout of render.proto's AssetFormat):
  "triplane"         "planes" (3, C, R, R): three feature planes, bilinear sampling.
  "trigrid"          "planes" (3, D, C, R, R): each plane has D depth slices along its third axis,
                     trilinear sampling (PanoHead).
  "pyramid_trigrid"  "level_<R>" (3, D, C, R, R) for each level side R (default 8, 16, ..., 512);
                     the features of every level are added (3DPortraitGAN, as used by Portrait3D-Text).
Features of the three planes are reduced by "mean" (EG3D and PanoHead) or "sum" (the pyramid's default,
as the paper describes), then the levels are summed.

Coordinates: a world point p (world units, render.proto / common.proto conventions) maps to
q = p / box_size, so the box [-box_size, box_size]^3 fills the grids' [-1, 1]^3 (EG3D's box_warp is
2 * box_size). Sampling is torch's grid_sample with align_corners=False (texel centres at
(2i + 1) / R - 1) and zero padding, as in EG3D and PanoHead. Plane axes ("plane_axes"): each plane reads
its width (u), height (v) and depth (w) coordinates from three world axes:
  "xy_xz_zy" (default, the layout render.proto documents): xy -> (x, y | z), xz -> (x, z | y),
             zy -> (z, y | x).
  "eg3d":     EG3D's released code, whose third plane is actually (z, x | y) (a known quirk of its
             generate_planes); use it for EG3D checkpoints.
  "panohead": PanoHead's tri-grid: (x, y | z), (x, z | y), (y, z | x).
The world frame of a converted GAN must still be mapped onto HeadForge's (+Y up, face toward +Z) by
the converter (axis flips are a permutation/flip of the plane arrays).

Decoder (EG3D's OSGDecoder): Linear(C, 64) -> softplus -> Linear(64, 1 + K); output 0 is the raw density
(activation in the renderer: EG3D's softplus(raw - 1) by default, or trunc_exp), outputs 1..K the colour
sigmoid(x) * (1 + 2 * 0.001) - 0.001 (EG3D's widened sigmoid, so 0 and 1 are reachable); the first
three are RGB, further channels are features for a super-resolution head ("features" output). NPZ
weights are plain (out, in) matrices: EG3D's equalised-learning-rate gain (lr_multiplier / sqrt(in))
must be folded into them by the converter.

Parameter groups: "planes" (or one "level_<R>" per pyramid level) and "decoder". Default Adam learning
rates (`default_learning_rates`): features 0.02, decoder 0.005; pyramid levels keep Portrait3D-Text's
ratios (its Adan rates 1.0 for R <= 128, 0.2 at 256, 0.1 at 512, scaled to the Adam base 0.02). These
fit a tri-plane from random features to a procedural head in a few hundred steps (tests/render).
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Collection, Mapping

import numpy as np
import torch
from torch import nn

from services.common.errors import InvalidArgument
from services.core.camera_batch import CameraBatch
from services.core import volume
from services.core.field_npz import META_KEYS, FieldArrays, read_field_npz, write_field_npz
from services.core.planes import decode_osg, feature_sampler
from services.render.representations import mesh_io
from services.render.representations.base import Representation, SceneKind
from services.render.representations.field_config import (DEFAULT_PLANE_LR, DEFAULT_DECODER_LR, DEFAULT_LEVELS, OPTIONS,
                                                           FieldConfig, default_learning_rates, field_config,
                                                           level_lr_scale)

FIELD_OUTPUTS = frozenset({"rgb", "alpha", "depth", "normal_camera", "normal_world"})
MESH_RESOLUTION = 128   # marching-cubes grid of a mesh export
MESH_DENSITY = 5.0      # the surface's density (per world unit): about 40% opacity over a 0.1 step


# ---------------------------------------------------------------------------------------------------
# sampling


class FeatureField(nn.Module):
    """The feature grids of one kind. forward(points (P, 3) world units) -> features (P, C): planes
    reduced by mean or sum, levels summed."""

    def __init__(self, cfg: FieldConfig):
        super().__init__()
        self.kind = cfg.kind
        self.box_size = cfg.box_size
        self.reduction = cfg.plane_reduction
        self.plane_axes = cfg.plane_axes
        self.grids = nn.ParameterDict({n: nn.Parameter(torch.zeros(cfg.grid_shape(n))) for n in cfg.grid_names()})

    @property
    def channels(self) -> int:
        g = next(iter(self.grids.values()))
        return g.shape[1] if self.kind == "triplane" else g.shape[2]

    def sampler(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """A function points (P, 3) world -> features (C, P), channel-first (what the decoder eats
        without a transpose). Tri-grids are permuted to channel-first once here, not per call: take one
        sampler per render."""
        if self.kind == "triplane":
            grids = [self.grids["planes"]]
        else:
            grids = [g.permute(0, 2, 1, 3, 4).contiguous() for g in self.grids.values()]
        return feature_sampler(self.kind, grids, plane_axes=self.plane_axes, box_size=self.box_size,
                               reduction=self.reduction)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """points (P, 3) world units -> features (P, C)."""
        return self.sampler()(points).t()


class FieldDecoder(nn.Module):
    """EG3D OSGDecoder-like MLP: Linear layers with softplus between them. forward(features (P, C)) ->
    raw density (P,) (before activation) and colour (P, K) in [-0.001, 1.001]."""

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (64,), rgb_channels: int = 3,
                 colour_activation: str = "sigmoid"):
        super().__init__()
        self.colour_activation = colour_activation
        widths = [in_features, *hidden, 1 + rgb_channels]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def reset_parameters(self, generator: torch.Generator) -> None:
        """Weights N(0, 1 / fan_in) (EG3D's equalised-lr layers at lr_multiplier 1), biases 0."""
        with torch.no_grad():
            for layer in self.layers:
                w = torch.randn(layer.weight.shape, generator=generator, dtype=layer.weight.dtype)
                layer.weight.copy_(w / math.sqrt(layer.in_features))
                layer.bias.zero_()

    def decode_channels_first(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (C, P) -> raw density (P,), colour (P, K) (planes.decode_osg)."""
        return decode_osg([(layer.weight, layer.bias) for layer in self.layers], x, self.colour_activation)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (P, C) -> raw density (P,), colour (P, K)."""
        return self.decode_channels_first(x.t())


# ---------------------------------------------------------------------------------------------------
# representations


class FieldRepresentation(Representation):
    """A feature field + decoder scene. Subclasses fix `kind`. Build with create() (random init),
    from_npz() (inversion.ExportField files) or from_config() + load_state_tensors()."""

    outputs: ClassVar[frozenset[str]] = FIELD_OUTPUTS
    default_lrs: ClassVar[dict[str, float]] = {"planes": DEFAULT_PLANE_LR, "decoder": DEFAULT_DECODER_LR}

    def __init__(self, cfg: FieldConfig):
        super().__init__()
        if cfg.kind != self.kind:
            raise InvalidArgument("kind", f"{type(self).__name__} renders {self.kind!r}, config is {cfg.kind!r}")
        self.cfg = cfg
        self.field = FeatureField(cfg)
        self.decoder = FieldDecoder(cfg.channels, cfg.hidden, cfg.rgb_channels, cfg.colour_activation)
        self.settings = cfg.volume_settings()
        # instance values shadow the class defaults: pyramid groups depend on the levels
        self.default_lrs = default_learning_rates(cfg)
        if cfg.rgb_channels > 3:
            self.outputs = FIELD_OUTPUTS | {"features"}
        for group in cfg.frozen_groups:
            self._apply_frozen(group, True)

    # construction -------------------------------------------------------------------------------

    @classmethod
    def create(cls, init: Mapping[str, Any] | None = None, *, seed: int = 0,
               options: Mapping[str, Any] | None = None) -> "FieldRepresentation":
        """Random field: features N(0, init_std), decoder as FieldDecoder.reset_parameters, drawn from
        `seed` (the same seed gives the same field). init mirrors FieldInit, options OPTIONS."""
        obj = cls(field_config(cls.kind, init, options))
        gen = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            for g in obj.field.grids.values():
                g.copy_(torch.randn(g.shape, generator=gen) * obj.cfg.init_std)
        obj.decoder.reset_parameters(gen)
        return obj

    def config(self) -> dict:
        return self.cfg.as_dict()

    @classmethod
    def from_config(cls, config: dict) -> "FieldRepresentation":
        """Zero-filled parameters of the configured shapes; InvalidArgument for a bad config."""
        try:
            cfg = FieldConfig(**config)
        except TypeError as e:
            raise InvalidArgument("config", str(e)) from None
        return FIELD_CLASSES[cfg.kind](cfg) if cls is FieldRepresentation else cls(cfg)

    # optimisation ------------------------------------------------------------------------------

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Every group, frozen ones included (their parameters have requires_grad False)."""
        groups = {name: [p] for name, p in self.field.grids.items()}
        groups["decoder"] = list(self.decoder.parameters())
        return groups

    @property
    def frozen_groups(self) -> tuple[str, ...]:
        return self.cfg.frozen_groups

    def set_frozen(self, group: str, frozen: bool = True) -> None:
        """Freeze (no gradients computed, not optimised) or unfreeze a parameter group."""
        if group not in self.cfg.group_names():
            raise InvalidArgument("group", f"unknown parameter group {group!r}; groups: {self.cfg.group_names()}")
        self._apply_frozen(group, frozen)
        rest = tuple(g for g in self.cfg.frozen_groups if g != group)
        self.cfg = self.cfg.with_(frozen_groups=rest + ((group,) if frozen else ()))

    def _apply_frozen(self, group: str, frozen: bool) -> None:
        for p in self.parameter_groups()[group]:
            p.requires_grad_(not frozen)

    def regularizers(self) -> dict[str, Callable[..., torch.Tensor]]:
        """"tv": mean squared difference of neighbouring texels (all grid axes, averaged over grids);
        "l1": mean absolute feature value (averaged over grids)."""
        spatial = (2, 3) if self.kind == "triplane" else (1, 3, 4)  # not the plane or channel axes

        def tv(**_):
            terms = [torch.diff(g, dim=d).square().mean()
                     for g in self.field.grids.values() for d in spatial if g.shape[d] > 1]
            return torch.stack(terms).mean()

        def l1(**_):
            return torch.stack([g.abs().mean() for g in self.field.grids.values()]).mean()

        return {"tv": tv, "l1": l1}

    # rendering ---------------------------------------------------------------------------------

    def query_function(self) -> volume.Query:
        """points (P, 3) world -> (raw density (P,), colour (P, K)); grids prepared once."""
        features = self.field.sampler()
        decoder = self.decoder

        def query(points: torch.Tensor):
            return decoder.decode_channels_first(features(points))

        return query

    def render_rays(self, origins: torch.Tensor, dirs: torch.Tensor, *, want_normals: bool = False,
                    perturb: bool = False, generator: torch.Generator | None = None,
                    t: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Per-ray outputs of volume.render_rays (origins, dirs (R, 3) world, dirs unit length)."""
        return volume.render_rays(self.query_function(), origins, dirs, self.settings, want_normals=want_normals,
                                  perturb=perturb, generator=generator, t=t)

    def render(self, cameras: CameraBatch, outputs: Collection[str], background: torch.Tensor | None = None,
               *, perturb: bool = False, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Images (render.proto names and shapes) for N cameras. perturb: random stratified jitter and
        importance samples from `generator` (training renders); False = deterministic."""
        unknown = set(outputs) - self.outputs
        if unknown:
            raise InvalidArgument("outputs", f"{self.kind} cannot render {sorted(unknown)}; "
                                             f"outputs: {sorted(self.outputs)}")
        p = self.decoder.layers[0].weight
        cams = cameras.to(device=p.device, dtype=p.dtype)
        return volume.render_cameras(self.query_function(), cams, outputs, self.settings, background=background,
                                     generator=generator, perturb=perturb)

    # files -------------------------------------------------------------------------------------

    def mesh_data(self, resolution: int = MESH_RESOLUTION, threshold: float = MESH_DENSITY) -> mesh_io.MeshData:
        """The surface where the activated density (per world unit) crosses `threshold`, by marching cubes
        on a resolution^3 grid over the field's box; vertex colours are the decoded colour there."""
        from skimage.measure import marching_cubes

        p = self.decoder.layers[0].weight
        half = float(self.cfg.box_size)
        lin = torch.linspace(-half, half, resolution, device=p.device, dtype=p.dtype)
        query = self.query_function()
        with torch.no_grad():
            sigma = []
            for x in lin:   # one slab at a time: resolution^2 points
                pts = torch.stack(torch.meshgrid(x.view(1), lin, lin, indexing="ij"), -1).view(-1, 3)
                raw, _ = query(pts)
                sigma.append(volume.activate_density(raw, self.settings.density_activation).view(resolution, resolution)
                             * self.settings.density_scale)
            grid = torch.stack(sigma).cpu().float().numpy()
        if not grid.min() < threshold < grid.max():
            raise mesh_io.EmptyMeshError("scene", f"the density never crosses {threshold} inside the box: no surface")
        step = 2 * half / (resolution - 1)
        verts, faces, _, _ = marching_cubes(grid, level=threshold, spacing=(step,) * 3)
        verts = (verts - half).astype(np.float32)
        with torch.no_grad():
            _, colour = query(torch.as_tensor(verts, device=p.device, dtype=p.dtype))
        colours = colour[:, :3].clamp(0, 1).cpu().float().numpy()
        # marching cubes on density (high inside) winds faces inward: flip them to CCW from outside
        return mesh_io.MeshData(verts, faces[:, ::-1].astype(np.int64).copy(), vertex_colors=colours)

    def export(self, fmt: str, *, scale: float = 1.0) -> bytes:
        """"npz": render.proto's field layout (float32 arrays, uint8 "kind" and JSON "meta"; world units, so
        scale must be 1); "glb", "ply", "obj_zip": the density's surface (mesh_data), vertex-coloured, its
        positions multiplied by scale (e.g. metres per world unit for a GLB)."""
        if fmt in ("glb", "ply", "obj_zip"):
            return mesh_io.export_mesh(self.mesh_data(), fmt, scale or 1.0)
        if fmt == "npz" and (scale or 1.0) != 1.0:
            raise ValueError("a field file keeps world units: export npz with scale 1")
        if fmt != "npz":
            raise ValueError(f"{self.kind} cannot be exported as {fmt}")
        c = self.cfg
        meta = {key: getattr(c, key) for key in META_KEYS}
        return write_field_npz(FieldArrays(
            self.kind, {name: g.detach().cpu().float().numpy() for name, g in self.field.grids.items()},
            [(layer.weight.detach().cpu().float().numpy(), layer.bias.detach().cpu().float().numpy())
             for layer in self.decoder.layers], meta))

    @classmethod
    def from_npz(cls, data: bytes, options: Mapping[str, Any] | None = None) -> "FieldRepresentation":
        """Read an NPZ written by export() or inversion.ExportField. On FieldRepresentation itself any
        kind; on a subclass the file's kind must match. options (OPTIONS) override the file's settings.
        InvalidArgument ("asset") for anything malformed; no pickles are ever loaded."""
        cfg, tensors = _parse_npz(data, options)
        if cls is not FieldRepresentation and cfg.kind != cls.kind:
            raise InvalidArgument("asset", f"the file holds a {cfg.kind!r} field, not {cls.kind!r}")
        obj = FIELD_CLASSES[cfg.kind](cfg)
        obj.load_state_tensors(tensors)
        return obj


class TriplaneRepresentation(FieldRepresentation):
    """EG3D tri-plane: planes (3, C, R, R)."""

    kind = "triplane"


class TrigridRepresentation(FieldRepresentation):
    """PanoHead tri-grid: planes (3, D, C, R, R)."""

    kind = "trigrid"


class PyramidTrigridRepresentation(FieldRepresentation):
    """3DPortraitGAN pyramid tri-grid: level_<R> (3, D, C, R, R) per level, summed."""

    kind = "pyramid_trigrid"
    default_lrs: ClassVar[dict[str, float]] = {
        **{f"level_{r}": DEFAULT_PLANE_LR * level_lr_scale(r) for r in DEFAULT_LEVELS},
        "decoder": DEFAULT_DECODER_LR}


FIELD_CLASSES: dict[str, type[FieldRepresentation]] = {
    "triplane": TriplaneRepresentation, "trigrid": TrigridRepresentation,
    "pyramid_trigrid": PyramidTrigridRepresentation}




def load_field_npz(data: bytes, options: Mapping[str, Any] | None = None) -> FieldRepresentation:
    """A field scene of whatever kind the NPZ holds."""
    return FieldRepresentation.from_npz(data, options)


# ---------------------------------------------------------------------------------------------------
# NPZ parsing


def _parse_npz(data: bytes, options: Mapping[str, Any] | None) -> tuple[FieldConfig, dict[str, torch.Tensor]]:
    """(config, state tensors keyed like state_dict()) from NPZ bytes; InvalidArgument("asset") when
    malformed (services.core.field_npz checks the layout)."""
    f = read_field_npz(data)
    settings = {k: v for k, v in f.meta.items() if k not in ("box_size", "rgb_channels")}
    for k in ("ray_start", "ray_end"):
        if settings.get(k) in (None, "auto"):
            settings[k] = 0.0
    try:
        init = {"resolution": f.resolution, "channels": f.channels, "depth": f.depth, "levels": f.levels}
        opts = {**settings, "hidden": f.hidden, "rgb_channels": f.rgb_channels, **(options or {})}
        cfg = field_config(f.kind, {**init, "box_size": f.meta.get("box_size", 1.0)}, opts)
    except InvalidArgument as e:
        raise InvalidArgument("asset", f"bad settings: {e.message}", reason="ASSET_UNDECODABLE") from None
    tensors = {f"field.grids.{k}": torch.from_numpy(g.astype(np.float32)) for k, g in f.grids.items()}
    for i, (w, b) in enumerate(f.decoder):
        tensors[f"decoder.layers.{i}.weight"] = torch.from_numpy(w.astype(np.float32))
        tensors[f"decoder.layers.{i}.bias"] = torch.from_numpy(b.astype(np.float32))
    return cfg, tensors


def _scene_kind(cls: type[FieldRepresentation]) -> SceneKind:
    def create(init: Mapping[str, Any], seed: int, options: Mapping[str, str], limits) -> FieldRepresentation:
        return cls.create(init, seed=seed, options=options)

    def from_asset(data: bytes, fmt: str, options: Mapping[str, str]) -> FieldRepresentation:
        if fmt != "npz":
            raise InvalidArgument("asset.format", f"a {cls.kind} scene is created from NPZ, not {fmt}")
        return cls.from_npz(data, options)

    def init_bytes(init: Mapping[str, Any], options: Mapping[str, str], limits) -> int:
        return field_config(cls.kind, init, options).parameter_bytes()

    return SceneKind(cls, create, from_asset, dict(OPTIONS), ("npz", "glb", "ply", "obj_zip"), ("tv", "l1"),
                     init_bytes=init_bytes)


TRIPLANE_KIND = _scene_kind(TriplaneRepresentation)
TRIGRID_KIND = _scene_kind(TrigridRepresentation)
PYRAMID_TRIGRID_KIND = _scene_kind(PyramidTrigridRepresentation)
