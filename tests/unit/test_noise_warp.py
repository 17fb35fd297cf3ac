"""Multi-view noise warping (services/core/noise_warp.py) and the retention rule
(services/core/gradient_retention.py) of PortraitDiffusion's multi-view noise resampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from services.core.camera_batch import CameraBatch
from services.core.cameras import PinholeCamera, orbit_camera
from services.core.gradient_retention import cosine, keep_new, retain
from services.core.noise_warp import resample, upsample_noise, warp_image, warp_noise

SIZE = 64


def cam(azimuth: float, size: int = SIZE):
    return orbit_camera(azimuth, 0.0, 3.0, fov_deg=40.0, width=size, height=size)


def sphere_depth(camera, radius: float = 1.0) -> torch.Tensor:
    """(1, H, W) depth along the camera's +z of a sphere of `radius` at the origin; 0 off the sphere."""
    o, d = CameraBatch.from_pinholes([camera], dtype=torch.float64).pixel_rays()
    o, d = o[0], d[0]                                                    # (H, W, 3)
    b = (o * d).sum(-1)
    disc = b * b - ((o * o).sum(-1) - radius ** 2)
    t = -b - disc.clamp_min(0).sqrt()
    forward = torch.as_tensor(camera.camera_to_world[:3, 2], dtype=torch.float64)
    z = t * (d @ forward)
    return torch.where(disc > 0, z, torch.zeros_like(z))[None]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_upsampled_subsamples_are_white_and_sum_back():
    x = torch.randn((2, 100, 100), generator=gen(0))
    sub = upsample_noise(x, 3, gen(1))
    assert sub.shape == (2, 300, 300)
    back = sub.reshape(2, 100, 3, 100, 3).sum(dim=(2, 4)) / 3
    torch.testing.assert_close(back, x, atol=1e-5, rtol=0)
    v = sub.flatten().numpy()
    assert abs(v.mean()) < 0.02 and abs(v.std() - 1) < 0.02
    # two sub-samples of one pixel are uncorrelated (cov = 1/k^2 - 1/k^2)
    r = np.corrcoef(sub[:, ::3, ::3].flatten(), sub[:, ::3, 1::3].flatten())[0, 1]
    assert abs(r) < 0.03


def test_warp_30_degrees_about_the_head_stays_standard_normal():
    src, dst = cam(0.0), cam(30.0)
    eps = torch.randn((4, SIZE, SIZE), generator=gen(2))
    out, mask = warp_noise(eps, sphere_depth(src), src, dst, generator=gen(3))
    assert out.shape == (4, SIZE, SIZE) and mask.shape == (1, SIZE, SIZE) and mask.dtype == torch.bool
    on = out[:, mask[0]].flatten().numpy()
    assert mask.sum() > 1000, "the sphere covers a good part of the target view"
    assert not mask.all(), "the background and the disoccluded side are refilled"
    assert abs(on.mean()) < 0.05 and abs(on.std() - 1) < 0.05
    assert stats.kstest(on, "norm").pvalue > 0.01
    assert stats.normaltest(on).pvalue > 0.01
    both = mask[0, :, 1:] & mask[0, :, :-1]                              # lag-1 horizontal, warped pairs
    r_x = np.corrcoef(out[:, :, 1:][:, both].flatten(), out[:, :, :-1][:, both].flatten())[0, 1]
    both = mask[0, 1:] & mask[0, :-1]
    r_y = np.corrcoef(out[:, 1:][:, both].flatten(), out[:, :-1][:, both].flatten())[0, 1]
    assert abs(r_x) < 0.05 and abs(r_y) < 0.05
    full = out.flatten().numpy()                                         # refilled pixels are N(0, 1) too
    assert abs(full.mean()) < 0.05 and abs(full.std() - 1) < 0.05
    # deterministic given the generator
    again, _ = warp_noise(eps, sphere_depth(src), src, dst, generator=gen(3))
    assert torch.equal(out, again)


def test_identity_warp_reproduces_the_input_on_warped_pixels():
    c = cam(0.0)
    eps = torch.randn((4, SIZE, SIZE), generator=gen(4))
    depth = sphere_depth(c)
    out, mask = warp_noise(eps, depth, c, c, generator=gen(5))
    assert torch.equal(mask, depth > 0)
    torch.testing.assert_close(out[:, mask[0]], eps[:, mask[0]], atol=1e-5, rtol=0)


