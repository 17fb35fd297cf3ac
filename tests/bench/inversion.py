"""Inversion throughput: latent-optimisation and PTI steps per second (render + SR + loss + backward +
Adam step), in-process on services.inversion.invert.

CPU: the tiny tri-plane generator (32^2 x 8 planes, 32 px neural, 64 px output, 24 + 24 samples), one
torch thread and all threads, L2 only and L2 + LPIPS on a small VGG-shaped network. With CUDA: a
full-size PanoHead-architecture generator with random weights (tri-grid 256^2 x 32 ch x depth 3,
w_dim 512, 14 ws, 64 px neural rendering with 48 + 48 samples, super-resolution to 512 px) and LPIPS
on a full-width VGG16 (random weights) at 256 px, as the PanoHead / EG3D projectors run it.
"""

from __future__ import annotations

import time

import torch

from services.inversion.generators.config import GeneratorConfig
from services.inversion.generators.triplane_generator import TriplaneGenerator
from services.inversion.invert import InversionOutcome, invert
from services.core.lpips import LPIPS, VGG_CONV_INDICES, random_vgg_state
from services.inversion.tiny import tiny_generator
from services.inversion.types import InvertSettings
from services.core.camera_batch import CameraBatch

PANOHEAD = GeneratorConfig(kind="trigrid", z_dim=512, w_dim=512, c_dim=25, mapping_layers=2, plane_resolution=256,
                           channels=32, depth=3, channel_base=32768, channel_max=512, decoder_hidden=64,
                           decoder_features=32, neural_resolution=64, output_resolution=512, sr_channels=(128, 64, 64),
                           samples_per_ray=48, importance_samples=48, plane_axes="panohead", crop_style="head",
                           azimuth_min=-180, azimuth_max=180)


def _lpips(widths, device) -> LPIPS:
    vgg = random_vgg_state(widths, seed=0)
    return LPIPS([(vgg[f"features.{i}.weight"], vgg[f"features.{i}.bias"]) for i in VGG_CONV_INDICES], None,
                 name=f"random VGG16-shaped, widths {list(widths)} (timing only)").to(device)


def time_inversion(gen: TriplaneGenerator, *, steps: int, pti_steps: int, lpips: LPIPS | None, device: str,
                   settings: InvertSettings | None = None) -> dict:
    """One inversion of a sample of `gen` (a frontal-ish view): steps/s and, on CUDA, peak memory. settings: a
    recipe's own InvertSettings (its steps, PTI and LPIPS weights are taken as they are), else the defaults
    with these steps."""
    gen = gen.to(device).eval().requires_grad_(False)
    cfg = gen.cfg
    cam = CameraBatch.from_pinholes([cfg.frontal_camera(azimuth=20)])
    with torch.no_grad():
        ws = gen.map(torch.randn(1, cfg.z_dim, device=device))
        target = gen.generate(ws, cam).clamp(0, 1)
    settings = settings or InvertSettings(steps=steps, pti=pti_steps > 0, pti_steps=max(pti_steps, 1), seed=1,
                                          progress_every=max(steps, 1), lpips_weight=1.0 if lpips else 0.0,
                                          pti_lpips_weight=1.0 if lpips else 0.0)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    out = None
    for ev in invert(gen, target, cam, None, settings, lpips=lpips):
        if isinstance(ev, InversionOutcome):
            out = ev
    wall = time.perf_counter() - t
    steps, pti_steps = settings.steps, settings.pti_steps if settings.pti else 0
    row = {"steps": steps, "pti_steps": pti_steps, "invert_steps_per_s": round(out.steps_per_s, 2),
           "invert_s_per_step": round(1 / out.steps_per_s, 4) if out.steps_per_s else None,
           "pti_steps_per_s": round(out.pti_steps_per_s, 2), "psnr_after_invert": round(out.latent_metrics.psnr, 2),
           "psnr_after_pti": round(out.pti_metrics.psnr, 2) if out.pti_metrics else None, "wall_s": round(wall, 1),
           "lpips": lpips.name if lpips else "none (L2 only)"}
    if device == "cuda":
        row["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20)
    return row


def bench_inversion(cpu_steps: int = 30, gpu_steps: int = 30) -> dict:
    report: dict = {"cpu": {}}
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        gen = tiny_generator("tiny-triplane")
        report["cpu"][f"tiny_triplane_{n}_threads_l2"] = time_inversion(gen, steps=cpu_steps, pti_steps=cpu_steps // 2,
                                                                          lpips=None, device="cpu")
        report["cpu"][f"tiny_triplane_{n}_threads_l2_lpips"] = time_inversion(
            gen, steps=cpu_steps, pti_steps=cpu_steps // 2, lpips=_lpips((8, 16, 32, 32, 32), "cpu"), device="cpu")
    torch.set_num_threads(threads)
    if torch.cuda.is_available():
        torch.manual_seed(0)
        gen = TriplaneGenerator(PANOHEAD)
        params = sum(p.numel() for p in gen.parameters())
        report["gpu"] = {"device": torch.cuda.get_device_name(0), "generator": "PanoHead architecture, random weights",
                         "parameters": params, "num_ws": gen.num_ws,
                         "panohead_l2_lpips_vgg16": time_inversion(gen, steps=gpu_steps, pti_steps=gpu_steps // 2,
                                                                   lpips=_lpips((64, 128, 256, 512, 512), "cuda"),
                                                                   device="cuda")}
    return report


if __name__ == "__main__":
    import json

    print(json.dumps(bench_inversion(), indent=1))
