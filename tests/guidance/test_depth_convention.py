"""Depth backbones declare what their maps are (depth_convention); Generate's depth maps keep one order on the
wire (1 = nearest, 0 = background) and say which quantity they are affine in."""

from __future__ import annotations

import numpy as np
import pytest

from services.guidance.backbones.base import ModelFilesError, depth_pictures
from services.guidance.backbones.diffusers_config import DiffusersBackboneConfig, check_config


def test_depth_model_maps_are_flipped_to_the_wire_order():
    near_dark = np.stack([np.full((3, 2, 2), v, np.float32) for v in (0.1, 0.9)])     # 0.1 = nearer
    out = depth_pictures(near_dark, "depth")
    assert out.shape == (2, 1, 2, 2)
    assert np.allclose(out[:, 0, 0, 0], [0.9, 0.1])                     # nearer is brighter on the wire
    inverse = depth_pictures(near_dark, "inverse_depth")
    assert np.allclose(inverse[:, 0, 0, 0], [0.1, 0.9])                 # already in the wire's order


def test_unknown_depth_convention_names_the_field():
    cfg = DiffusersBackboneConfig(name="humannorm_depth", path="x", output_kind="depth", depth_convention="disparity")
    with pytest.raises(ModelFilesError, match="depth_convention 'disparity'"):
        check_config(cfg)