def test_zbuffer_keeps_the_nearest_surface_and_integrates_it():
    """A target at half the resolution (same pose): each target pixel receives the 4 x 4 sub-samples of
    a 2 x 2 source block. With one block pixel nearer than the other three, only its sub-samples survive
    the z-buffer, and their sum / sqrt(4) is that pixel's value exactly; with a flat depth all 16 count
    and the pixel is the integral sum(x) / 2 of the block."""
    src = cam(0.0)
    half = PinholeCamera(np.diag([0.5, 0.5, 1.0]) @ src.K, src.world_to_camera, SIZE // 2, SIZE // 2)
    eps = torch.randn((2, SIZE, SIZE), generator=gen(6))
    depth = torch.full((1, SIZE, SIZE), 3.0)
    depth[:, ::2, ::2] = 2.0                                             # the top-left pixel of each block
    out, mask = warp_noise(eps, depth, src, half, generator=gen(7))
    assert mask.all()
    torch.testing.assert_close(out, eps[:, ::2, ::2], atol=1e-5, rtol=0)
    flat, _ = warp_noise(eps, torch.full((1, SIZE, SIZE), 3.0), src, half, generator=gen(7))
    torch.testing.assert_close(flat, eps.reshape(2, SIZE // 2, 2, SIZE // 2, 2).sum(dim=(2, 4)) / 2,
                               atol=1e-5, rtol=0)


def test_resample_s0_is_the_anchor_and_s1_is_independent():
    anchor = torch.randn((4, 64, 64), generator=gen(8))
    assert torch.equal(resample(anchor, 0.0, gen(9)), anchor)
    fresh = resample(anchor, 1.0, gen(9))
    assert abs(np.corrcoef(fresh.flatten(), anchor.flatten())[0, 1]) < 0.03
    mid = resample(anchor, 0.3, gen(10))
    r = np.corrcoef(mid.flatten(), anchor.flatten())[0, 1]
    assert abs(r - np.sqrt(1 - 0.09)) < 0.01 and abs(float(mid.std()) - 1) < 0.03
    with pytest.raises(ValueError):
        resample(anchor, 1.5)


def test_aligned_noise_makes_oracle_x0_predictions_agree_across_views():
    """The paper's claim (eq. 13): noise warped from view 1 into view 2 makes the denoiser's outputs of
    the two views agree better than independent noise. On the oracle prior (the procedural head's
    exemplar at each camera, a Gaussian of std sigma around it) x0-hat is closed form but NOT noise-free:
    x0_hat = mu + sqrt(a) sigma^2 / (a sigma^2 + 1 - a) * sqrt(1 - a) * eps when the latent is the
    exemplar noised with eps, so the views' x0-hats differ by the exemplars' own disagreement (the same in
    both arms) plus a noise term that only aligned noise cancels. sigma = 0.5 makes the noise term visible
    at t = 500 (with the default 0.05 it would be ~0.3 % of the signal). Error: view 1's x0-hat warped into
    view 2 through view 1's depth vs view 2's x0-hat, on the head pixels both see. Not all of the noise
term cancels: the image warp averages the source pixels that land in a target pixel while the noise warp
integrates their sub-samples, which agree only where one source pixel fills the target pixel."""
    from services.core.procedural_head import render_head
    from services.guidance.backbones.base import BatchConditions
    from services.guidance.backbones.oracle import OracleBackbone, OracleBackboneConfig

    oracle = OracleBackbone(OracleBackboneConfig(sigma=0.5, native_resolution=SIZE, supersample=1))
    v1, v2 = cam(0.0), cam(20.0)
    mu = oracle.encode_cameras([v1, v2], (SIZE, SIZE), SIZE, [])                 # (2, 3, R, R) latents
    head1 = render_head(CameraBatch.from_pinholes([v1]), supersample=1)
    alpha2 = render_head(CameraBatch.from_pinholes([v2]), supersample=1)["alpha"][0]
    depth1 = torch.where(head1["alpha"][0] > 0.5, head1["depth"][0], torch.zeros_like(head1["depth"][0]))
    t = torch.tensor([500, 500])
    a = oracle.alphas_cumprod()[t].float()

    def x0_hat(eps):                                                              # (2, 3, R, R)
        x_t = a.sqrt()[:, None, None, None] * mu + (1 - a).sqrt()[:, None, None, None] * eps
        cond = BatchConditions(text=oracle.encode_text(["", ""]), cameras=mu)
        e = oracle.predict_noise(x_t, t, cond)
        return (x_t - (1 - a).sqrt()[:, None, None, None] * e) / a.sqrt()[:, None, None, None]

    errors = {}
    eps1 = torch.randn((3, SIZE, SIZE), generator=gen(11))
    independent = torch.randn((3, SIZE, SIZE), generator=gen(12))
    aligned, _ = warp_noise(eps1, depth1, v1, v2, generator=gen(13))
    for name, eps2 in (("independent", independent), ("aligned", aligned)):
        x0 = x0_hat(torch.stack([eps1, eps2]))
        seen, mask = warp_image(x0[0], depth1, v1, v2)
        overlap = mask[0] & (alpha2[0] > 0.99)
        errors[name] = float((seen - x0[1])[:, overlap].pow(2).mean())
    assert overlap.sum() > 500
    # the exemplars' own disagreement (warp resampling, edges): the floor both arms share
    floor = float((warp_image(mu[0], depth1, v1, v2)[0] - mu[1])[:, overlap].pow(2).mean())
    assert floor < errors["aligned"] < errors["independent"], (floor, errors)
    # aligned noise removes most of the noise-driven disagreement (measured: ~31 % of it is left)
    assert errors["aligned"] - floor < 0.5 * (errors["independent"] - floor), (floor, errors)


def test_retention_rule_picks_the_more_aligned_candidate():
    g_d = torch.tensor([1.0, 0.0, 0.0])
    near, far = torch.tensor([0.9, 0.1, 0.0]), torch.tensor([0.2, 1.0, 0.3])
    r = retain(g_d, near, far)
    assert r.keep_new and r.score_new > r.score_prev
    assert not retain(g_d, far, near).keep_new
    assert cosine(g_d, -g_d) == pytest.approx(-1.0)
    # scale does not matter, ties keep the previous
    assert not retain(g_d, 4 * near, near).keep_new
    assert not keep_new(0.5, 0.5) and keep_new(0.51, 0.5)
    with pytest.raises(ValueError):
        cosine(g_d, torch.zeros(4))
