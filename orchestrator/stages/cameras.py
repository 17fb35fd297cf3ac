"""The camera language of recipes: which views an optimisation step renders.

A stage's `cameras` mapping picks a sampler by `kind`. `orbit` draws random orbit cameras from
azimuth / elevation / radius / fov ranges (each a number or [low, high]); `ring` places `views` cameras
evenly in azimuth from `start_azimuth` at one elevation; `sweep` orders `views` cameras from
azimuth[0] to azimuth[1] (elevation one number, one per view, or a spiral to `elevation_end`); `list`
gives the views explicitly ([{azimuth, elevation, radius, fov}], e.g. a paper's fixed views). Ring,
sweep and list hand out their views in turn, n per step (`pace: run` spreads a sweep over the whole
run instead). Every sampler looks at `target` (x, y, z) and takes `resolution` (pixels, a schedule:
[0, 64, 256, 1000] grows 64 -> 256 by step 1000, rounded to a multiple of 8), `background` ({kind:
fixed, color: [r, g, b]}, {kind: random} uniform per view, or {kind: random_choice, colors: [...]})
and an optional `patch: {size: P, scale: [lo, hi]}`, which renders a random square crop covering lo..hi
of the view's side at P x P pixels. Angles are degrees (azimuth 0 = frontal, +90 = the subject's left;
elevation positive above), distances world units (the head's radius is about 1), fov the vertical
field of view in degrees. Views depend only on (seed, step): a resumed job sees the same cameras.

    cameras: {kind: ring, views: 8, elevation: 0, radius: 4}
    cameras: {kind: orbit, azimuth: [-180, 180], elevation: [-10, 30], radius: [3.8, 4.2], fov: [30, 40],
              resolution: [0, 64, 256, 1000], background: {kind: random}, patch: {size: 64, scale: [0.3, 1]}}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal, Union

import numpy as np
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from orchestrator.stages.schedules import ScheduleValue, schedule_at
from services.common.errors import InvalidArgument
from services.core.cameras import PinholeCamera, camera_for_box, orbit_camera

MIN_RESOLUTION, MAX_RESOLUTION = 8, 4096

Azimuth = Annotated[float, Field(ge=-360, le=360)]       # degrees
Elevation = Annotated[float, Field(ge=-90, le=90)]       # degrees
Radius = Annotated[float, Field(gt=0, allow_inf_nan=False)]   # world units
Fov = Annotated[float, Field(gt=1, lt=170)]              # vertical field of view, degrees
Unit = Annotated[float, Field(ge=0, le=1)]
Rgb = tuple[Unit, Unit, Unit]
Finite = Annotated[float, Field(allow_inf_nan=False)]


def _pair(value):
    return (value, value) if isinstance(value, (int, float)) else value


def _ordered(pair: tuple[float, float]) -> tuple[float, float]:
    if pair[0] > pair[1]:
        raise ValueError(f"range [low, high] needs low <= high, got {list(pair)}")
    return pair


def _range(item):
    """A [low, high] range of `item`s; one number means low = high."""
    return Annotated[tuple[item, item], BeforeValidator(_pair), AfterValidator(_ordered)]


AzimuthRange, ElevationRange, RadiusRange, FovRange = (_range(t) for t in (Azimuth, Elevation, Radius, Fov))
ScaleRange = _range(Annotated[float, Field(gt=0, le=1)])   # fractions of the full view's side


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FixedBackground(_Strict):
    kind: Literal["fixed"] = "fixed"
    color: Rgb = (1.0, 1.0, 1.0)


class RandomBackground(_Strict):
    """A colour uniform in [0, 1]^3, drawn per view."""

    kind: Literal["random"] = "random"


class RandomChoiceBackground(_Strict):
    """One of `colors`, drawn uniformly per view."""

    kind: Literal["random_choice"] = "random_choice"
    colors: list[Rgb] = Field(min_length=1)


Background = Annotated[Union[FixedBackground, RandomBackground, RandomChoiceBackground], Field(discriminator="kind")]


class Patch(_Strict):
    """Render a random square crop of the view at size x size pixels; its side is a fraction of the
    full view's side drawn uniformly from `scale`."""

    size: int = Field(ge=MIN_RESOLUTION, le=MAX_RESOLUTION)
    scale: ScaleRange = (0.25, 1.0)


