"""3DPortraitGAN conversion: a tiny network pickle in the published generator's exact state layout
(3DPortraitGAN_pyramid's TriPlaneGenerator: backbone.mapping with a 25 + 6 embed, the hierarchical
backbone.synthesis b<r> / b3d<r>.block, decoder.net, torgb, superresolution, bcg_synthesis,
pose_branch, renderer SMPL buffers; official-only buffers included), converted with the trust flag;
the converted generator's levels, decoding and ToRGB-after-render are checked against hand
computations from the fake network's own tensors (real files, no mocks)."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from services.common.errors import FailedPrecondition
from services.core.camera_batch import CameraBatch
from services.inversion.generators.checkpoint import load_generator
from services.inversion.generators.convert_pickle import convert_network_pickle
from services.inversion.generators.layers import fir_filter, upsample2d

Z, W, C, D, R = 16, 16, 12, 3, 16        # tiny: 2D blocks 4..16, levels 8, 16, 32; 12 channels x depth 3
C3 = 3 * C * D                           # the 2D blocks' width (108)
K, HIDDEN, NEURAL, OUT = 32, 32, 8, 32   # decoder features / hidden; neural 8 -> SR 16 -> 32
BOX = 0.7
RK = {"box_warp": BOX, "ray_start": 2.385, "ray_end": 3.12, "depth_resolution": 12,
      "depth_resolution_importance": 12, "triplane_depth": D, "decoder_activation": "none",
      "use_torgb_raw": True, "use_background": True, "c_scale": 1.0, "c_gen_conditioning_zero": False,
      "clamp_mode": "softplus", "superresolution_module": "training.superresolution.SuperresolutionHybrid8XDC",
      "avg_camera_radius": 2.7, "avg_camera_pivot": [0.0, 0.0, 0.0]}


# --- the official layout, at tiny size (parameters only: the maths is in the reference functions) -----

class FC(nn.Module):
    def __init__(self, i, o, lr=1.0, bias_init=0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(o, i) / lr)
        self.bias = nn.Parameter(torch.full([o], float(bias_init)))
        self.lr = lr


class Layer(nn.Module):  # SynthesisLayer (roll_out None or 'b')
    def __init__(self, i, o, res, roll=False):
        super().__init__()
        self.affine = FC(W, i * (9 if roll else 1), bias_init=1)
        self.weight = nn.Parameter(torch.randn(o, i * (3 if roll else 1), 3, 3))
        self.register_buffer("noise_const", torch.randn(res, res))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(o))
        self.register_buffer("resample_filter", fir_filter())


class ToRGB(nn.Module):
    def __init__(self, i, o, roll=False):
        super().__init__()
        self.affine = FC(W, i * (9 if roll else 1), bias_init=1)
        self.weight = nn.Parameter(torch.randn(o, i * (3 if roll else 1), 1, 1))
        self.bias = nn.Parameter(torch.zeros(o))


class Block(nn.Module):  # SynthesisBlock
    def __init__(self, i, o, res, img, roll=False):
        super().__init__()
        self.register_buffer("resample_filter", fir_filter())
        if i == 0:
            self.const = nn.Parameter(torch.randn(1, o, res, res))
        else:
            self.conv0 = Layer(i, o, res, roll)
        self.conv1 = Layer(o, o, res, roll)
        self.torgb = ToRGB(o, img, roll)


class Aware3D(nn.Module):
    def __init__(self, res):
        super().__init__()
        self.block = Block(C3 // 3, C3 // 3, 2 * res, C3 // 3, roll=True)


class Synthesis(nn.Module):
    def __init__(self):
        super().__init__()
        for r in (4, 8, 16):
            setattr(self, f"b{r}", Block(0 if r == 4 else C3, C3, r, C3))
            setattr(self, f"b3d{r}", Aware3D(r))


class Mapping(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = FC(25 + 6, W)
        self.fc0 = FC(Z + W, W, lr=0.01)
        self.fc1 = FC(W, W, lr=0.01)
        self.register_buffer("w_avg", torch.randn(W))


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.synthesis, self.mapping = Synthesis(), Mapping()


class SR(nn.Module):
    def __init__(self):
        super().__init__()
        self.block0 = Block(K, 16, 2 * NEURAL, 3)
        self.block1 = Block(16, 8, 4 * NEURAL, 3)


class BcgSynthesis(nn.Module):
    def __init__(self):
        super().__init__()
        self.b4 = Block(0, 8, 4, K)


class Renderer(nn.Module):
    def __init__(self):
        super().__init__()
        for name in ("shaped_smpl", "align_points"):
            self.register_buffer(name, torch.randn(1, 10, 3))
        self.register_buffer("face_mask", torch.ones(6, dtype=torch.bool))
        self.register_buffer("head_face_mask", torch.ones(6, dtype=torch.bool))


class TriPlaneGenerator(nn.Module):
    """Stands in for 3DPortraitGAN_pyramid's training.smpl_triplane.TriPlaneGenerator."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.backbone = Backbone()
        self.superresolution = SR()
        self.decoder = nn.Module()
        self.decoder.net = nn.Sequential(FC(C, HIDDEN), nn.Softplus(), FC(HIDDEN, 1 + K))
        self.torgb = ToRGB(K, 3)
        self.bcg_synthesis = BcgSynthesis()
        self.pose_branch = nn.Module()
        self.pose_branch.net = nn.Sequential(FC(Z + 25, 8), FC(8, 4), FC(4, 6))
        self.renderer = Renderer()
        with torch.no_grad():  # trained-looking values: biases and noise strengths not at their inits
            for name, p in self.named_parameters():
                if name.endswith("noise_strength") or (name.endswith(".bias") and "affine" not in name):
                    p.copy_(torch.randn_like(p) * 0.3)
        self.neural_rendering_resolution = NEURAL
        self.rendering_kwargs = RK
        self.init_kwargs = {"z_dim": Z, "c_dim": 25, "w_dim": W, "img_resolution": OUT, "img_channels": 3,
                            "rendering_kwargs": RK, "conv_clamp": 256, "channel_base": 1024, "channel_max": 64,
                            "batch_size": 1, "thickness": 0.05, "explicitly_symmetry": True}


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    d = tmp_path_factory.mktemp("pgan")
    net = TriPlaneGenerator(seed=7)
    with open(d / "network.pkl", "wb") as f:
        pickle.dump({"G_ema": net, "G": None, "D": None}, f)
    report: list[str] = []
    gen = convert_network_pickle(d / "network.pkl", trust=True, report=report)
    return net, gen, report, d


