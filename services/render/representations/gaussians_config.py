"""How to create a Gaussian scene (GaussiansConfig) and reading it from CreateScene's init values and
options, naming the field of any bad value ("gaussians.opacity", "gaussians.strategy.densify_every",
"options.tile_size")."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from services.common.errors import InvalidArgument
from services.render.representations import init_values as iv
from services.render.representations.gaussians_raster import TILE_SIZE
from services.render.representations.gaussians_strategy import GaussianStrategyConfig

BACKENDS = ("auto", "torch", "gsplat")
TILE_SIZES = (8, 16, 32)
INIT_KEYS = ("num_points", "radius", "points", "colors", "sh_degree", "opacity", "strategy")
# CreateSceneRequest.options this kind accepts, described (Describe)
OPTIONS = {"backend": "auto | torch | gsplat", "tile_size": "torch rasteriser tile side (16)",
           "extent": "scene size for learning rates and densification (0 = from the init)"}
# strategy fields of headforge.v1.GaussianStrategy (prune_scale and reset_value are not in the proto)
STRATEGY_KEYS = ("disabled", "densify_every", "densify_from", "densify_until", "grad_threshold", "percent_dense",
                 "prune_opacity", "opacity_reset_every", "max_gaussians")


@dataclass
class GaussiansConfig:
    """How to create a Gaussian scene: headforge.v1.GaussiansInit with its defaults filled in, plus the
    CreateScene options of this kind.

    num_points random means uniform in a ball of `radius` (world units) when `points` is None; points
    (P, 3) and optional colors (P, 3) in [0, 1] (None = grey) otherwise; sh_degree 0..3; opacity in
    (0, 1). extent: scene size in world units for the means learning rate and the densification
    thresholds, 0 = from the init (the ball radius, or the largest distance of a point from the points'
    centroid). backend "auto" (gsplat on CUDA when installed, else torch), "torch" or "gsplat".
    tile_size: tile side of the torch rasteriser, 16 as gsplat. The image does not depend on it (beyond
    float rounding: every contribution >= 1/255 lies inside the screen boxes); 8 is about twice as
    fast on CPU."""

    num_points: int = 100_000
    radius: float = 1.0
    points: Any = None
    colors: Any = None
    sh_degree: int = 0
    opacity: float = 0.1
    strategy: GaussianStrategyConfig = field(default_factory=GaussianStrategyConfig)
    extent: float = 0.0
    backend: str = "auto"
    tile_size: int = TILE_SIZE

    @classmethod
    def from_init(cls, init: Mapping[str, Any], options: Mapping[str, str] | None = None) -> "GaussiansConfig":
        """From GaussiansInit-like values (convert.init_from_proto's names; zeros take the defaults) and
        CreateScene options (OPTIONS). InvalidArgument names the bad field."""
        d, options = cls(), dict(options or {})
        iv.check_keys(init, INIT_KEYS, "gaussians")
        iv.check_keys(options, OPTIONS, "options")
        points = iv.array(init, "points", "gaussians.points", columns=3)
        count = len(points) if points is not None else None
        num_points = iv.integer(init, "num_points", "gaussians.num_points", d.num_points, low=0)
        colors = iv.array(init, "colors", "gaussians.colors", columns=3,
                          rows=count if count is not None else num_points)
        return cls(num_points=num_points,
                   radius=iv.number(init, "radius", "gaussians.radius", d.radius, low=0, open_low=True),
                   points=points, colors=colors,
                   sh_degree=iv.integer(init, "sh_degree", "gaussians.sh_degree", 0, low=0, high=3),
                   opacity=iv.number(init, "opacity", "gaussians.opacity", d.opacity, low=0, high=1,
                                     open_low=True, open_high=True),
                   strategy=strategy_from_init(init.get("strategy") or {}),
                   extent=iv.option_number(options, "extent", 0.0, low=0),
                   backend=iv.choice(options, "backend", BACKENDS, "auto"),
                   tile_size=_tile_size(options))

    def within(self, max_gaussians: int) -> "GaussiansConfig":
        """This config under a server cap on the number of Gaussians: InvalidArgument when the init is
        above it; the strategy's cap becomes min(its own (0 = none), max_gaussians)."""
        count = len(self.points) if self.points is not None else self.num_points
        field_name = "gaussians.points" if self.points is not None else "gaussians.num_points"
        if count > max_gaussians:
            raise InvalidArgument(field_name, f"{count} exceeds the server cap of {max_gaussians}")
        cap = min(self.strategy.max_gaussians or max_gaussians, max_gaussians)
        return replace(self, strategy=replace(self.strategy, max_gaussians=cap))


def strategy_from_init(values: Mapping[str, Any]) -> GaussianStrategyConfig:
    """GaussianStrategyConfig from headforge.v1.GaussianStrategy-like values: zeros take the defaults, a
    negative opacity_reset_every (never) is kept; other negative values are InvalidArgument."""
    iv.check_keys(values, STRATEGY_KEYS, "gaussians.strategy")
    d = GaussianStrategyConfig()
    out = {}
    for f in fields(GaussianStrategyConfig):
        if f.name not in values:
            continue
        name, value, default = f.name, values[f.name], getattr(d, f.name)
        where = f"gaussians.strategy.{name}"
        if name == "disabled":
            out[name] = bool(value)
        elif name == "opacity_reset_every":
            out[name] = iv.integer(values, name, where, default)
        elif isinstance(default, int):
            out[name] = iv.integer(values, name, where, default, low=0)
        else:
            out[name] = iv.number(values, name, where, default, low=0)
    return GaussianStrategyConfig(**out)


def _tile_size(options: Mapping[str, str]) -> int:
    tile = iv.option_number(options, "tile_size", TILE_SIZE, integer_only=True)
    if tile not in TILE_SIZES:
        raise InvalidArgument("options.tile_size", f"must be 8, 16 or 32, got {tile}")
    return tile