class _Sampler(_Strict):
    target: tuple[Finite, Finite, Finite] = (0.0, 0.0, 0.0)    # look-at point, world units
    resolution: ScheduleValue = 64                              # full-view side in pixels
    background: Background = Field(default_factory=FixedBackground)
    patch: Patch | None = None

    @field_validator("resolution")
    @classmethod
    def _resolution_in_range(cls, v):
        values = [v] if isinstance(v, (int, float)) else [v[1], v[2]]
        if isinstance(v, tuple) and not 0 <= v[0] <= v[3]:
            raise ValueError(f"schedule [start_step, start, end, end_step] needs 0 <= start_step <= end_step, "
                             f"got {list(v)}")
        if not all(MIN_RESOLUTION <= x <= MAX_RESOLUTION for x in values):
            raise ValueError(f"resolution must be in [{MIN_RESOLUTION}, {MAX_RESOLUTION}] pixels, got {v}")
        return v


class OrbitCameras(_Sampler):
    """Random orbit cameras, each value uniform in its [low, high] range."""

    kind: Literal["orbit"] = "orbit"
    azimuth: AzimuthRange = (-180.0, 180.0)
    elevation: ElevationRange = (-10.0, 30.0)
    radius: RadiusRange = (3.8, 4.2)
    fov: FovRange = (35.0, 35.0)


class RingCameras(_Sampler):
    """`views` cameras evenly spaced over 360 degrees of azimuth from start_azimuth."""

    kind: Literal["ring"] = "ring"
    views: int = Field(ge=1, le=4096)
    start_azimuth: Azimuth = 0.0
    elevation: Elevation = 0.0
    radius: Radius = 4.0
    fov: Fov = 35.0


class SweepCameras(_Sampler):
    """`views` cameras ordered in azimuth from azimuth[0] to azimuth[1] (the end included unless
    include_end is false). elevation: one value, or one per view; elevation_end (with one value) makes
    a spiral, elevation changing linearly over the sweep. pace: "cycle" hands out n consecutive views
    per step and wraps; "run" spreads the sweep over the run (step s starts at view s * views // total)."""

    kind: Literal["sweep"] = "sweep"
    views: int = Field(ge=1, le=4096)
    azimuth: tuple[Azimuth, Azimuth] = (-180.0, 180.0)
    include_end: bool = True
    elevation: Elevation | list[Elevation] = 0.0
    elevation_end: Elevation | None = None
    radius: Radius = 4.0
    fov: Fov = 35.0
    pace: Literal["cycle", "run"] = "cycle"

    @model_validator(mode="after")
    def _elevations_fit(self):
        if isinstance(self.elevation, list):
            if len(self.elevation) != self.views:
                raise ValueError(f"elevation: a list needs one value per view ({self.views}), "
                                 f"got {len(self.elevation)}")
            if self.elevation_end is not None:
                raise ValueError("elevation_end: only with a single elevation")
        return self


class ListView(_Strict):
    azimuth: Azimuth
    elevation: Elevation
    radius: Radius = 4.0
    fov: Fov = 35.0


class ListCameras(_Sampler):
    """Explicit views; order "cycle" hands them out in turn, "random" draws n uniformly per step."""

    kind: Literal["list"] = "list"
    views: list[ListView] = Field(min_length=1)
    order: Literal["cycle", "random"] = "cycle"


CameraSpec = Annotated[Union[OrbitCameras, RingCameras, SweepCameras, ListCameras], Field(discriminator="kind")]


@dataclass(eq=False)
class View:
    """One view of a step. camera: what to render (the patch camera when a patch is set);
    full_camera: the whole view at the step's resolution; box: the patch's pixel box (x0, y0, x1, y1)
    in full_camera's image, None without a patch; background (3,) float32 in [0, 1]; angles in degrees
    as the spec gives or draws them (not wrapped to [-180, 180)), radius in world units, fov_deg vertical."""

    camera: PinholeCamera
    background: np.ndarray
    azimuth_deg: float
    elevation_deg: float
    radius: float
    fov_deg: float
    full_camera: PinholeCamera
    box: tuple[int, int, int, int] | None = None


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The generator views_for_step should get for (seed, step) (both >= 0): independent of every
    other step, so a resumed job draws the same views."""
    return np.random.default_rng([seed, step])


def resolution_at(spec: CameraSpec, step: int) -> int:
    """The full view's side in pixels at a step: the schedule rounded to a multiple of 8 (halves up)."""
    return max(MIN_RESOLUTION, int(math.floor(schedule_at(spec.resolution, step) / 8 + 0.5)) * 8)


