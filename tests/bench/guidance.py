"""Guidance benchmarks (JSON figures, no pass/fail).

CPU: Distill throughput of the tiny SD1.5-layout model (64 px, 1 image per call) against the number of
concurrent callers (1, 2, 4, 8), with dynamic batching on and off (max_batch_images 1): the ratio is the
batching speed-up.
GPU (when CUDA is available): a full-size SD1.5-architecture UNet + VAE + CLIP text encoder with random
weights in fp16 at 512 px: ms per SDS step at batch 1..16 (images per request), and peak GPU memory for 1
and for 8 concurrent subjects (one model copy serving all of them).
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from services.guidance.config import BatchingConfig, GuidanceConfig, load_config
from services.guidance.schedule import SD_SCHEDULE
from services.guidance.service import GuidanceService
from services.guidance.types import Conditions, DistillRequest


def _throughput(svc: GuidanceService, callers: int, calls_per_caller: int, size: int) -> float:
    rng = np.random.default_rng(0)
    images = [rng.uniform(0, 1, (1, 3, size, size)).astype(np.float32) for _ in range(callers)]

    def subject(i: int) -> None:
        for k in range(calls_per_caller):
            svc.distill(DistillRequest(images=images[i], seed=1 + k, guidance_scale=7.5,
                                       conditions=Conditions(prompt=f"a portrait of person {i}",
                                                             text_cache_key=f"subject-{i}")))

    subject(0)  # warm-up
    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(subject, range(callers)))
    return callers * calls_per_caller / (time.perf_counter() - start)


def bench_guidance_cpu(calls_per_caller: int = 6) -> dict:
    from services.guidance.tiny_models import write_tiny_models

    torch.set_num_threads(2)
    out = {"model": "tiny SD1.5 layout (random weights), 64 px, CFG 7.5, 1 image per call", "callers": {}}
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(write_tiny_models(Path(tmp)), device="cpu")
        for label, batching in (("batched", BatchingConfig(max_batch_images=16, max_queue_delay_ms=5)),
                                ("unbatched", BatchingConfig(max_batch_images=1, max_queue_delay_ms=0))):
            svc = GuidanceService(config.model_copy(update={"batching": batching}))
            for callers in (1, 2, 4, 8):
                row = out["callers"].setdefault(str(callers), {})
                row[f"{label}_images_per_s"] = round(_throughput(svc, callers, calls_per_caller, 64), 2)
            out[f"{label}_mean_batch_images"] = round(svc.batcher.stats.images / max(1, svc.batcher.stats.batches), 2)
            svc.close()
    for row in out["callers"].values():
        row["batching_speedup"] = round(row["batched_images_per_s"] / row["unbatched_images_per_s"], 2)
    return out


def random_sd15_backbone(device: torch.device, dtype=torch.float16):
    """Stable Diffusion 1.5's UNet, VAE and CLIP ViT-L text encoder architectures with random weights (the
    tokenizer is the tiny one: tokenisation does not affect the timings)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from services.guidance.backbones.diffusers_backbone import DiffusersBackbone
    from services.guidance.backbones.diffusers_config import DiffusersBackboneConfig
    from services.guidance.tiny_models import write_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4,
                        sample_size=512)
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                num_attention_heads=12, max_position_embeddings=77, vocab_size=49408))
    with tempfile.TemporaryDirectory() as tmp:
        write_tokenizer(Path(tmp))
        tokenizer = CLIPTokenizer.from_pretrained(tmp)
    scheduler_config = {**SD_SCHEDULE, "prediction_type": "epsilon", "steps_offset": 1, "clip_sample": False,
                        "set_alpha_to_one": False}
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(**scheduler_config), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.to(device=device, dtype=dtype)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval().requires_grad_(False)
    cfg = DiffusersBackboneConfig(name="sd15-random", path="(in memory)", dtype="float16")
    return DiffusersBackbone(cfg, pipe, {}, [], 0, [], [], device, dtype, scheduler_config)


def bench_guidance_gpu(repeats: int = 10) -> dict:
    device = torch.device("cuda")
    bb = random_sd15_backbone(device)
    svc = GuidanceService(GuidanceConfig(device="cuda", batching=BatchingConfig(max_batch_images=16,
                                                                                max_queue_delay_ms=2)),
                          backbones={"sd15-random": bb})
    out = {"model": "SD1.5 architecture, random weights, fp16, 512 px, CFG 7.5 (2x UNet rows)",
           "device": torch.cuda.get_device_name(device), "ms_per_sds_step": {}, "images_per_s": {}}
    rng = np.random.default_rng(0)

    def step(n: int, seed: int) -> None:
        svc.distill(DistillRequest(images=rng.uniform(0, 1, (n, 3, 512, 512)).astype(np.float32), seed=seed,
                                   guidance_scale=7.5, conditions=Conditions(prompt="a portrait")))

    for n in (1, 2, 4, 8, 16):
        step(n, 1)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for k in range(repeats):
            step(n, 2 + k)
        torch.cuda.synchronize()
        ms = (time.perf_counter() - start) / repeats * 1e3
        out["ms_per_sds_step"][str(n)] = round(ms, 2)
        out["images_per_s"][str(n)] = round(n / ms * 1e3, 1)
    out["batch8_over_batch1_throughput"] = round(out["images_per_s"]["8"] / out["images_per_s"]["1"], 2)
    for subjects in (1, 8):
        torch.cuda.reset_peak_memory_stats(device)
        with ThreadPoolExecutor(subjects) as pool:
            list(pool.map(lambda i: [step(1, 100 + i * 10 + k) for k in range(4)], range(subjects)))
        out[f"peak_gpu_mib_{subjects}_subjects"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20)
    out["mean_batch_images"] = round(svc.batcher.stats.images / max(1, svc.batcher.stats.batches), 2)
    svc.close()
    return out


def bench_guidance() -> dict:
    report = {"cpu_tiny": bench_guidance_cpu()}
    if torch.cuda.is_available():
        report["gpu_sd15_fp16_512"] = bench_guidance_gpu()
    return report
