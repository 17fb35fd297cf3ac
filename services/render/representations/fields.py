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
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, ClassVar, Collection, Mapping

import numpy as np
import torch
from torch import nn

from services.common.errors import InvalidArgument
from services.core.camera_batch import CameraBatch
from services.core import volume
from services.core.field_npz import FieldArrays, read_field_npz, write_field_npz
from services.core.planes import FIELD_KINDS, PLANE_AXES, PLANE_REDUCTIONS, decode_osg, feature_sampler
from services.render.representations.base import Representation, SceneKind

KINDS = FIELD_KINDS
DEFAULT_LEVELS = (8, 16, 32, 64, 128, 256, 512)
FIELD_OUTPUTS = frozenset({"rgb", "alpha", "depth", "normal_camera", "normal_world"})
DEFAULT_PLANE_LR = 0.02
DEFAULT_DECODER_LR = 0.005


def level_lr_scale(resolution: int) -> float:
    """Portrait3D-Text's per-level learning-rate ratio: 1 up to 128, 0.2 at 256, 0.1 above."""
    return 1.0 if resolution <= 128 else 0.2 if resolution <= 256 else 0.1


# ---------------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class FieldConfig:
    """Everything that defines a field scene except its parameter values (JSON-serialisable via
    as_dict). Sizes: resolution R and levels in texels, channels C, depth D slices (1 for triplane);
    box_size world units (resolution of a pyramid = its finest level); init_std the random features'
    standard deviation (create() only); hidden the decoder's
    hidden widths; rgb_channels K >= 3 decoded colour/feature channels. Rendering: see
    volume.VolumeSettings (normal_eps 0 = one texel of the finest grid). frozen_groups: parameter
    groups not optimised."""

    kind: str
    resolution: int = 256
    channels: int = 32
    depth: int = 3
    levels: tuple[int, ...] = DEFAULT_LEVELS
    box_size: float = 1.0
    init_std: float = 0.1
    hidden: tuple[int, ...] = (64,)
    rgb_channels: int = 3
    plane_reduction: str = "mean"
    plane_axes: str = "xy_xz_zy"
    density_activation: str = "softplus"
    density_scale: float = 1.0
    samples_per_ray: int = 48
    importance_samples: int = 48
    ray_start: float = 0.0
    ray_end: float = 0.0
    normal_method: str = "finite_difference"
    normal_eps: float = 0.0
    chunk_rays: int = 4096
    frozen_groups: tuple[str, ...] = ()

    def __post_init__(self):
        for name in ("levels", "hidden", "frozen_groups"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.kind == "triplane":
            object.__setattr__(self, "depth", 1)
        if self.kind != "pyramid_trigrid":
            object.__setattr__(self, "levels", ())
        elif self.levels:  # a pyramid's "resolution" is its finest level
            object.__setattr__(self, "resolution", max(self.levels))
        self.validate()

    def validate(self) -> None:
        """InvalidArgument naming the bad setting."""
        def bad(name: str, why: str):
            raise InvalidArgument(f"field.{name}", why)

        if self.kind not in KINDS:
            bad("kind", f"unknown field kind {self.kind!r}; expected one of {KINDS}")
        if self.kind != "pyramid_trigrid" and not 2 <= self.resolution <= 4096:
            bad("resolution", f"must be in [2, 4096], got {self.resolution}")
        if self.kind == "pyramid_trigrid":
            if not self.levels or any(not 2 <= r <= 4096 for r in self.levels) \
                    or list(self.levels) != sorted(set(self.levels)):
                bad("levels", f"must be distinct ascending sides in [2, 4096], got {list(self.levels)}")
        if not 1 <= self.channels <= 1024:
            bad("channels", f"must be in [1, 1024], got {self.channels}")
        if not 1 <= self.depth <= 64:
            bad("depth", f"must be in [1, 64], got {self.depth}")
        if not (self.box_size > 0 and math.isfinite(self.box_size)):
            bad("box_size", f"must be > 0, got {self.box_size}")
        if not (self.init_std >= 0 and math.isfinite(self.init_std)):
            bad("init_std", f"must be >= 0, got {self.init_std}")
        if not self.hidden or any(h < 1 for h in self.hidden):
            bad("hidden", f"needs at least one positive width, got {list(self.hidden)}")
        if self.rgb_channels < 3:
            bad("rgb_channels", f"must be >= 3, got {self.rgb_channels}")
        if self.plane_reduction not in PLANE_REDUCTIONS:
            bad("plane_reduction", f"must be one of {PLANE_REDUCTIONS}")
        if self.plane_axes not in PLANE_AXES:
            bad("plane_axes", f"must be one of {tuple(PLANE_AXES)}")
        if self.normal_eps < 0:
            bad("normal_eps", f"must be >= 0, got {self.normal_eps}")
        unknown = set(self.frozen_groups) - set(self.group_names())
        if unknown:
            bad("frozen_groups", f"unknown parameter groups {sorted(unknown)}; groups: {self.group_names()}")
        try:
            self.volume_settings()
        except ValueError as e:
            bad("render", str(e))

    def grid_names(self) -> list[str]:
        """"planes", or "level_<R>" per pyramid level."""
        return [f"level_{r}" for r in self.levels] if self.kind == "pyramid_trigrid" else ["planes"]

    def group_names(self) -> list[str]:
        return [*self.grid_names(), "decoder"]

    def grid_shape(self, name: str) -> tuple[int, ...]:
        """(3, C, R, R) for a tri-plane, (3, D, C, R, R) otherwise."""
        r = int(name.split("_")[1]) if name.startswith("level_") else self.resolution
        if self.kind == "triplane":
            return (3, self.channels, r, r)
        return (3, self.depth, self.channels, r, r)

    def finest_resolution(self) -> int:
        return max(self.levels) if self.kind == "pyramid_trigrid" else self.resolution

    def volume_settings(self) -> volume.VolumeSettings:
        eps = self.normal_eps or 2.0 * self.box_size / self.finest_resolution()
        return volume.VolumeSettings(
            samples_per_ray=self.samples_per_ray, importance_samples=self.importance_samples,
            box_size=self.box_size, ray_start=self.ray_start, ray_end=self.ray_end,
            density_activation=self.density_activation, density_scale=self.density_scale,
            normal_method=self.normal_method, normal_eps=eps, chunk_rays=self.chunk_rays)

    def as_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def with_(self, **changes) -> "FieldConfig":
        return replace(self, **changes)


# CreateSceneRequest.options keys a field scene accepts (values may be strings), for Describe
OPTIONS = {
    "samples_per_ray": "stratified samples per ray (default 48)",
    "importance_samples": "importance samples per ray drawn from the stratified pass (default 48; 0 = none)",
    "ray_start": "fixed near distance along rays in world units (with ray_end; default: the box intersection)",
    "ray_end": "fixed far distance along rays in world units (with ray_start)",
    "plane_reduction": "how the three planes' features combine: mean (EG3D, PanoHead) or sum (pyramid default)",
    "density_activation": "softplus (EG3D: softplus(raw - 1)) or trunc_exp",
    "density_scale": "factor on the activated density (default 1; 0.5 for a 3D-GAN field exported by the "
                     "inversion service, whose densities are per generator unit = 2 world units)",
    "plane_axes": "plane axis layout: xy_xz_zy (default), eg3d, panohead",
    "rgb_channels": "decoded colour channels, >= 3 (extra ones are the 'features' output)",
    "hidden": "decoder hidden widths, comma-separated (default 64)",
    "normal_method": "finite_difference (default) or autograd",
    "normal_eps": "finite-difference step in world units (default one texel of the finest grid)",
    "chunk_rays": "rays rendered per chunk (memory bound; default 4096)",
    "frozen_groups": "comma-separated parameter groups not optimised, e.g. decoder",
    "freeze_decoder": "true: the decoder group is frozen (a frozen 3D-GAN renderer)",
}
_INIT_KEYS = ("resolution", "channels", "depth", "levels", "box_size", "init_std")


def _coerce(name: str, value: Any, like: Any) -> Any:
    """An option value (maybe a string, as in CreateSceneRequest.options) converted to the type of the
    default `like`; InvalidArgument when it does not parse."""
    try:
        if isinstance(like, tuple):
            items = value.split(",") if isinstance(value, str) else list(value)
            items = [s.strip() if isinstance(s, str) else s for s in items]
            items = [s for s in items if s != ""]
            if name in ("hidden", "levels"):
                return tuple(int(v) for v in items)
            return tuple(str(v) for v in items)
        if isinstance(like, bool):
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if isinstance(like, int):
            f = float(value)
            if f != int(f):
                raise ValueError(value)
            return int(f)
        if isinstance(like, float):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"options.{name}", f"cannot parse {value!r}") from None


