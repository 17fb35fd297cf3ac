"""Settings of a field scene (FieldConfig) and reading them from CreateScene's FieldInit values and
options (field_config). Conventions and units: fields.py."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from services.common.errors import InvalidArgument
from services.core import volume
from services.core.planes import COLOUR_ACTIVATIONS, FIELD_KINDS, PLANE_AXES, PLANE_REDUCTIONS

KINDS = FIELD_KINDS
DEFAULT_LEVELS = (8, 16, 32, 64, 128, 256, 512)
DEFAULT_PLANE_LR = 0.02
DEFAULT_DECODER_LR = 0.005


def level_lr_scale(resolution: int) -> float:
    """Portrait3D-Text's per-level learning-rate ratio: 1 up to 128, 0.2 at 256, 0.1 above."""
    return 1.0 if resolution <= 128 else 0.2 if resolution <= 256 else 0.1


# ---------------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True, kw_only=True)
class FieldConfig(volume.RaySettings):
    """Everything that defines a field scene except its parameter values (JSON-serialisable via
    as_dict). Sizes: resolution R and levels in texels, channels C, depth D slices (1 for triplane);
    box_size world units (resolution of a pyramid = its finest level); init_std the random features'
    standard deviation (create() only); hidden the decoder's
    hidden widths; rgb_channels K >= 3 decoded colour/feature channels. Rendering: the inherited
    volume.RaySettings fields (normal_eps 0 = one texel of the finest grid). frozen_groups: parameter
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
    colour_activation: str = "sigmoid"
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
        if self.colour_activation not in COLOUR_ACTIVATIONS:
            bad("colour_activation", f"must be one of {COLOUR_ACTIVATIONS}")
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

    def parameter_bytes(self) -> int:
        """float32 bytes of the grids and the decoder (a FieldRepresentation's memory_bytes()), without
        allocating them."""
        grids = sum(math.prod(self.grid_shape(n)) for n in self.grid_names())
        widths = [self.channels, *self.hidden, 1 + self.rgb_channels]
        decoder = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
        return 4 * (grids + decoder)

    def finest_resolution(self) -> int:
        return max(self.levels) if self.kind == "pyramid_trigrid" else self.resolution

    def volume_settings(self) -> volume.VolumeSettings:
        return volume.volume_settings(self, self.box_size, 2.0 * self.box_size / self.finest_resolution())

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
    "colour_activation": "sigmoid (default, EG3D's widened sigmoid) or none (a linear decoder: 3DPortraitGAN's "
                         "field with its ToRGB folded in)",
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


def default_learning_rates(cfg: FieldConfig) -> dict[str, float]:
    """Adam learning rates per parameter group (see the module docstring)."""
    lrs = {name: DEFAULT_PLANE_LR * (level_lr_scale(int(name[6:])) if name.startswith("level_") else 1.0)
           for name in cfg.grid_names()}
    lrs["decoder"] = DEFAULT_DECODER_LR
    return lrs
