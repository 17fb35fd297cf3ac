"""Generators, their checkpoint format, the pickle converter and LPIPS loading (real files written by
the test; no mocks)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from services.common.errors import FailedPrecondition
from services.inversion.generators.checkpoint import load_generator, save_generator
from services.inversion.generators.convert_pickle import convert_network_pickle
from services.inversion.generators.layers import fir_filter, upsample2d
from services.inversion.generators.config import GeneratorConfig
from services.inversion.generators.triplane_generator import TriplaneGenerator
from services.core.lpips import LPIPS, load_lpips, random_vgg_state
from services.inversion.tiny import TINY_CONFIGS, tiny_generator
from services.core.camera_batch import CameraBatch


def latent(gen, seed=0):
    return gen.map(torch.randn(1, gen.cfg.z_dim, generator=torch.Generator().manual_seed(seed)))


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_shapes_and_outputs(name):
    gen = tiny_generator(name)
    c = gen.cfg
    assert gen.num_ws == c.num_ws
    ws = latent(gen)
    assert ws.shape == (1, c.num_ws, c.w_dim)
    grids = gen.synthesize(ws)
    if c.kind == "triplane":
        assert grids["planes"].shape == (3, c.channels, c.plane_resolution, c.plane_resolution)
    elif c.kind == "trigrid":
        assert grids["planes"].shape == (3, c.channels, c.depth, c.plane_resolution, c.plane_resolution)
    else:
        assert {k: tuple(v.shape) for k, v in grids.items()} == {
            f"level_{r}": (3, c.channels, c.depth, r, r) for r in c.pyramid_levels}
    cams = CameraBatch.from_pinholes([c.frontal_camera(), c.frontal_camera(azimuth=30)])
    with torch.no_grad():
        out = gen.render(ws, cams, ["rgb", "rgb_raw", "alpha", "depth", "normal_world"])
    r, s = c.neural_resolution, c.output_resolution
    assert out["rgb"].shape == (2, 3, s, s) and out["rgb_raw"].shape == (2, 3, r, r)
    assert out["alpha"].shape == out["depth"].shape == (2, 1, r, r)
    assert 0 <= float(out["alpha"].min()) and float(out["alpha"].max()) <= 1
    covered = out["alpha"] > 0.05  # random weights: a semi-transparent cloud
    # the camera sits 5.4 world units from the box centre (EG3D's 2.7 generator units x 2)
    assert covered.any() and 4.0 < float(out["depth"][covered].mean()) < 6.5
    n = out["normal_world"].norm(dim=1, keepdim=True)
    assert torch.allclose(n[covered], out["alpha"][covered], atol=1e-3)  # unit normals times alpha


def test_gradients_reach_the_latent_and_the_weights():
    gen = tiny_generator("tiny-pyramid")
    ws = latent(gen).requires_grad_(True)
    gen.requires_grad_(True)
    img = gen.render(ws, CameraBatch.from_pinholes([gen.cfg.frontal_camera()]), ["rgb"])["rgb"]
    img.mean().backward()
    assert ws.grad.abs().sum() > 0
    assert gen.backbone.synthesis.b32.torgb.weight.grad.abs().sum() > 0
    assert gen.superresolution.block0.conv1.weight.grad.abs().sum() > 0
    assert gen.backbone.mapping.fc0.weight.grad is None  # the latent is given: the mapping is not used


def test_upsample_keeps_a_constant_image_constant():
    x = torch.ones(1, 2, 8, 8)
    y = upsample2d(x, fir_filter())
    assert y.shape == (1, 2, 16, 16)
    assert torch.allclose(y[..., 2:-2, 2:-2], torch.ones_like(y[..., 2:-2, 2:-2]), atol=1e-6)


def test_up_convolution_is_transposed_convolution_then_fir_blur():
    """The official StyleGAN2 up-sampling layer is conv_transpose2d(x, w, stride 2) followed by the FIR
    filter (gain 4) with one pixel of padding each side (conv2d_resample's fast path); ours computes FIR
    up-sampling then the flipped kernel. Same operator, padding included."""
    import torch.nn.functional as F

    from services.inversion.generators.layers import modulated_conv2d

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(1, 4, 6, 6, generator=g), torch.randn(5, 4, 3, 3, generator=g)
    styles = torch.ones(1, 4)
    ours = modulated_conv2d(x, w, styles, demodulate=False, padding=1, up=True, resample_filter=fir_filter())
    t = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)                    # (1, 5, 13, 13)
    f = (fir_filter() * 4)[None, None].expand(5, 1, 4, 4)
    official = F.conv2d(F.pad(t, (1, 1, 1, 1)), f, groups=5)                   # (1, 5, 12, 12)
    assert ours.shape == official.shape == (1, 5, 12, 12)
    assert torch.allclose(ours, official, atol=1e-5)


def test_camera_label_round_trip_and_pose_range():
    c = TINY_CONFIGS["tiny-triplane"]
    cam = c.frontal_camera(azimuth=25, elevation=-10)
    label = c.label(cam)
    assert label.shape == (25,)
    assert np.isclose(np.linalg.norm(label[:16].reshape(4, 4)[:3, 3] - np.array(c.camera_target)), c.camera_radius)
    back = c.camera_from_label(label, cam.width)
    np.testing.assert_allclose(back.world_to_camera, cam.world_to_camera, atol=1e-5)
    np.testing.assert_allclose(back.K, cam.K, atol=1e-4)
    az, el = c.camera_angles(cam)
    assert abs(az - 25) < 1e-6 and abs(el + 10) < 1e-6
    assert c.pose_in_range(cam) and not c.pose_in_range(c.frontal_camera(azimuth=120))
    assert TINY_CONFIGS["tiny-trigrid"].pose_in_range(c.frontal_camera(azimuth=180))  # PanoHead: 360 degrees


def test_config_validation_names_the_setting():
    with pytest.raises(ValueError, match="plane_resolution"):
        GeneratorConfig(plane_resolution=48)
    with pytest.raises(ValueError, match="pyramid_levels"):
        GeneratorConfig(kind="pyramid_trigrid", depth=3, plane_resolution=32, pyramid_levels=(16, 64))
    with pytest.raises(ValueError, match="unknown generator config keys"):
        GeneratorConfig.from_dict({"kind": "triplane", "colour": 3})


def test_checkpoint_round_trip(tmp_path):
    gen = tiny_generator("tiny-trigrid", seed=3)
    save_generator(gen, tmp_path / "g")
    meta = json.loads((tmp_path / "g" / "config.json").read_text())
    assert meta["format"] == "headforge.gan" and meta["generator"]["kind"] == "trigrid"
    loaded = load_generator(tmp_path / "g")
    assert loaded.weights_format == "safetensors" and len(loaded.sha256) == 16
    ws = latent(gen)
    cam = CameraBatch.from_pinholes([gen.cfg.frontal_camera()])
    with torch.no_grad():
        a, b = gen.generate(ws, cam), loaded.generator.generate(ws, cam)
    assert torch.equal(a, b)


def test_bad_checkpoints_say_what_was_expected(tmp_path):
    with pytest.raises(FailedPrecondition) as e:
        load_generator(tmp_path / "nowhere")
    assert e.value.reason == "GENERATOR_NOT_FOUND" and "config.json" in e.value.message
    (tmp_path / "empty").mkdir()
    with pytest.raises(FailedPrecondition, match="model.safetensors"):
        load_generator(tmp_path / "empty")
    gen = tiny_generator("tiny-triplane")
    save_generator(gen, tmp_path / "g")
    cfg = json.loads((tmp_path / "g" / "config.json").read_text())
    cfg["generator"]["w_dim"] = 64
    (tmp_path / "g" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FailedPrecondition) as e:
        load_generator(tmp_path / "g")
    assert e.value.reason == "CHECKPOINT_MISMATCH"
    assert "config expects [64, 32], the file has [32, 32]" in e.value.message or "config expects" in e.value.message
    (tmp_path / "g" / "config.json").write_text("{not json")
    with pytest.raises(FailedPrecondition, match="config.json"):
        load_generator(tmp_path / "g")


class _Alarm:
    """Unpickling this runs code (it writes a file): what the trust flag protects against."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_needs_the_trust_flag_and_is_never_opened_without_it(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "network.pkl", "wb") as f:
        pickle.dump({"G_ema": _Alarm(str(marker))}, f)
    with pytest.raises(FailedPrecondition) as e:
        convert_network_pickle(tmp_path / "network.pkl", trust=False)
    assert e.value.reason == "PICKLE_NOT_TRUSTED" and "--trust-pickles" in e.value.message
    assert not marker.exists()
    with pytest.raises(FailedPrecondition) as e:  # with trust it runs: and then is not a network
        convert_network_pickle(tmp_path / "network.pkl", trust=True)
    assert marker.exists() and e.value.reason == "CHECKPOINT_MISMATCH"


class OfficialLike(torch.nn.Module):
    """Stands in for an official EG3D TriPlaneGenerator (whose classes need the EG3D code): same
    state_dict names and storage, extra official-only buffers, and init_kwargs with rendering_kwargs."""

    def __init__(self, inner: TriplaneGenerator):
        super().__init__()
        self.backbone, self.decoder, self.superresolution = inner.backbone, inner.decoder, inner.superresolution
        self.register_buffer("official_only_flag", torch.ones(1))
        c = inner.cfg
        self.init_kwargs = {"z_dim": c.z_dim, "w_dim": c.w_dim, "img_resolution": c.output_resolution,
                            "rendering_kwargs": {"box_warp": 1.0, "depth_resolution": 20,
                                                 "depth_resolution_importance": 12, "avg_camera_radius": 2.7,
                                                 "avg_camera_pivot": [0, 0, 0.2], "ray_start": "auto"}}


def test_converter_reads_an_official_style_pickle(tmp_path):
    src = tiny_generator("tiny-triplane", seed=5)
    with open(tmp_path / "network.pkl", "wb") as f:
        pickle.dump({"G": None, "G_ema": OfficialLike(src), "training_set_kwargs": {}}, f)
    gen = convert_network_pickle(tmp_path / "network.pkl", trust=True)
    c = gen.cfg
    assert (c.kind, c.plane_resolution, c.channels, c.w_dim, c.z_dim, c.neural_resolution, c.output_resolution) == \
        ("triplane", 32, 8, 32, 32, 32, 64)
    assert (c.samples_per_ray, c.importance_samples, c.ray_start) == (20, 12, 0.0)
    assert c.c_scale == 0.0  # the official mapping's default when rendering_kwargs has no c_scale
    assert (c.channel_base, c.channel_max, c.sr_channels) == (1024, 64, (16,))
    ws = latent(src)
    cam = CameraBatch.from_pinholes([c.frontal_camera()])
    same = src.cfg.with_(samples_per_ray=20, importance_samples=12)
    ref = TriplaneGenerator(same)
    ref.load_state_dict(src.state_dict())
    with torch.no_grad():
        assert torch.equal(gen.generate(ws, cam), ref.generate(ws, cam))
    # a tri-grid needs the kind said explicitly (shapes cannot tell); a wrong depth is refused clearly
    with pytest.raises(FailedPrecondition, match="3 x C x depth 5"):
        convert_network_pickle(tmp_path / "network.pkl", trust=True, overrides={"kind": "trigrid", "depth": 5})


def test_lpips_loads_lpips_format_files_and_states_its_fallback(tmp_path):
    vgg = random_vgg_state(seed=1)
    torch.save(vgg, tmp_path / "vgg16.pth")
    widths = [8, 16, 32, 32, 32]
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(widths)}, tmp_path / "vgg.pth")
    model = LPIPS.from_files(tmp_path / "vgg16.pth", tmp_path / "vgg.pth")
    assert model.name == "lpips-vgg16"
    x = torch.rand(2, 3, 32, 32)
    d = model(x, x.flip(-1))
    assert d.shape == (2,) and (d > 0).all()
    assert torch.allclose(model(x, x), torch.zeros(2), atol=1e-6)
    y = x.clone().requires_grad_(True)
    model(y, x.flip(-1)).sum().backward()
    assert y.grad.abs().sum() > 0
    assert load_lpips(str(tmp_path / "vgg16.pth"), None).name == "lpips-vgg16-uncalibrated"
    status = load_lpips(None, None)
    assert status.model is None and "L2 only" in status.reason
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, tmp_path / "wrong.pth")
    with pytest.raises(FailedPrecondition, match="lin1"):
        LPIPS.from_files(tmp_path / "vgg16.pth", tmp_path / "wrong.pth")
    with pytest.raises(FailedPrecondition, match="VGG16"):
        LPIPS.from_files(tmp_path / "vgg.pth")