def field_config(kind: str, init: Mapping[str, Any] | None = None,
                 options: Mapping[str, Any] | None = None) -> FieldConfig:
    """FieldConfig from a FieldInit-like mapping (resolution, channels, depth, levels, box_size,
    init_std; 0 / empty / missing = the proto's defaults: 256, 32 (12 for the pyramid), 3, 8..512, 1.0,
    0.1) and CreateSceneRequest-like options (OPTIONS; strings are parsed). InvalidArgument for unknown
    keys or bad values."""
    if kind not in KINDS:
        raise InvalidArgument("kind", f"unknown field kind {kind!r}; expected one of {KINDS}")
    base = FieldConfig(kind=kind, channels=12 if kind == "pyramid_trigrid" else 32,
                       plane_reduction="sum" if kind == "pyramid_trigrid" else "mean")
    values: dict[str, Any] = {}
    for key, value in (init or {}).items():
        if key not in _INIT_KEYS:
            raise InvalidArgument(f"field.{key}", f"unknown field init key; expected {_INIT_KEYS}")
        v = _coerce(key, value, getattr(base, key))
        if v not in (0, 0.0, (), None):  # proto3 zero = default
            values[key] = v
    for key, value in (options or {}).items():
        if key == "freeze_decoder":
            if _coerce(key, value, False):
                values["frozen_groups"] = tuple({*values.get("frozen_groups", ()), "decoder"})
            continue
        if key not in OPTIONS:
            raise InvalidArgument(f"options.{key}", f"unknown option; accepted: {sorted(OPTIONS)}")
        v = _coerce(key, value, getattr(base, key))
        if key == "frozen_groups":
            v = tuple({*values.get("frozen_groups", ()), *v})
        values[key] = v
    return base.with_(**values)


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

    def __init__(self, in_features: int, hidden: tuple[int, ...] = (64,), rgb_channels: int = 3):
        super().__init__()
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
        return decode_osg([(layer.weight, layer.bias) for layer in self.layers], x)

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
        self.decoder = FieldDecoder(cfg.channels, cfg.hidden, cfg.rgb_channels)
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

    def export(self, fmt: str) -> bytes:
        """"npz": render.proto's field layout (float32 arrays, uint8 "kind" and JSON "meta")."""
        if fmt != "npz":
            raise ValueError(f"{self.kind} cannot be exported as {fmt}")
        c = self.cfg
        meta = {"box_size": c.box_size, "ray_start": c.ray_start, "ray_end": c.ray_end,
                "samples_per_ray": c.samples_per_ray, "importance_samples": c.importance_samples,
                "plane_reduction": c.plane_reduction, "density_activation": c.density_activation,
                "density_scale": c.density_scale, "rgb_channels": c.rgb_channels, "plane_axes": c.plane_axes}
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


def default_learning_rates(cfg: FieldConfig) -> dict[str, float]:
    """Adam learning rates per parameter group (see the module docstring)."""
    lrs = {name: DEFAULT_PLANE_LR * (level_lr_scale(int(name[6:])) if name.startswith("level_") else 1.0)
           for name in cfg.grid_names()}
    lrs["decoder"] = DEFAULT_DECODER_LR
    return lrs


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

    return SceneKind(cls, create, from_asset, dict(OPTIONS), ("npz",), ("tv", "l1"))


TRIPLANE_KIND = _scene_kind(TriplaneRepresentation)
TRIGRID_KIND = _scene_kind(TrigridRepresentation)
PYRAMID_TRIGRID_KIND = _scene_kind(PyramidTrigridRepresentation)