def state_of(net):
    return {k: v.detach() for k, v in net.state_dict().items()}


# --- reference maths, from the official tensors -----------------------------------------------------

def fc(p, x, act=False):
    w, b = p.weight * p.lr / math.sqrt(p.weight.shape[1]), p.bias * p.lr
    y = x @ w.t() + b
    return F.leaky_relu(y, 0.2) * math.sqrt(2) if act else y


def modconv(x, weight, styles, demod=True, up=False):
    """Per sample: x * styles, conv (3x3 'same' or transposed stride 2 + FIR blur), demodulation."""
    outs = []
    for n in range(x.shape[0]):
        xs = x[n:n + 1] * styles[n][None, :, None, None]
        k = weight.shape[-1]
        if up:
            t = F.conv_transpose2d(xs, weight.transpose(0, 1), stride=2)
            f = (fir_filter() * 4)[None, None].expand(t.shape[1], 1, 4, 4)
            y = F.conv2d(F.pad(t, (1, 1, 1, 1)), f, groups=t.shape[1])
        else:
            y = F.conv2d(xs, weight, padding=k // 2)
        if demod:
            y = y * ((weight * styles[n][None, :, None, None]).square().sum([1, 2, 3]) + 1e-8).rsqrt()[None, :, None, None]
        outs.append(y)
    return torch.cat(outs)


def layer(p, x, w, roll=False, up=False):
    s = fc(p.affine, w)
    if roll:
        s, x = s.reshape(-1, s.shape[1] // 3), aware3d(x)
    y = modconv(x, p.weight, s, up=up) + p.noise_const * p.noise_strength
    return (F.leaky_relu(y + p.bias[None, :, None, None], 0.2) * math.sqrt(2)).clamp(-256, 256)


def torgb(p, x, w, roll=False, clamp=256.0):
    s = fc(p.affine, w) / math.sqrt(p.weight.shape[1] // (3 if roll else 1))
    if roll:
        s, x = s.reshape(-1, s.shape[1] // 3), aware3d(x)
    y = modconv(x, p.weight, s, demod=False) + p.bias[None, :, None, None]
    return y.clamp(-clamp, clamp) if clamp else y


def aware3d(x):
    """The published roll-out, written with the transposes the paper's code uses (a formulation
    independent of portraitgan.cross_plane_context)."""
    v = x.view(-1, 3, *x.shape[1:])
    xy, yz, zx = v[:, 0], v[:, 1], v[:, 2]
    zy, xz, yx = yz.transpose(-1, -2), zx.transpose(-1, -2), xy.transpose(-1, -2)
    full = xy.shape
    a = torch.cat([xy, zy.mean(-1, keepdim=True).expand(full), xz.mean(-2, keepdim=True).expand(full)], 1)
    b = torch.cat([yx.mean(-2, keepdim=True).expand(full), yz, xz.mean(-1, keepdim=True).expand(full)], 1)
    c = torch.cat([yx.mean(-1, keepdim=True).expand(full), zy.mean(-2, keepdim=True).expand(full), zx], 1)
    return torch.stack([a, b, c], 1).reshape(x.shape[0], -1, *x.shape[2:])


def reference_levels(net, ws):
    """{side: (3, C*D, side, side)} of the official hierarchical synthesis, for ws (1, 14-ish, W)."""
    syn = net.backbone.synthesis
    x = img = lvl = None
    levels, idx = {}, 0
    for r in (4, 8, 16):
        b = getattr(syn, f"b{r}")
        if r == 4:
            x = layer(b.conv1, b.const.expand(1, -1, -1, -1), ws[:, 0])
            block_ws, idx = ws[:, 0:2], 1
        else:
            block_ws = ws[:, idx:idx + 3]
            x = layer(b.conv0, x, block_ws[:, 0], up=True)
            x = layer(b.conv1, x, block_ws[:, 1])
            idx += 2
        y = torgb(b.torgb, x, block_ws[:, -1])
        img = y if img is None else upsample2d(img, fir_filter()) + y
        blk = getattr(syn, f"b3d{r}").block
        h = img.reshape(3, C3 // 3, r, r) + (lvl if lvl is not None else 0)
        w3 = block_ws[:, -1]
        h = layer(blk.conv0, h, w3, roll=True, up=True)
        h = layer(blk.conv1, h, w3, roll=True)
        lvl = torgb(blk.torgb, h, w3, roll=True)
        levels[2 * r] = lvl
    return levels


PLANES = torch.tensor([[[1., 0, 0], [0, 1, 0], [0, 0, 1]], [[1., 0, 0], [0, 0, 1], [0, 1, 0]],
                       [[0., 1, 0], [0, 0, 1], [1, 0, 0]]])  # the published generate_planes()


def reference_decode(net, levels, g):
    """(raw density, features) of generator-unit points g (P, 3): levels averaged, planes averaged."""
    q = g * (2 / BOX)
    proj = torch.stack([q @ torch.linalg.inv(m) for m in PLANES])  # (3, P, 3)
    total = 0
    for lv in levels.values():
        grid = lv.reshape(3, C, D, lv.shape[-2], lv.shape[-1])
        total = total + F.grid_sample(grid, proj[:, None, None], align_corners=False).flatten(2)  # (3, C, P)
    feats = (total / len(levels)).mean(0).t()  # (P, C)
    x = fc(net.decoder.net[2], F.softplus(fc(net.decoder.net[0], feats)))
    return x[:, 0], x[:, 1:]


def random_ws(gen, seed=1):
    return torch.randn(1, gen.num_ws, W, generator=torch.Generator().manual_seed(seed))


# --- tests ---------------------------------------------------------------------------------------------

def test_pickle_is_refused_unopened_without_trust(tmp_path, official):
    with pytest.raises(FailedPrecondition) as e:  # a path that does not exist: the flag is checked first
        convert_network_pickle(tmp_path / "absent.pkl", trust=False)
    assert e.value.reason == "PICKLE_NOT_TRUSTED"
    with pytest.raises(FailedPrecondition) as e:
        convert_network_pickle(official[3] / "network.pkl", trust=False)
    assert e.value.reason == "PICKLE_NOT_TRUSTED" and "--trust-pickles" in e.value.message


def test_config_is_the_published_pyramid(official):
    _, gen, _, _ = official
    c = gen.cfg
    assert (c.kind, c.pyramid_style, c.pyramid_levels, c.channels, c.depth) == \
        ("pyramid_trigrid", "3dportraitgan", (8, 16, 32), 12, 3)
    assert (c.plane_reduction, c.plane_axes, c.decoder_activation, c.raw_torgb) == ("sum", "panohead", "none", True)
    assert (c.z_dim, c.w_dim, c.c_dim, c.pose_dim, c.c_scale, gen.num_ws) == (Z, W, 25, 6, 1.0, 6)
    assert (c.neural_resolution, c.output_resolution, c.sr_channels) == (NEURAL, OUT, (16, 8))
    assert (c.box_warp, c.ray_start, c.ray_end, c.samples_per_ray, c.decoder_hidden, c.decoder_features) == \
        (BOX, 2.385, 3.12, 12, HIDDEN, K)
    assert gen.torgb.weight.shape == (3, K, 1, 1)


def test_tensors_copied_by_name_and_the_two_mapped_ones(official):
    net, gen, _, _ = official
    src, ours = state_of(net), gen.state_dict()
    copied = [k for k in ours if k in src and k not in ("backbone.synthesis.b4.const", "decoder.net.0.weight")]
    assert len(copied) == len(ours) - 2
    assert all(torch.equal(ours[k], src[k].float()) for k in copied)
    assert torch.equal(ours["backbone.synthesis.b4.const"], src["backbone.synthesis.b4.const"][0])
    assert torch.allclose(ours["decoder.net.0.weight"], src["decoder.net.0.weight"] / (3 * 3))


@torch.no_grad()
def test_levels_match_the_published_hierarchical_synthesis(official):
    net, gen, _, _ = official
    ws = random_ws(gen)
    grids = gen.synthesize(ws)
    ref = reference_levels(net, ws)
    assert sorted(grids) == ["level_16", "level_32", "level_8"]
    for side, lv in ref.items():
        ours = grids[f"level_{side}"]
        assert ours.shape == (3, C, D, side, side)
        assert lv.abs().max() > 1e-2  # not a degenerate comparison
        torch.testing.assert_close(ours, lv.reshape(3, C, D, side, side), rtol=1e-4, atol=1e-4)


@torch.no_grad()
def test_decoding_averages_planes_and_levels_like_the_published_sampler(official):
    net, gen, _, _ = official
    ws = random_ws(gen, seed=2)
    grids = gen.synthesize(ws)
    g = (torch.rand(500, 3, generator=torch.Generator().manual_seed(3)) * 2 - 1) * BOX / 2
    raw, colour = gen.query(grids)(g * gen.cfg.world_units_per_generator_unit)
    ref_raw, ref_colour = reference_decode(net, reference_levels(net, ws), g)
    torch.testing.assert_close(raw, ref_raw, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(colour, ref_colour, rtol=1e-4, atol=1e-4)  # linear: decoder_activation none
    assert colour.min() < -0.01 or colour.max() > 1.01  # not squashed by a sigmoid


@torch.no_grad()
def test_raw_image_is_the_w_modulated_torgb_of_the_rendered_features(official):
    net, gen, _, _ = official
    ws = random_ws(gen, seed=4)
    cams = CameraBatch.from_pinholes([gen.cfg.frontal_camera(), gen.cfg.frontal_camera(azimuth=40)])
    out = gen.render(ws, cams, ["rgb", "rgb_raw", "features"])
    feats = out["features"]
    assert feats.shape == (2, K, NEURAL, NEURAL) and out["rgb"].shape == (2, 3, OUT, OUT)
    t = net.torgb
    styles = fc(t.affine, ws[:, -1]) / math.sqrt(K)                          # (1, K)
    rgb = torch.einsum("oc,nchw->nohw", t.weight[:, :, 0, 0] * styles, feats) + t.bias[None, :, None, None]
    torch.testing.assert_close(out["rgb_raw"], (rgb + 1) / 2, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out["rgb_raw"], (feats[:, :3] + 1) / 2, atol=1e-2)  # not the first 3 channels


@torch.no_grad()
def test_exported_field_renders_the_raw_image_in_the_render_service(official):
    """ExportField folds the ToRGB (fixed w) into the linear decoder's colour rows: the render service's field
    scene, over the background (a + 1) / 2 (what zero features map to), renders exactly the raw image."""
    from services.core.field_npz import read_field_npz
    from services.core.field_render import FieldRenderer
    from services.render.representations.fields import load_field_npz

    net, gen, _, _ = official
    ws = random_ws(gen, seed=5)
    data = gen.export_field(ws)
    f = read_field_npz(data)
    assert (f.meta["colour_activation"], f.rgb_channels) == ("none", 3)
    cams = CameraBatch.from_pinholes([gen.cfg.frontal_camera(), gen.cfg.frontal_camera(azimuth=60)])
    raw = gen.render(ws, cams, ["rgb_raw", "alpha"])
    assert raw["alpha"].mean() > 0.01   # the random fake network is a thin cloud, but a cloud
    empty = ((net.torgb.bias + 1) / 2).expand(2, 3)
    field = load_field_npz(data).render(cams, ["rgb"], empty)["rgb"]
    assert (field - empty[:, :, None, None]).abs().max() > 1e-3   # not the empty colour alone
    torch.testing.assert_close(field, raw["rgb_raw"], rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(FieldRenderer.from_npz(data).render(cams, ["rgb"], empty)["rgb"], field, rtol=1e-4, atol=2e-5)


@torch.no_grad()
def test_mapping_feeds_zero_pose_after_the_label(official):
    net, gen, _, _ = official
    z = torch.randn(2, Z, generator=torch.Generator().manual_seed(5))
    label = gen.cfg.label(gen.cfg.frontal_camera())
    ws = gen.map(z, label)
    m = net.backbone.mapping
    c = torch.cat([torch.as_tensor(label)[None].expand(2, -1), torch.zeros(2, 6)], 1) * 1.0

    def norm(v):
        return v * (v.square().mean(1, keepdim=True) + 1e-8).rsqrt()

    x = torch.cat([norm(z), norm(fc(m.embed, c))], 1)
    w = fc(m.fc1, fc(m.fc0, x, act=True), act=True)
    torch.testing.assert_close(ws, w[:, None].expand(-1, gen.num_ws, -1), rtol=1e-4, atol=1e-5)


def test_unconverted_parts_are_reported_by_name(official):
    net, gen, report, _ = official
    text = "\n".join(report)
    for part in ("pose_branch", "bcg_synthesis", "renderer", "SMPL deformation", "triplane_crop", "pose conditioning"):
        assert part in text, part
    assert not any(k.startswith(("pose_branch.", "bcg_synthesis.", "renderer.")) for k in gen.state_dict())


def test_cli_convert_gan_routes_3dportraitgan(official, tmp_path):
    from services.common.process import ROOT

    net, gen, _, d = official

    def headforge(*args):
        return subprocess.run([sys.executable, "-m", "orchestrator.cli", "models", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=180)

    r = headforge("convert-gan", str(d / "network.pkl"), str(tmp_path / "out"))
    assert r.returncode == 1 and not (tmp_path / "out").exists()
    r = headforge("convert-gan", str(d / "network.pkl"), str(tmp_path / "out"), "--trust-pickle")
    assert r.returncode == 0, r.stderr
    assert "3dportraitgan levels [8, 16, 32]" in r.stdout and "not converted: pose_branch" in r.stdout
    loaded = load_generator(tmp_path / "out").generator
    assert loaded.cfg == gen.cfg
    ws = random_ws(gen, seed=6)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(loaded.synthesize(ws).values(), gen.synthesize(ws).values()))
    assert "3DPortraitGAN" in headforge("--help").stdout