def test_serve_inversion_finds_lpips_weights_in_its_models_folder(tmp_path):
    """`serve inversion --models-dir DIR` uses DIR/lpips/vgg16.pth (+ vgg.pth) unless --lpips-vgg says otherwise."""
    import argparse

    from services.inversion.cli import add_serve_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    (tmp_path / "lpips").mkdir()
    assert config_from_args(parser.parse_args(["--models-dir", str(tmp_path)])).lpips_vgg is None
    torch.save(random_vgg_state(seed=1), tmp_path / "lpips" / "vgg16.pth")
    cfg = config_from_args(parser.parse_args(["--models-dir", str(tmp_path)]))
    assert (cfg.lpips_vgg, cfg.lpips_lin) == (str(tmp_path / "lpips" / "vgg16.pth"), None)
    torch.save({}, tmp_path / "lpips" / "vgg.pth")
    assert config_from_args(parser.parse_args(["--models-dir", str(tmp_path)])).lpips_lin == str(tmp_path / "lpips" / "vgg.pth")
    own = config_from_args(parser.parse_args(["--models-dir", str(tmp_path), "--lpips-vgg", "/elsewhere.pth"]))
    assert (own.lpips_vgg, own.lpips_lin) == ("/elsewhere.pth", None)


def test_cli_convert_gan_needs_the_trust_flag(tmp_path):
    import subprocess
    import sys

    from services.common.process import ROOT

    with open(tmp_path / "network.pkl", "wb") as f:
        pickle.dump({"G_ema": OfficialLike(tiny_generator("tiny-triplane", seed=5))}, f)

    def headforge(*args):
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", "models", "convert-gan", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)

    r = headforge(str(tmp_path / "network.pkl"), str(tmp_path / "out"))
    assert r.returncode == 1 and "PICKLE_NOT_TRUSTED" not in r.stdout and "--trust-pickles" in r.stderr
    assert not (tmp_path / "out").exists()
    r = headforge(str(tmp_path / "network.pkl"), str(tmp_path / "out"), "--trust-pickle", "--set", "azimuth_max=45")
    assert r.returncode == 0, r.stderr
    loaded = load_generator(tmp_path / "out")
    assert loaded.weights_format == "safetensors" and loaded.generator.cfg.azimuth_max == 45
