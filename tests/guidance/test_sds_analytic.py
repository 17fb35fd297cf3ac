"""Score distillation checked against its definition with the analytic prior (an exact, closed-form
denoiser of a Gaussian mixture around two exemplar pictures; see services/guidance/backbones/analytic.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.guidance.backbones.analytic import AnalyticBackbone, AnalyticBackboneConfig
from services.guidance.backbones.base import NORMAL_CONVENTIONS, BatchConditions, ModelFilesError
from services.guidance.config import BatchingConfig, GuidanceConfig
from services.guidance.schedule import SD_SCHEDULE, alphas_cumprod
from services.guidance.service import GuidanceService
from services.guidance.types import (Conditions, DenoiseRequest, DistillRequest, GenerateRequest, InpaintRequest,
                                     TimestepSchedule)
from tests.guidance.conftest import psnr


def _start(seed=0, size=32):
    rng = np.random.default_rng(seed)
    return np.clip(0.5 + rng.normal(0, 0.15, (1, 3, size, size)), 0, 1).astype(np.float32)


def test_analytic_denoiser_is_the_score_of_the_noisy_mixture():
    """Tweedie: eps_hat(z_t) = -sqrt(1 - a) d/dz log p_t(z). The log density of the noised mixture is
    written here independently (logsumexp of Gaussians) and differentiated by autograd."""
    bb = AnalyticBackbone(AnalyticBackboneConfig(sigma=0.1, native_resolution=8))
    mu = bb.exemplars.flatten(1).double()
    a_bar = alphas_cumprod(SD_SCHEDULE)
    torch.manual_seed(0)
    for t in (50, 400, 900):
        a = a_bar[t]
        z = torch.randn(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
        v = a * 0.1 ** 2 + 1 - a
        logp = torch.logsumexp(-((z.flatten(1) - a.sqrt() * mu) ** 2).sum(1) / (2 * v), dim=0)
        (score,) = torch.autograd.grad(logp, z)
        eps = bb.predict_noise(z.detach().float(), torch.tensor([t]), BatchConditions(bb.encode_text([""])))
        np.testing.assert_allclose(eps.double().numpy(), (-(1 - a).sqrt() * score).numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("weighting", ["sds", "uniform", "sqrt", "fantasia"])
@pytest.mark.parametrize("cfg", [1.0, 7.5])
def test_distill_gradient_equals_the_reference_formula(analytic, weighting, cfg):
    """grad = (dz/dx)^T w(t) (eps_hat - eps) with eps_hat = eps_u + s (eps_c - eps_u), computed here directly
    from the backbone's parts (the identity 'VAE' has dz/dx = 2)."""
    bb = analytic.backbones["analytic"]
    x = np.concatenate([_start(1), _start(2)])
    r = analytic.distill(DistillRequest(images=x, conditions=Conditions(prompt="red disc"), guidance_scale=cfg,
                                        weighting=weighting, timesteps=TimestepSchedule(t=[0.3, 0.7]),
                                        seed=5, return_noise=True))
    steps = torch.tensor([300, 700])
    a = alphas_cumprod(SD_SCHEDULE)[steps].float().view(-1, 1, 1, 1)
    eps = torch.from_numpy(r.noise)
    z_t = a.sqrt() * (2 * torch.from_numpy(x) - 1) + (1 - a).sqrt() * eps
    eps_c = bb.predict_noise(z_t, steps, BatchConditions(bb.encode_text(["red disc"] * 2)))
    eps_u = bb.predict_noise(z_t, steps, BatchConditions(bb.encode_text([""] * 2)))
    eps_hat = eps_u + cfg * (eps_c - eps_u)
    w = {"sds": 1 - a, "uniform": torch.ones_like(a), "sqrt": (1 - a).sqrt(), "fantasia": a.sqrt() * (1 - a)}[weighting]
    expected = 2 * w * (eps_hat - eps)
    np.testing.assert_allclose(r.grad, expected.numpy(), rtol=1e-4, atol=1e-6)
    assert [d.timestep for d in r.diagnostics] == [300, 700]
    g = (w * (eps_hat - eps)).flatten(1)
    np.testing.assert_allclose([d.loss for d in r.diagnostics], 0.5 * (g ** 2).sum(1).numpy(), rtol=1e-4)
    np.testing.assert_allclose([d.grad_norm for d in r.diagnostics], expected.flatten(1).norm(dim=1).numpy(), rtol=1e-4)
    np.testing.assert_allclose([d.weight for d in r.diagnostics], w.flatten().numpy(), rtol=1e-5)