def views_for_step(spec: CameraSpec, step: int, n: int, rng: np.random.Generator, total_steps: int) -> list[View]:
    """The n views of optimisation step `step` (0-based) of a run of total_steps. Random choices (orbit
    poses, list order "random", patches, backgrounds) come from rng only, in a fixed order: pass
    step_rng(seed, step) for views that depend on (seed, step) alone."""
    if n < 1:
        raise InvalidArgument("views_per_step", f"must be >= 1, got {n}")
    if total_steps < 1 or not 0 <= step:
        raise InvalidArgument("step", f"needs 0 <= step and total_steps >= 1, got step {step} of {total_steps}")
    size = resolution_at(spec, step)
    views = []
    for az, el, r, fov in _poses(spec, step, n, rng, total_steps):
        full = orbit_camera(az, el, r, fov_deg=fov, width=size, height=size, target=spec.target)
        camera, box = full, None
        if spec.patch is not None:
            box = _patch_box(spec.patch, size, rng)
            camera = camera_for_box(full, box, spec.patch.size)
        views.append(View(camera, background_color(spec.background, rng), az, el, r, fov, full, box))
    return views


def target_views(spec: CameraSpec, count: int, seed: int, round_: int = 0, rounds: int = 1) -> list[View]:
    """A set of whole views to render targets at: orbit cameras draw `count` views (a new draw per round of
    `rounds`); ring, sweep and list give their views in order (the first `count`, 0 = all of them)."""
    if spec.kind == "orbit":
        return views_for_step(spec, round_, count, step_rng(seed + 503, round_), rounds)
    n = count or (spec.views if isinstance(spec.views, int) else len(spec.views))
    return [views_for_step(spec, k, 1, step_rng(seed, k), n)[0] for k in range(n)]


def background_color(spec: Background, rng: np.random.Generator) -> np.ndarray:
    """One view's background colour, (3,) float32 in [0, 1]."""
    if isinstance(spec, RandomBackground):
        return rng.uniform(0.0, 1.0, 3).astype(np.float32)
    if isinstance(spec, RandomChoiceBackground):
        return np.asarray(spec.colors[int(rng.integers(len(spec.colors)))], np.float32)
    return np.asarray(spec.color, np.float32)


def _poses(spec: CameraSpec, step: int, n: int, rng: np.random.Generator,
           total_steps: int) -> list[tuple[float, float, float, float]]:
    """(azimuth, elevation, radius, fov) of each of the step's n views."""
    if isinstance(spec, OrbitCameras):  # the draw order of core's sample_orbit_cameras
        return [(float(rng.uniform(*spec.azimuth)), float(rng.uniform(*spec.elevation)),
                 float(rng.uniform(*spec.radius)), float(rng.uniform(*spec.fov))) for _ in range(n)]
    if isinstance(spec, RingCameras):
        return [(spec.start_azimuth + 360.0 * k / spec.views, spec.elevation, spec.radius, spec.fov)
                for k in _in_turn(step * n, n, spec.views)]
    if isinstance(spec, SweepCameras):
        azimuths = np.linspace(*spec.azimuth, spec.views, endpoint=spec.include_end)
        if isinstance(spec.elevation, list):
            elevations = np.asarray(spec.elevation, np.float64)
        else:
            end = spec.elevation if spec.elevation_end is None else spec.elevation_end
            elevations = np.linspace(spec.elevation, end, spec.views)
        start = step * n if spec.pace == "cycle" else min(step, total_steps - 1) * spec.views // total_steps
        return [(float(azimuths[k]), float(elevations[k]), spec.radius, spec.fov)
                for k in _in_turn(start, n, spec.views)]
    if spec.order == "random":
        picks = [int(k) for k in rng.integers(len(spec.views), size=n)]
    else:
        picks = _in_turn(step * n, n, len(spec.views))
    return [(v.azimuth, v.elevation, v.radius, v.fov) for v in (spec.views[k] for k in picks)]


def _in_turn(start: int, n: int, count: int) -> list[int]:
    return [(start + i) % count for i in range(n)]


def _patch_box(patch: Patch, size: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A square pixel box with integer corners inside a size x size image; its side is
    round(u * size) pixels for u uniform in patch.scale (at least 1)."""
    side = min(size, max(1, round(float(rng.uniform(*patch.scale)) * size)))
    x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
    return x0, y0, x0 + side, y0 + side
