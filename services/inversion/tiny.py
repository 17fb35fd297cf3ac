"""Tiny generators in the real on-disk format (checkpoint.py), for tests, benchmarks and the demo: random
weights, 32x32 feature planes, 32-pixel neural rendering, 64-pixel output after super-resolution.

    write_tiny_generators(DIR / "inversion")  ->  DIR/inversion/{tiny-triplane, tiny-trigrid, tiny-pyramid,
                                                                 tiny-3dportraitgan}
    python -m services.inversion.tiny DIR/inversion [NAME ...]   (the same from a shell)

With shape_prior (the default for written generators) the random generator is nudged for a few hundred
Adam steps so that, for any latent, its raw density is roughly clamp(200 * (0.6 - |x| / b), -20, 40) (b = box half
side: a blob of radius ~0.6 b with a sharp edge) while the colours and the per-latent variation stay
random: marching cubes then finds one closed surface and renders look like a solid object. Pure random
weights (shape_prior=False) give a semi-transparent cloud.
"""

from __future__ import annotations

from pathlib import Path

import torch

from services.core.models import mark_random_weights
from services.inversion.generators.checkpoint import save_generator
from services.inversion.generators.config import GeneratorConfig
from services.inversion.generators.triplane_generator import TriplaneGenerator

TINY = dict(z_dim=32, w_dim=32, mapping_layers=2, plane_resolution=32, channels=8, channel_base=1024,
            channel_max=64, decoder_hidden=32, decoder_features=8, neural_resolution=32, output_resolution=64,
            sr_channels=(16,), samples_per_ray=24, importance_samples=24, default_density_threshold=10.0)

TINY_CONFIGS = {
    "tiny-triplane": GeneratorConfig(kind="triplane", plane_axes="eg3d", **TINY),
    "tiny-trigrid": GeneratorConfig(kind="trigrid", depth=3, plane_axes="panohead", crop_style="head",
                                    azimuth_min=-180, azimuth_max=180, **TINY),
    "tiny-pyramid": GeneratorConfig(kind="pyramid_trigrid", depth=3, pyramid_levels=(8, 16, 32), plane_axes="panohead",
                                    plane_reduction="sum", crop_style="head", azimuth_min=-180, azimuth_max=180, **TINY),
    # 3DPortraitGAN's published architecture (generators/portraitgan.py) at tiny size: 2D blocks 4..16 all 3 x 4 x 3
    # wide, levels 8..32 from its 3D-aware blocks, a linear decoder and the w-modulated ToRGB after rendering
    "tiny-3dportraitgan": GeneratorConfig(kind="pyramid_trigrid", pyramid_style="3dportraitgan", depth=3,
                                          pyramid_levels=(8, 16, 32), plane_axes="panohead", plane_reduction="sum",
                                          crop_style="head", azimuth_min=-180, azimuth_max=180,
                                          decoder_activation="none", raw_torgb=True, pose_dim=6,
                                          **{**TINY, "plane_resolution": 16, "channels": 4}),
}


def tiny_generator(name: str = "tiny-triplane", seed: int = 0, shape_prior: bool = False,
                   prior_steps: int = 200) -> TriplaneGenerator:
    """A tiny generator with random weights drawn from `seed` (see the module docstring)."""
    torch.manual_seed(seed)
    gen = TriplaneGenerator(TINY_CONFIGS[name])
    if shape_prior:
        fit_shape_prior(gen, prior_steps, seed)
    if gen.cfg.raw_torgb:
        scale_raw_colours(gen, seed)
    return gen.eval().requires_grad_(False)


@torch.no_grad()
def scale_raw_colours(gen: TriplaneGenerator, seed: int = 0) -> None:
    """A linear decoder and ToRGB of random weights give raw colours far outside [-1, 1]: rescale the ToRGB so
    that, over random latents and the points inside the shape prior's blob, the raw image has mean 0 and
    standard deviation 0.5 per channel (colours 0.5 +- 0.25), the per-latent variation kept."""
    g = torch.Generator().manual_seed(seed + 2)
    b = gen.settings.box_size
    raws = []
    for _ in range(8):
        ws = gen.map(torch.randn(1, gen.cfg.z_dim, generator=g))
        pts = (torch.rand(2048, 3, generator=g) * 2 - 1) * b * 0.5
        _, feats = gen.query(gen.synthesize(ws))(pts)                                   # (P, K)
        A, a = gen.raw_torgb_map(ws)
        raws.append(feats @ A.t() + a)                                                  # (P, 3)
    raw = torch.cat(raws)
    scale = 0.5 / raw.std(0).clamp_min(1e-6)
    gen.torgb.weight.mul_(scale[:, None, None, None])
    gen.torgb.bias.copy_((gen.torgb.bias - raw.mean(0)) * scale)


def fit_shape_prior(gen: TriplaneGenerator, steps: int = 200, seed: int = 0, radius: float = 0.6) -> None:
    """Adam on every synthesis and decoder weight: raw density at random box points towards
    clamp(200 * (radius - |x| / b), -20, 40), for random latents: a sharp edge, so the volume rendering's
    visible surface and the mesh iso-surface (threshold 10, EG3D's default, as in the tiny configs) stay
    within ~0.1 world units of each other."""
    g = torch.Generator().manual_seed(seed + 1)
    b = gen.settings.box_size
    params = [p for n, p in gen.named_parameters() if not n.startswith("backbone.mapping.")]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=1e-2)
    for _ in range(steps):
        z = torch.randn(1, gen.cfg.z_dim, generator=g)
        ws = gen.map(z)
        pts = (torch.rand(4096, 3, generator=g) * 2 - 1) * b
        raw, _ = gen.query(gen.synthesize(ws))(pts)
        target = (200.0 * (radius - pts.norm(dim=-1) / b)).clamp(-20.0, 40.0)
        loss = (raw - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    gen.requires_grad_(False)
    with torch.no_grad():  # the tracked mean latent, as training would leave it
        gen.mapping.w_avg.copy_(gen.map(torch.randn(1000, gen.cfg.z_dim, generator=g))[:, 0].mean(0))


def write_tiny_generators(directory: str | Path, names=tuple(TINY_CONFIGS), shape_prior: bool = True) -> list[Path]:
    """Write each tiny generator to directory/<name> (config.json + model.safetensors + the random-weights
    marker file, services.core.models.mark_random_weights)."""
    out = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: extra threads only wait on each other on a busy machine
    try:
        for i, name in enumerate(names):
            gen = tiny_generator(name, seed=i, shape_prior=shape_prior)
            folder = save_generator(gen, Path(directory) / name,
                                    source=f"tiny random generator (headforge models make-tiny), seed {i}, "
                                           f"shape prior {shape_prior}; for tests only")
            mark_random_weights(folder, "services.inversion.tiny.write_tiny_generators (headforge models make-tiny)")
            out.append(folder)
    finally:
        torch.set_num_threads(threads)
    return out


if __name__ == "__main__":   # python -m services.inversion.tiny DIR [NAME ...]: write those tiny generators
    import sys

    for folder in write_tiny_generators(sys.argv[1], names=tuple(sys.argv[2:]) or tuple(TINY_CONFIGS)):
        print(folder)