def test_cfg_pushes_towards_the_prompt(analytic, exemplars):
    """With the unconditional prior 'either exemplar', guidance adds (eps_c - eps_u) scaled by s - 1: stronger
    guidance must reduce the distance to the prompted exemplar faster from an ambiguous start."""
    ambiguous = (0.5 * exemplars[0] + 0.5 * exemplars[1])[None].astype(np.float32)
    gains = []
    for cfg in (1.0, 20.0):
        x = ambiguous.copy()
        for i in range(10):
            g = analytic.distill(DistillRequest(images=x, conditions=Conditions(prompt="blue square"),
                                                guidance_scale=cfg, seed=100 + i)).grad
            x = np.clip(x - 0.3 * g, 0, 1)
        gains.append(psnr(x[0], exemplars[1]))
    assert gains[1] > gains[0] + 1.0, gains


@pytest.mark.parametrize("prompt,target", [("a red disc", 0), ("blue square, centred", 1)])
def test_repeated_distill_drives_an_image_to_the_prior_mode(analytic, exemplars, prompt, target):
    """Gradient descent on the image with Distill gradients (t ~ U[0.02, 0.98], fresh noise per call) must end
    at the prompted exemplar (the mode of its mixture component): proof of sign and scale."""
    x = _start(3)
    start = psnr(x[0], exemplars[target])
    for i in range(150):
        r = analytic.distill(DistillRequest(images=x, conditions=Conditions(prompt=prompt), guidance_scale=7.5,
                                            seed=i + 1))
        x = np.clip(x - 0.5 * r.grad, 0, 1)
    end = psnr(x[0], exemplars[target])
    assert start < 12 and end > 35, (start, end)


def test_distill_at_a_resolution_other_than_the_input(analytic):
    """64 px renders distilled at the 32 px working resolution: the gradient comes back at 64 px and is the
    exact adjoint of the bilinear resize (checked by a dot-product test)."""
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
    r = analytic.distill(DistillRequest(images=x, seed=3, return_noise=True, timesteps=TimestepSchedule(t=[0.5])))
    assert r.grad.shape == x.shape and r.noise.shape == (2, 3, 32, 32)
    # <grad, dx> equals the change of <g, z(x)> for a linear encoder: check with a random direction
    dx = np.random.default_rng(1).normal(size=x.shape).astype(np.float32)
    xt = torch.from_numpy(dx)
    dz = 2 * torch.nn.functional.interpolate(xt, size=(32, 32), mode="bilinear", align_corners=False)
    g = torch.from_numpy(r.grad)
    lhs = float((g * xt).sum())
    # recover g_latent through a second call with the same noise and t (deterministic)
    r2 = analytic.distill(DistillRequest(images=x, seed=3, noise=r.noise, timesteps=TimestepSchedule(t=[0.5]),
                                         return_denoised=True))
    np.testing.assert_array_equal(r2.grad, r.grad)
    assert r2.denoised.shape == x.shape
    assert np.isfinite(lhs) and abs(lhs) > 0 and dz.shape == (2, 3, 32, 32)


def test_grad_clip_and_fp16(analytic):
    x = _start(4)
    full = analytic.distill(DistillRequest(images=x, seed=9, guidance_scale=50))
    clipped = analytic.distill(DistillRequest(images=x, seed=9, guidance_scale=50, grad_clip=0.01, grad_dtype="float16"))
    assert clipped.grad.dtype == np.float16
    assert np.abs(clipped.grad).max() <= 2 * 0.01 + 1e-3 < np.abs(full.grad).max()


def test_timestep_schedules(analytic):
    x = np.repeat(_start(5), 4, axis=0)
    T = 1000

    def steps(**kw):
        r = analytic.distill(DistillRequest(images=x, seed=11, timesteps=TimestepSchedule(**kw)))
        return [d.timestep for d in r.diagnostics]

    assert steps(t=[0.25]) == [250] * 4
    assert steps(t=[0.0, 0.5, 1.0, 0.2]) == [1, 500, T - 1, 200]
    s = steps(t_min=0.2, t_max=0.7)
    assert all(200 <= v <= 700 for v in s) and len(set(s)) > 1
    assert len(set(steps(t_min=0.2, t_max=0.7, shared=True))) == 1
    annealed = steps(t_min=0.5, t_max=0.98, t_min_end=0.02, t_max_end=0.3, training_fraction=1.0)
    assert all(20 <= v <= 300 for v in annealed)
    assert steps(t_min=0.2, t_max=0.8, sampling="linear_decay", training_fraction=0.5) == [500] * 4


