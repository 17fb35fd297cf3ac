"""One declaration of the ray-marching settings (services.core.volume.RaySettings): a field scene's
FieldConfig and an inversion GeneratorConfig carry every field into the VolumeSettings they render
with, and the flat dicts they wrote before (checkpoint configs, generator config.json) still load."""

from __future__ import annotations

from dataclasses import fields

from services.core import volume
from services.inversion.generators.config import GeneratorConfig
from services.render.representations.field_config import FieldConfig, field_config
from services.render.representations.fields import FieldRepresentation

RAY_FIELDS = [f.name for f in fields(volume.RaySettings)]

# FieldConfig.as_dict() of a trigrid as written before RaySettings existed
OLD_FIELD_CONFIG = {"kind": "trigrid", "resolution": 8, "channels": 4, "depth": 2, "levels": [], "box_size": 1.5,
                    "init_std": 0.1, "hidden": [16], "rgb_channels": 3, "plane_reduction": "mean",
                    "plane_axes": "xy_xz_zy", "density_activation": "trunc_exp", "density_scale": 0.5,
                    "samples_per_ray": 20, "importance_samples": 6, "ray_start": 0.5, "ray_end": 3.0,
                    "normal_method": "autograd", "normal_eps": 0.01, "chunk_rays": 512, "frozen_groups": ["decoder"]}
# a generator config.json as written before (no density_scale / normal_method / normal_eps / chunk_rays)
OLD_GENERATOR_JSON = {"kind": "triplane", "z_dim": 16, "w_dim": 16, "c_dim": 25, "c_scale": 1.0, "mapping_layers": 2,
                      "plane_resolution": 32, "channels": 8, "depth": 1, "pyramid_levels": [], "channel_base": 1024,
                      "channel_max": 32, "use_noise": True, "conv_clamp": 256.0, "decoder_hidden": 16,
                      "decoder_features": 8, "decoder_lr_multiplier": 1.0, "neural_resolution": 32,
                      "output_resolution": 64, "sr_channels": [16], "box_warp": 1.0, "ray_start": 2.25,
                      "ray_end": 3.3, "samples_per_ray": 24, "importance_samples": 12,
                      "density_activation": "softplus", "plane_axes": "eg3d", "plane_reduction": "mean",
                      "world_units_per_generator_unit": 2.0, "crop_style": "ffhq", "azimuth_min": -60.0,
                      "azimuth_max": 60.0, "elevation_min": -30.0, "elevation_max": 30.0, "pose_margin_deg": 10.0,
                      "camera_radius": 2.7, "camera_target": [0.0, 0.0, 0.2], "focal": 4.2647,
                      "default_density_threshold": 10.0}


def test_field_config_carries_every_ray_setting():
    cfg = FieldConfig(**OLD_FIELD_CONFIG)
    s = cfg.volume_settings()
    for name in RAY_FIELDS:
        assert getattr(s, name) == OLD_FIELD_CONFIG[name], name
    assert s.box_size == 1.5
    # a config written before colour_activation existed loads with EG3D's sigmoid
    assert FieldConfig(**cfg.as_dict()) == cfg and set(cfg.as_dict()) == set(OLD_FIELD_CONFIG) | {"colour_activation"}
    assert cfg.colour_activation == "sigmoid"
    rep = FieldRepresentation.from_config(OLD_FIELD_CONFIG)
    assert rep.settings == s and rep.frozen_groups == ("decoder",)


def test_field_default_normal_step_is_one_texel():
    cfg = field_config("triplane", {"resolution": 64, "box_size": 2.0})
    assert cfg.normal_eps == 0 and cfg.volume_settings().normal_eps == 2.0 * 2.0 / 64


def test_old_generator_config_json_loads_and_scales_to_world_units():
    g = GeneratorConfig.from_dict(OLD_GENERATOR_JSON)
    s = g.volume_settings()
    ws = g.world_units_per_generator_unit
    assert (s.ray_start, s.ray_end) == (2.25 * ws, 3.3 * ws)
    assert (s.samples_per_ray, s.importance_samples, s.density_scale) == (24, 12, 1.0 / ws)
    assert s.normal_eps == 2.0 * g.box_size / 32 and s.chunk_rays == 8192 and s.box_size == 0.5 * ws
    again = GeneratorConfig.from_dict(g.as_dict())
    assert again == g


def test_generator_ray_settings_are_all_carried():
    g = GeneratorConfig.from_dict({**OLD_GENERATOR_JSON, "normal_method": "autograd", "normal_eps": 0.01,
                                   "chunk_rays": 100, "density_scale": 3.0})
    s = g.volume_settings()
    ws = g.world_units_per_generator_unit
    assert (s.normal_method, s.normal_eps, s.chunk_rays, s.density_scale) == ("autograd", 0.01 * ws, 100, 3.0 / ws)
