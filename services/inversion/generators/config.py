"""A generator's architecture and rendering settings (GeneratorConfig, stored by checkpoint.py as
config.json), and the camera conventions they imply: EG3D's 25-float label, the training pose range,
the frontal camera. Units: see triplane_generator.py (generator units x world_units_per_generator_unit =
world units).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np

from services.common.errors import InvalidArgument, require
from services.core import volume
from services.core.field_npz import META_KEYS
from services.core.cameras import PinholeCamera, intrinsics, look_at, orbit_position
from services.core.planes import FIELD_KINDS, PLANE_AXES, PLANE_REDUCTIONS
from services.inversion.types import GanCamera, as_gan_camera

KINDS = FIELD_KINDS
CROP_STYLES = ("ffhq", "head")
PYRAMID_STYLES = ("headforge", "3dportraitgan")
DECODER_ACTIVATIONS = ("sigmoid", "none")

@dataclass(frozen=True)
class GeneratorConfig(volume.RaySettings):
    """Architecture and rendering settings of one generator (checkpoint.py stores it as config.json).

    Sizes: z_dim, w_dim latent widths; c_dim camera-label width (25, or 0 = unconditional), c_scale
    the factor on the label before the mapping network (EG3D / PanoHead's rendering_kwargs c_scale;
    0 = conditioning off);
    plane_resolution R (power of two), channels C per plane, depth D slices (1 for "triplane"),
    pyramid_levels (sides, each a synthesis block resolution; "pyramid_trigrid" only); channel_base /
    channel_max the synthesis widths min(channel_base // res, channel_max). pyramid_style (pyramid
    only): "headforge" (level L = the toRGB output of synthesis block L) or "3dportraitgan"
    (3DPortraitGAN's hierarchical 3D-aware synthesis, generators/portraitgan.py: 2D blocks 4..R all
    3*C*D wide, level 2r made by the 3D-aware block after block r, so levels are 8..2R; channel_base /
    channel_max are then unused). pose_dim: extra mapping-conditioning inputs after the camera label
    (3DPortraitGAN's 6 body-pose parameters; fed zeros, the official mapping's default when no pose is
    given). Decoder: decoder_hidden width, decoder_features K decoded channels (the first 3 are RGB
    unless raw_torgb, all K feed the super-resolution head), decoder_activation on the K channels
    ("sigmoid": EG3D's widened sigmoid, features in [0, 1]; "none": linear, 3DPortraitGAN's). raw_torgb:
    the raw image is a w-modulated 1x1 ToRGB (K -> 3, w = ws[:, -1]) of the volume-rendered feature
    image (3DPortraitGAN's / PanoHead's use_torgb_raw) instead of its first 3 channels. Images: neural_resolution r of the volume rendering, output_resolution S (> r: a
    super-resolution head with sr_channels). Rendering, in generator units: box_warp (the box is
    [-box_warp/2, box_warp/2]^3), ray_start/ray_end (both 0 = the box intersection), samples.
    Cameras: the range seen in training (orbit degrees, azimuth_min..max, elevation_min..max) plus
    pose_margin_deg tolerance; the frontal camera (radius, target, normalised focal) conditions the
    mapping network by default. default_density_threshold: the iso-level on the raw decoder density
    for meshes.
    """

    kind: str = "triplane"
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 25
    c_scale: float = 1.0
    mapping_layers: int = 2
    plane_resolution: int = 256
    channels: int = 32
    depth: int = 1
    pyramid_levels: tuple[int, ...] = ()
    pyramid_style: str = "headforge"
    pose_dim: int = 0
    channel_base: int = 32768
    channel_max: int = 512
    use_noise: bool = True
    conv_clamp: float | None = 256.0
    decoder_hidden: int = 64
    decoder_features: int = 32
    decoder_lr_multiplier: float = 1.0
    decoder_activation: str = "sigmoid"
    raw_torgb: bool = False
    neural_resolution: int = 128
    output_resolution: int = 512
    sr_channels: tuple[int, ...] = (128, 64)
    box_warp: float = 1.0
    chunk_rays: int = 8192  # overrides RaySettings' default: a generator renders whole images at once
    plane_axes: str = "eg3d"
    plane_reduction: str = "mean"
    world_units_per_generator_unit: float = 2.0
    crop_style: str = "ffhq"
    azimuth_min: float = -60.0
    azimuth_max: float = 60.0
    elevation_min: float = -30.0
    elevation_max: float = 30.0
    pose_margin_deg: float = 10.0
    camera_radius: float = 2.7
    camera_target: tuple[float, float, float] = (0.0, 0.0, 0.2)
    focal: float = 4.2647
    default_density_threshold: float = 10.0

    def __post_init__(self):
        for name in ("pyramid_levels", "sr_channels", "camera_target"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.kind == "triplane":
            object.__setattr__(self, "depth", 1)
        self.validate()

    def validate(self) -> None:
        """ValueError naming the bad setting."""
        def need(cond, what):
            if not cond:
                raise ValueError(what)

        need(self.kind in KINDS, f"kind must be one of {KINDS}, got {self.kind!r}")
        r = self.plane_resolution
        need(r >= 4 and r & (r - 1) == 0, f"plane_resolution must be a power of two >= 4, got {r}")
        need(self.channels >= 1 and self.depth >= 1, "channels and depth must be >= 1")
        need(self.pyramid_style in PYRAMID_STYLES, f"pyramid_style must be one of {PYRAMID_STYLES}")
        if self.kind == "pyramid_trigrid" and self.pyramid_style == "3dportraitgan":
            want = [2 * res for res in self.block_resolutions]
            need(list(self.pyramid_levels) == want,
                 f"pyramid_levels of a 3dportraitgan pyramid are twice the synthesis blocks {want}, "
                 f"got {list(self.pyramid_levels)}")
        elif self.kind == "pyramid_trigrid":
            lv = list(self.pyramid_levels)
            need(lv and lv == sorted(set(lv)) and all(4 <= v <= r and v & (v - 1) == 0 for v in lv),
                 f"pyramid_levels must be distinct ascending powers of two in [4, {r}], got {lv}")
        else:
            need(not self.pyramid_levels, "pyramid_levels is only for kind pyramid_trigrid")
            need(self.pyramid_style == "headforge", "pyramid_style is only for kind pyramid_trigrid")
        need(self.pose_dim >= 0 and (self.c_dim or not self.pose_dim), "pose_dim >= 0, and only with c_dim 25")
        need(self.decoder_activation in DECODER_ACTIVATIONS,
             f"decoder_activation must be one of {DECODER_ACTIVATIONS}")
        need(self.z_dim >= 1 and self.w_dim >= 1 and self.c_dim in (0, 25), "z_dim, w_dim >= 1; c_dim 0 or 25")
        need(self.decoder_features >= 3, "decoder_features must be >= 3")
        n, s = self.neural_resolution, self.output_resolution
        need(n >= 4 and s >= n and (s // n) * n == s and (s // n) & (s // n - 1) == 0,
             f"output_resolution ({s}) must be neural_resolution ({n}) times a power of two")
        need(self.box_warp > 0 and self.world_units_per_generator_unit > 0, "box_warp and world units must be > 0")
        need(self.crop_style in CROP_STYLES, f"crop_style must be one of {CROP_STYLES}")
        need(self.plane_axes in PLANE_AXES, f"plane_axes must be one of {tuple(PLANE_AXES)}")
        need(self.plane_reduction in PLANE_REDUCTIONS, f"plane_reduction must be one of {PLANE_REDUCTIONS}")
        need(self.azimuth_min < self.azimuth_max and self.elevation_min < self.elevation_max, "empty pose range")
        self.volume_settings()  # raises ValueError

    @property
    def super_resolution(self) -> bool:
        return self.output_resolution > self.neural_resolution

    @property
    def block_resolutions(self) -> list[int]:
        return [2 ** i for i in range(2, int(math.log2(self.plane_resolution)) + 1)]

    @property
    def num_ws(self) -> int:
        """Latents per image: the synthesis blocks' convolutions (b4: 1, others: 2) + 1."""
        blocks = int(math.log2(self.plane_resolution)) - 1
        return 1 + 2 * (blocks - 1) + 1

    @property
    def world_scale(self) -> float:
        return self.world_units_per_generator_unit

    @property
    def box_size(self) -> float:
        """Half side of the rendering box in world units."""
        return self.box_warp / 2 * self.world_scale

    def level_sides(self) -> list[int]:
        return list(self.pyramid_levels) if self.kind == "pyramid_trigrid" else [self.plane_resolution]

    def grid_names(self) -> list[str]:
        return [f"level_{r}" for r in self.pyramid_levels] if self.kind == "pyramid_trigrid" else ["planes"]

    def volume_settings(self) -> volume.VolumeSettings:
        """The rendering settings in WORLD units (every RaySettings field, scaled by world_scale)."""
        return volume.volume_settings(self, self.box_size, 2.0 * self.box_size / max(self.level_sides()),
                                      self.world_scale)

    def field_meta(self) -> dict:
        """The rendering settings an exported field file carries (services.core.field_npz.META_KEYS), in
        world units: a render-service field scene made from the file samples and integrates as this
        generator does (its normal step and chunking are the render service's own defaults)."""
        s = self.volume_settings()
        linear = self.decoder_activation == "none" or self.raw_torgb   # export folds the colour to 3 linear rows
        own = {"plane_reduction": self.plane_reduction, "plane_axes": self.plane_axes,
               "rgb_channels": 3 if linear else self.decoder_features,
               "colour_activation": "none" if linear else "sigmoid"}
        return {key: own[key] if key in own else getattr(s, key) for key in META_KEYS}

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        """ValueError for unknown keys or bad values."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown generator config keys {sorted(unknown)}")
        return cls(**d)

    def with_(self, **changes) -> "GeneratorConfig":
        return replace(self, **changes)

    # cameras ---------------------------------------------------------------------------------------

    def frontal_camera(self, size: int | None = None, azimuth: float = 0.0, elevation: float = 0.0) -> PinholeCamera:
        """The training-distribution camera at (azimuth, elevation) degrees, in WORLD units, for an image
        of `size` pixels (default the neural resolution)."""
        size = size or self.neural_resolution
        target = np.asarray(self.camera_target) * self.world_scale
        eye = orbit_position(azimuth, elevation, self.camera_radius * self.world_scale, target)
        f = self.focal * size
        return PinholeCamera(intrinsics(f, f, size / 2, size / 2), look_at(eye, target), size, size)

    def label(self, camera: PinholeCamera) -> np.ndarray:
        """EG3D's 25-float label of a WORLD-unit camera: cam2world (generator units) + normalised K."""
        c2w = np.linalg.inv(camera.world_to_camera)
        c2w[:3, 3] /= self.world_scale
        K = np.asarray(camera.K, dtype=np.float64) / np.array([[camera.width], [camera.height], [1.0]])
        return np.concatenate([c2w.reshape(-1), K.reshape(-1)]).astype(np.float32)

    def camera_from_label(self, label, size: int | None = None) -> PinholeCamera:
        """Inverse of label(): a WORLD-unit camera for an image of `size` pixels."""
        v = np.asarray(label, dtype=np.float64).reshape(-1)
        if v.shape != (25,) or not np.isfinite(v).all():
            raise ValueError("an EG3D label has 25 finite values")
        size = size or self.neural_resolution
        c2w = v[:16].reshape(4, 4).copy()
        c2w[:3, 3] *= self.world_scale
        K = v[16:].reshape(3, 3) * np.array([[size], [size], [1.0]])
        return PinholeCamera(K, np.linalg.inv(c2w), size, size)

    def camera_angles(self, camera: PinholeCamera) -> tuple[float, float]:
        """(azimuth, elevation) in degrees of a world camera's position around the camera target."""
        p = camera.position - np.asarray(self.camera_target) * self.world_scale
        r = float(np.linalg.norm(p)) or 1.0
        return math.degrees(math.atan2(p[0], p[2])), math.degrees(math.asin(max(-1.0, min(1.0, p[1] / r))))

    def pose_in_range(self, camera: PinholeCamera) -> bool:
        az, el = self.camera_angles(camera)
        m = self.pose_margin_deg
        full_circle = self.azimuth_max - self.azimuth_min >= 360
        az_ok = full_circle or self.azimuth_min - m <= az <= self.azimuth_max + m
        return az_ok and self.elevation_min - m <= el <= self.elevation_max + m

    def world_camera(self, cam: GanCamera | PinholeCamera, field_name: str, size: int | None = None) -> PinholeCamera:
        """An API camera as a validated WORLD-unit camera (InvalidArgument naming field_name); intrinsics
        rescaled to `size` pixels when given (square cameras only). A plain PinholeCamera is taken as
        world units."""
        cam = as_gan_camera(cam)
        if cam.kind == "eg3d":
            try:
                world = self.camera_from_label(cam.label, size or self.neural_resolution)
                world.validate(field_name)
            except ValueError as e:
                raise InvalidArgument(f"{field_name}.eg3d_label", str(e)) from None
            except InvalidArgument as e:
                raise InvalidArgument(f"{field_name}.eg3d_label", e.message) from None
            return world
        c = cam.camera
        require(c is not None, field_name, "no camera given")
        c.validate(field_name)
        require(c.width == c.height, f"{field_name}.width", f"cameras must be square, got {c.width}x{c.height}")
        w2c = np.array(c.world_to_camera, dtype=np.float64)
        if cam.kind == "generator":
            w2c[:3, 3] *= self.world_scale
        elif cam.kind != "world":
            raise InvalidArgument(field_name, f"unknown camera kind {cam.kind!r}")
        K = np.array(c.K, dtype=np.float64)
        if size and size != c.width:
            K[:2] *= size / c.width
            return PinholeCamera(K, w2c, size, size)
        return PinholeCamera(K, w2c, c.width, c.height)