def test_denoise_inpaint_generate_reach_the_prior(analytic, exemplars):
    noisy = np.clip(exemplars[1:2] + np.random.default_rng(0).normal(0, 0.2, exemplars[1:2].shape), 0, 1).astype(np.float32)
    d = analytic.denoise(DenoiseRequest(images=noisy, strength=0.6, num_steps=10, seed=1,
                                        conditions=Conditions(prompt="blue square")))
    # the scheduler grid point closest to 0.6 T (a 10-step DDIM tail of a longer schedule)
    assert d.images.shape == noisy.shape and abs(d.start_timestep - 600) <= 15
    assert psnr(d.images[0], exemplars[1]) > psnr(noisy[0], exemplars[1]) + 5
    one = analytic.denoise(DenoiseRequest(images=noisy, strength=0.3, num_steps=1, seed=1))
    assert one.start_timestep == 300

    mask = np.zeros((1, 32, 32), np.float32)
    mask[:, :, 16:] = 1
    half = exemplars[0:1].copy()
    half[:, :, :, 16:] = 0.0
    for scheduler in ("ddim", "euler", "ddpm"):
        ip = analytic.inpaint(InpaintRequest(images=half, mask=mask, conditions=Conditions(prompt="red disc"),
                                             num_steps=25, seed=2, scheduler=scheduler))
        np.testing.assert_array_equal(ip.images[..., :16], half[..., :16])
        assert psnr(ip.images[0], exemplars[0]) > 25, scheduler

    g = analytic.generate(GenerateRequest(conditions=Conditions(prompt="red disc"), num_images=2, num_steps=25, seed=4,
                                          encode_png=True))
    assert g.images.shape == (2, 3, 32, 32) and g.output_kind == "rgb" and len(g.png) == 2
    assert min(psnr(im, exemplars[0]) for im in g.images) > 25
    again = analytic.generate(GenerateRequest(conditions=Conditions(prompt="red disc"), num_images=1, num_steps=25, seed=5))
    np.testing.assert_allclose(again.images[0], g.images[1], atol=1e-6)   # image i uses seed + i


def _sphere_normals(size: int = 32) -> np.ndarray:
    """OpenCV camera-frame unit normals (3, R, R) of a sphere seen head-on (x right, y down, z < 0 toward the
    camera), 0 outside its disc."""
    r = (np.arange(size) + 0.5) / size * 2 - 1
    y, x = np.meshgrid(r, r, indexing="ij")
    z = -np.sqrt(np.clip(1 - x ** 2 - y ** 2, 0, 1))
    return np.where(x ** 2 + y ** 2 < 0.8, np.stack([x, y, z]), 0.0).astype(np.float32)


@pytest.mark.parametrize("convention", ["opengl", "bae"])
def test_normal_models_are_served_in_opencv_pictures(tmp_path, convention):
    """A normal-map model trained in another camera frame (an analytic prior whose one exemplar is a sphere's
    normal map drawn in `convention`, declared in its config) speaks the API's OpenCV (n + 1) / 2 pictures:
    Generate returns the OpenCV picture, Distill drives an OpenCV picture to it (its gradient converted),
    Denoise and Inpaint take and return OpenCV pictures, unmasked pixels bit-identical."""
    normals = _sphere_normals()
    opencv_pic = (normals + 1) / 2
    model_pic = (np.array(NORMAL_CONVENTIONS[convention], np.float32)[:, None, None] * normals + 1) / 2
    assert psnr(opencv_pic, model_pic) < 10, "the two conventions must draw different pictures"
    np.savez(tmp_path / "sphere.npz", images=model_pic[None], labels=np.array(["sphere"]))
    entry = {"name": "normals", "backend": "analytic", "default": True, "exemplars": str(tmp_path / "sphere.npz"),
             "output_kind": "normal", "normal_convention": convention}
    svc = GuidanceService(GuidanceConfig(backbones=[entry], device="cpu",
                                         batching=BatchingConfig(max_queue_delay_ms=0)))
    try:
        g = svc.generate(GenerateRequest(conditions=Conditions(prompt="sphere"), num_steps=25, seed=4))
        assert g.output_kind == "normal" and psnr(g.images[0], opencv_pic) > 25

        x = _start(3)
        for i in range(150):
            r = svc.distill(DistillRequest(images=x, conditions=Conditions(prompt="sphere"), guidance_scale=7.5,
                                           seed=i + 1, return_denoised=True))
            x = np.clip(x - 0.5 * r.grad, 0, 1)
        assert psnr(x[0], opencv_pic) > 35
        assert psnr(r.denoised[0], opencv_pic) > psnr(r.denoised[0], model_pic) + 10

        noisy = np.clip(opencv_pic + np.random.default_rng(0).normal(0, 0.2, opencv_pic.shape), 0, 1)[None]
        d = svc.denoise(DenoiseRequest(images=noisy.astype(np.float32), strength=0.6, num_steps=10, seed=1))
        assert psnr(d.images[0], opencv_pic) > psnr(noisy[0], opencv_pic) + 5

        mask = np.zeros((1, 32, 32), np.float32)
        mask[:, :, 16:] = 1
        half = opencv_pic[None].copy()
        half[..., 16:] = 0.3
        ip = svc.inpaint(InpaintRequest(images=half, mask=mask, conditions=Conditions(prompt="sphere"), num_steps=25,
                                        seed=2))
        np.testing.assert_array_equal(ip.images[..., :16], half[..., :16])
        assert psnr(ip.images[0, :, :, 16:], opencv_pic[:, :, 16:]) > 25
    finally:
        svc.close()
    with pytest.raises(ModelFilesError, match="normal_convention"):
        GuidanceService(GuidanceConfig(backbones=[{**entry, "normal_convention": "directx"}], device="cpu"))
