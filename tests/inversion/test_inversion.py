"""Self-consistency of the inversion on small random-initialised generators: an image generated from a
known latent is inverted back (W+ from w_avg), and PTI raises the reconstruction quality further.

Figures (2-core CPU, one torch thread, tiny tri-plane: 32^2 x 8 planes, 32 px neural, 64 px output):
17.0 dB at w_avg -> 40.4 dB after 120 W+ steps (with LPIPS on a tiny random VGG) -> 45.4 dB after 60
PTI steps, 14-24 steps/s depending on the load (run with -s to see the line). The test asserts >= 28 dB and +1 dB for PTI
(margins for other seeds and machines).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from services.inversion.invert import InversionOutcome, invert, lr_schedule, noise_regularizer
from services.core.lpips import LPIPS, VGG_CONV_INDICES, random_vgg_state
from services.inversion.tiny import tiny_generator
from services.inversion.types import Cancelled, InvertSettings
from services.core.camera_batch import CameraBatch


def tiny_lpips():
    vgg = random_vgg_state(seed=2)
    return LPIPS([(vgg[f"features.{i}.weight"], vgg[f"features.{i}.bias"]) for i in VGG_CONV_INDICES], None)


def psnr(a, b):
    return 10 * math.log10(1 / float((a - b).square().mean()))


def run(gen, target, cam, settings, **kw):
    events = list(invert(gen, target, cam, gen.cfg.label(gen.cfg.frontal_camera(azimuth=20)), settings, **kw))
    return events[:-1], events[-1]


def test_invert_generated_image_back_then_pti_improves():
    gen = tiny_generator("tiny-triplane", seed=0)  # random weights, no shape prior
    cfg = gen.cfg
    cam = CameraBatch.from_pinholes([cfg.frontal_camera(azimuth=20)])
    ws_true = gen.map(torch.randn(1, cfg.z_dim, generator=torch.Generator().manual_seed(11)))
    with torch.no_grad():
        target = gen.generate(ws_true, cam).clamp(0, 1)
        w_avg, _ = gen.w_stats(cfg.label(cfg.frontal_camera(azimuth=20)))
        start = psnr(gen.generate(w_avg.expand(1, gen.num_ws, -1), cam).clamp(0, 1), target)
    settings = InvertSettings(steps=120, lr=0.05, pti=True, pti_steps=60, seed=3, progress_every=30)
    progress, out = run(gen, target, cam, settings, lpips=tiny_lpips())
    assert isinstance(out, InversionOutcome)
    print(f"\nPSNR at w_avg {start:.2f} dB, after W+ {out.latent_metrics.psnr:.2f} dB, after PTI "
          f"{out.pti_metrics.psnr:.2f} dB; {out.steps_per_s:.1f} inversion steps/s, {out.pti_steps_per_s:.1f} PTI steps/s")
    assert [(e.stage, e.step) for e in progress] == [("invert", 30), ("invert", 60), ("invert", 90), ("invert", 120),
                                                      ("pti", 30), ("pti", 60)]
    assert {"loss", "mse", "lpips", "lr", "psnr"} <= set(progress[0].scalars)
    assert out.latent_metrics.psnr >= 28.0 and out.latent_metrics.psnr > start + 5
    assert out.pti_metrics.psnr >= out.latent_metrics.psnr + 1.0
    assert out.pti_metrics.lpips <= out.latent_metrics.lpips
    assert out.ws.shape == (1, gen.num_ws, cfg.w_dim) and out.reconstruction.shape == (64, 64, 3)
    # PTI tuned a copy: the base generator is untouched and the copy shares the mapping network
    assert out.tuned is not gen and out.tuned.backbone.mapping is gen.backbone.mapping
    with torch.no_grad():
        assert torch.equal(gen.generate(ws_true, cam).clamp(0, 1), target)


@pytest.mark.parametrize("name", ["tiny-trigrid", "tiny-pyramid"])
def test_w_space_inversion_improves_on_the_other_kinds(name):
    gen = tiny_generator(name, seed=1)
    cam = CameraBatch.from_pinholes([gen.cfg.frontal_camera(azimuth=20)])
    with torch.no_grad():
        target = gen.generate(gen.map(torch.randn(1, gen.cfg.z_dim, generator=torch.Generator().manual_seed(4))),
                              cam).clamp(0, 1)
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 8:56, 8:56] = 1
    _, first = run(gen, target, cam, InvertSettings(latent_space="w", steps=1, seed=1, noise_regularization=0), mask=mask)
    _, out = run(gen, target, cam, InvertSettings(latent_space="w", steps=40, lr=0.05, seed=1), mask=mask)
    assert out.latent_metrics.psnr > first.latent_metrics.psnr + 2
    assert torch.equal(out.ws[0, 0], out.ws[0, -1])  # W: one latent for every layer
    assert math.isnan(out.latent_metrics.lpips)       # no LPIPS model: the stated fallback


def test_lr_ramp_and_noise_regulariser():
    assert lr_schedule(0.0, 0.1, 0.05, 0.25) == 0.0
    assert lr_schedule(0.5, 0.1, 0.05, 0.25) == pytest.approx(0.1)
    assert lr_schedule(0.99, 0.1, 0.05, 0.25) < 0.01
    assert lr_schedule(0.0, 0.1, 0.0, 0.0) == pytest.approx(0.1)
    g = torch.Generator().manual_seed(0)
    white = {"a": torch.randn(32, 32, generator=g)}
    smooth = {"a": torch.nn.functional.avg_pool2d(torch.randn(1, 1, 36, 36, generator=g), 5, 1)[0, 0] * 5}
    assert float(noise_regularizer(white)) < float(noise_regularizer(smooth))


def test_cancel_stops_the_inversion():
    gen = tiny_generator("tiny-triplane")
    cam = CameraBatch.from_pinholes([gen.cfg.frontal_camera()])
    target = torch.rand(1, 3, 64, 64)
    calls = []

    def cancelled():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        list(invert(gen, target, cam, None, InvertSettings(steps=50, progress_every=1), cancelled=cancelled))
    assert len(calls) == 4


def test_settings_validation_names_the_option():
    from services.common.errors import InvalidArgument

    for kw, field in [({"steps": 20000}, "options.steps"), ({"lr": -1}, "options.lr"),
                      ({"lr_rampup": 2}, "options.lr_rampup"), ({"init_latent": np.zeros(5)}, "options.init_latent"),
                      ({"l2_weight": 0, "lpips_weight": 0}, "options.l2_weight"),
                      ({"w_noise": float("nan")}, "options.w_noise")]:
        with pytest.raises(InvalidArgument) as e:
            InvertSettings(**kw).validate(8, 32)
        assert e.value.field == field
