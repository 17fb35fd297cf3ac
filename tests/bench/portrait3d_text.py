"""The Portrait3D-Text recipe (orchestrator/recipes/builtin/portrait3d_text.yaml) timed stage by stage with RANDOM
WEIGHTS: seconds per step of inversion, SDS and refinement, extrapolated to the recipe's counts, peak GPU memory
per phase, and SDS throughput when K subjects share one GPU. Figures of the architectures' cost, not a result:
no pretrained model is used and what the stages make is meaningless.

Every stage runs on the services' own in-process code paths:
  inversion  services.inversion.invert with the recipe's settings (W+, camera offsets, noise regularisation,
             LPIPS at 256 on a full-width VGG16 with random weights), via tests/bench/inversion.time_inversion;
  sds        the recipe's optimise stage (orchestrator/stages/optimise.run) on a render-service
             pyramid_trigrid scene made from the generator's exported field (the invert stage's ExportField
             -> CreateScene), with the stage's own Adan (level_lrs, decoder frozen): render 128 px ->
             guidance Distill at 512 (CFG 100, view-dependent prompts) -> ApplyGradients;
  refine     the recipe's refine stage (orchestrator/stages/refine.run): 21 target renders at 512 -> guidance
             Denoise (SDEdit, strength 0.2 of a 50-step grid = 10 steps) -> regression on 256 px native patches.
K subjects: K threads, each running the SDS stage on its own scene, against one guidance service (its dynamic
batcher): total SDS iterations/s against K = 1.

size "full": 3DPortraitGAN's published architecture (levels 8..512, 12 channels x depth 3, 2D blocks 4..256 all 108
wide, linear decoder 12 -> 32 -> 33, raw ToRGB, super-resolution 128 -> 512) and the SD1.5 UNet + VAE + CLIP
(tests/bench/guidance.random_sd15_backbone, fp16), on CUDA. size "tiny": tiny-3dportraitgan and the tiny SD
(services/guidance/tiny_models.py) at small resolutions: the CPU smoke test of this benchmark.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from orchestrator.recipes import load_recipe
from orchestrator.stages import optimise, refine
from orchestrator.stages.context import StageContext
from orchestrator.stages.invert import _settings as invert_settings
from orchestrator.stages.params import ordered_view_count
from orchestrator.stages.scene import create_job_scene
from services.guidance.config import BatchingConfig, GuidanceConfig, load_config
from services.guidance.service import GuidanceService, InProcessGuidanceClient
from services.inversion.generators.config import GeneratorConfig
from services.inversion.generators.triplane_generator import TriplaneGenerator
from services.inversion.tiny import scale_raw_colours, tiny_generator
from services.render.service import InProcessRenderClient, RenderService
from tests.bench.guidance import random_sd15_backbone
from tests.bench.inversion import _lpips, time_inversion

RECIPE = "portrait3d_text"
NOTE = ("RANDOM WEIGHTS: the cost of the architectures on this device, not a result (no pretrained generator, "
        "diffusion model or VGG; the images and fields made are meaningless)")
PAPER = {"inversion": 4, "sds": 22, "refinement": 5, "total": 30}   # 0.5 h on an RTX 4090 (the paper's text)
PROMPT = "upper body photo of a person"

# 3DPortraitGAN's published model_512 architecture (convert_portraitgan.infer_portraitgan_config on its pickle)
PORTRAITGAN_512 = GeneratorConfig(
    kind="pyramid_trigrid", pyramid_style="3dportraitgan", z_dim=512, w_dim=512, c_dim=25, pose_dim=6, c_scale=1.0,
    mapping_layers=2, plane_resolution=256, channels=12, depth=3, pyramid_levels=(8, 16, 32, 64, 128, 256, 512),
    decoder_hidden=32, decoder_features=32, decoder_activation="none", raw_torgb=True, neural_resolution=128,
    output_resolution=512, sr_channels=(256, 128), box_warp=0.7, ray_start=2.385, ray_end=3.12, samples_per_ray=48,
    importance_samples=48, plane_axes="panohead", plane_reduction="sum", crop_style="head", azimuth_min=-180.0,
    azimuth_max=180.0, focal=6.5104, camera_radius=2.7, camera_target=(0.0, 0.0649, 0.0))

# steps timed per stage, and the resolutions (full: the recipe's own; tiny: small enough for a CPU)
SIZES = {
    "full": dict(invert_steps=10, sds_steps=10, refine_steps=10, target_views=21, sds_render=0, distill=0,
                 refine_render=0, patch=0, lpips_widths=(64, 128, 256, 512, 512), delay_ms=2),
    "tiny": dict(invert_steps=2, sds_steps=4, refine_steps=3, target_views=2, sds_render=32, distill=64,
                 refine_render=64, patch=32, lpips_widths=(8, 16, 32, 32, 32), delay_ms=5),
}


class _Timed:
    """A service client whose calls are timed: calls[method] = [(seconds, images), ...] (render calls that
    keep a step handle are "render_grad")."""

    def __init__(self, client, methods):
        self._client, self._methods, self.calls = client, set(methods), {}
        self._lock = threading.Lock()

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if name not in self._methods:
            return attr

        def timed(*args, **kw):
            t = time.perf_counter()
            out = attr(*args, **kw)
            key = name + ("_grad" if kw.get("requires_grad") else "")
            n = len(args[1]) if name == "render" else len(getattr(args[0], "images", ())) if args else 0
            with self._lock:
                self.calls.setdefault(key, []).append((time.perf_counter() - t, n))
            return out

        return timed

    def mean_s(self, key: str) -> float:
        """Mean seconds per call, the first (warm-up) left out when there are more."""
        rows = self.calls.get(key, [])
        rows = rows[1:] if len(rows) > 1 else rows
        return sum(s for s, _ in rows) / len(rows) if rows else 0.0

    def per_image_s(self, key: str) -> float:
        rows = self.calls.get(key, [])
        images = sum(n for _, n in rows)
        return sum(s for s, _ in rows) / images if images else 0.0


def _context(clients, seed: int, stage: str) -> tuple[StageContext, list[float]]:
    """A stage context over in-memory artifacts whose progress callback stamps the time of each finished step."""
    artifacts: dict[str, bytes] = {}
    marks: list[float] = []

    def write(name, data, _stage):
        artifacts[name] = data

    ctx = StageContext(job_id=f"bench-{seed}", seed=seed, images=[], job_prompt=PROMPT, clients=clients,
                       checkpoint_every=10 ** 6, write_artifact=write, read_artifact=artifacts.__getitem__,
                       report=lambda p: marks.append(time.perf_counter()), is_cancelled=lambda: False, stage=stage)
    return ctx, marks


def _step_seconds(marks: list[float]) -> list[float]:
    """The steps' durations from the progress stamps, without the first step (warm-up, the stage's set-up) and
    the last (the stage's final checkpoint)."""
    return [b - a for a, b in zip(marks[:-2], marks[1:-1])]


class _Memory:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.device = device

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.resident = torch.cuda.memory_allocated(self.device)

    def figures(self, subjects: int = 1) -> dict:
        if not self.cuda:
            return {}
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        return {"peak_gpu_mib": round(peak / 2 ** 20), "resident_before_mib": round(self.resident / 2 ** 20),
                "peak_gpu_mib_per_subject": round((peak - self.resident) / subjects / 2 ** 20)}


def _models(size: str, device: torch.device, tmp: Path, batching: BatchingConfig):
    """(generator, guidance service with the recipe's backbone name, their descriptions)."""
    if size == "full":
        torch.manual_seed(0)
        gen = TriplaneGenerator(PORTRAITGAN_512).to(device).eval().requires_grad_(False)
        scale_raw_colours(gen)   # random raw colours rescaled to ~[0, 1] (as the tiny generators do)
        bb = random_sd15_backbone(device)
        guidance = GuidanceService(GuidanceConfig(device=device.type, batching=batching),
                                   backbones={"realistic_vision_51": bb})
        described = {"generator": "3DPortraitGAN model_512 architecture (pyramid tri-grid 8..512, 12 ch x depth 3, "
                                  "2D blocks 4..256 x 108, decoder 12-32-33, raw ToRGB, SR 128 -> 512), random weights",
                     "guidance": "SD1.5 UNet + VAE + CLIP ViT-L architecture, random weights, fp16 (as "
                                 "realistic_vision_51)"}
    else:
        from services.guidance.backbones.registry import load_backbone
        from services.guidance.tiny_models import write_tiny_models

        gen = tiny_generator("tiny-3dportraitgan").to(device)
        path = write_tiny_models(tmp / "guidance")
        config = load_config(path, device=device.type)
        entry = next(e for e in config.backbones if e["name"] == "sd15-tiny")
        entry = {**entry, "controlnets": [], "identity_adapters": [], "loras": []}
        guidance = GuidanceService(GuidanceConfig(device=device.type, batching=batching),
                                   backbones={"realistic_vision_51": load_backbone(entry, Path(config.base_dir),
                                                                                   device)})
        described = {"generator": "tiny-3dportraitgan (services/inversion/tiny.py), random weights",
                     "guidance": "tiny SD1.5 layout (services/guidance/tiny_models.py), random weights, 64 px"}
    described["parameters"] = sum(p.numel() for p in gen.parameters())
    return gen, guidance, described


def _stage_params(size: str, s: dict):
    """The recipe's invert / sds / refine params, the timed step counts and (tiny) resolutions put in."""
    loaded = load_recipe(RECIPE)
    inv, sds, ref = (loaded.params[k] for k in ("invert", "sds", "refine"))
    recipe = {"invert_steps": inv.steps, "sds_iterations": sds.iterations, "refine_views": ordered_view_count(ref.cameras),
              "refine_denoise_steps_per_view": round(ref.strength * ref.num_steps), "refine_iterations": ref.iterations,
              "refine_rounds": ref.rounds, "sds_render_px": int(sds.cameras.resolution),
              "sds_distill_px": int(sds.terms[0].resolution), "refine_render_px": int(ref.cameras.resolution),
              "refine_patch_px": ref.patch_size}
    inv = inv.model_copy(update={"steps": s["invert_steps"], "progress_every": s["invert_steps"]})
    sds_cams = sds.cameras.model_copy(update={"resolution": s["sds_render"] or sds.cameras.resolution})
    term = sds.terms[0].model_copy(update={"resolution": s["distill"] or sds.terms[0].resolution})
    sds = sds.model_copy(update={"iterations": s["sds_steps"], "cameras": sds_cams, "terms": [term]})
    ref_cams = ref.cameras.model_copy(update={"resolution": s["refine_render"] or ref.cameras.resolution})
    ref = ref.model_copy(update={"iterations": s["refine_steps"], "cameras": ref_cams, "target_views": s["target_views"],
                                 "patch_size": s["patch"] or ref.patch_size})
    return inv, sds, ref, recipe


def _sds_subjects(k: int, field: bytes, render, guidance, sds, mem: _Memory) -> dict:
    """K threads, each the SDS stage on its own scene (made first, with the stage's optimiser), one guidance
    service: SDS iterations/s over the window where every subject is iterating."""
    mem.start()
    stats = guidance.batcher.stats
    images0, batches0 = stats.images, stats.batches
    guidance_timed = _Timed(InProcessGuidanceClient(guidance), ("distill",))
    render_timed = _Timed(render, ("render", "apply_gradients"))
    clients = SimpleNamespace(render=render_timed, guidance=guidance_timed, face=None, inversion=None)
    runs = []
    for i in range(k):
        ctx, marks = _context(clients, seed=i + 1, stage="sds")
        create_job_scene(ctx, "pyramid_trigrid", asset=(field, "npz"), optimizer=sds.optimizer)
        runs.append((ctx, marks))
    params = sds.model_copy(update={"optimizer": None})   # the scene already has the stage's optimiser
    errors: list[BaseException] = []

    def subject(ctx):
        try:
            optimise.run(ctx, params)
        except BaseException as e:   # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=subject, args=(ctx,)) for ctx, _ in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    t0 = max(m[0] for _, m in runs)      # every subject past its first step
    t1 = min(m[-2] for _, m in runs)     # none yet at its last (the final checkpoint)
    inside = sum(1 for _, m in runs for x in m if t0 < x <= t1)
    if t1 > t0 and inside:
        rate = inside / (t1 - t0)
    else:                                # too few steps to overlap: each subject's own mean
        rate = sum(1 / statistics.mean(_step_seconds(m)) for _, m in runs)
    row = {"iterations_per_s": round(rate, 3), "iterations_timed": sum(len(_step_seconds(m)) for _, m in runs),
           "mean_distill_batch_images": round((stats.images - images0) / max(1, stats.batches - batches0), 2),
           **mem.figures(k)}
    if k == 1:
        steps = _step_seconds(runs[0][1])
        row.update(s_per_iteration=round(statistics.mean(steps), 4), s_per_iteration_median=round(statistics.median(steps), 4),
                   breakdown_s={"render": round(render_timed.mean_s("render_grad"), 4),
                                "distill": round(guidance_timed.mean_s("distill"), 4),
                                "apply_gradients": round(render_timed.mean_s("apply_gradients"), 4)})
    for ctx, _ in runs:
        render.close_scene(ctx.scratch["scene_id"])
    return row


def bench_portrait3d_text(device: str | None = None, size: str = "full", k_subjects=(1, 2, 4)) -> dict:
    """The JSON figures (module docstring). device: "cuda" / "cpu" (default: cuda when present)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    started = time.perf_counter()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    s = SIZES[size]
    k_subjects = sorted(set(k_subjects) | {1})
    batching = BatchingConfig(max_batch_images=16, max_queue_delay_ms=s["delay_ms"])
    mem = _Memory(dev)
    inv, sds, ref, recipe = _stage_params(size, s)
    with tempfile.TemporaryDirectory() as tmp:
        gen, guidance, described = _models(size, dev, Path(tmp), batching)
    render = InProcessRenderClient(RenderService(device=str(dev)))
    report: dict = {"note": NOTE, "size": size, "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                    "torch": torch.__version__, "models": described, "recipe": recipe}
    stages: dict = {}
    try:
        # inversion: (CUDA) a warm-up run, then the timed steps (services.inversion.invert, the recipe's settings)
        lpips = _lpips(s["lpips_widths"], str(dev))
        if dev.type == "cuda":
            time_inversion(gen, steps=1, pti_steps=0, lpips=lpips, device=dev.type,
                           settings=invert_settings(inv.model_copy(update={"steps": 1, "progress_every": 1}), 0))
        mem.start()
        row = time_inversion(gen, steps=inv.steps, pti_steps=0, lpips=lpips, device=dev.type,
                             settings=invert_settings(inv, 0))
        stages["inversion"] = {"steps_timed": inv.steps, "s_per_step": row["invert_s_per_step"],
                               "lpips": row["lpips"], **mem.figures()}
        # the field the invert stage hands on (ExportField of a latent -> the render service's scene)
        with torch.no_grad():
            field = gen.export_field(gen.map(torch.randn(1, gen.cfg.z_dim, generator=torch.Generator().manual_seed(1))
                                             .to(dev)), None, "float32")
        del lpips
        # sds: K = 1 first (its per-iteration figures), then K subjects sharing the guidance service
        subjects = {}
        for k in k_subjects:
            subjects[str(k)] = _sds_subjects(k, field, render, guidance, sds, mem)
        one = subjects["1"]
        stages["sds"] = {"iterations_timed": one["iterations_timed"], "s_per_iteration": one["s_per_iteration"],
                         "s_per_iteration_median": one["s_per_iteration_median"], "breakdown_s": one["breakdown_s"],
                         **{k: one[k] for k in ("peak_gpu_mib", "resident_before_mib") if k in one}}
        # refine: the refine stage on a fresh scene (its own optimiser): target renders, Denoise, regression
        mem.start()
        guidance_timed = _Timed(InProcessGuidanceClient(guidance), ("denoise",))
        render_timed = _Timed(render, ("render",))
        clients = SimpleNamespace(render=render_timed, guidance=guidance_timed, face=None, inversion=None)
        ctx, marks = _context(clients, seed=1, stage="refine")
        create_job_scene(ctx, "pyramid_trigrid", asset=(field, "npz"))
        refine.run(ctx, ref)
        regress = _step_seconds(marks)
        denoise_view = guidance_timed.per_image_s("denoise")
        stages["refine"] = {
            "target_views_timed": ref.target_views, "s_per_target_render": round(render_timed.per_image_s("render"), 4),
            "s_per_view_denoise": round(denoise_view, 4),
            "s_per_denoise_step": round(denoise_view / recipe["refine_denoise_steps_per_view"], 4),
            "denoise_batch_images": max(n for _, n in guidance_timed.calls["denoise"]),
            "regress_steps_timed": len(regress), "s_per_regress_step": round(statistics.mean(regress), 4),
            "s_per_regress_step_median": round(statistics.median(regress), 4), **mem.figures()}
        render.close_scene(ctx.scratch["scene_id"])
    finally:
        guidance.close()
    inv_s, sds_s, ref_s = stages["inversion"], stages["sds"], stages["refine"]
    minutes = {"inversion": recipe["invert_steps"] * inv_s["s_per_step"] / 60,
               "sds": recipe["sds_iterations"] * sds_s["s_per_iteration"] / 60,
               "refinement": recipe["refine_rounds"] * (recipe["refine_views"] * (ref_s["s_per_target_render"]
                                                                                  + ref_s["s_per_view_denoise"])
                                                        + recipe["refine_iterations"] * ref_s["s_per_regress_step"]) / 60}
    minutes["total"] = sum(minutes.values())
    base = subjects["1"]["iterations_per_s"]
    for row in subjects.values():
        row["speedup_vs_1"] = round(row["iterations_per_s"] / base, 2) if base else None
    for k, row in subjects.items():
        row["sds_minutes_per_subject"] = round(recipe["sds_iterations"] * int(k) / row["iterations_per_s"] / 60, 2) \
            if row["iterations_per_s"] else None
    report.update(
        stages=stages,
        extrapolation={
            "formula": {"inversion": "invert_steps * inversion.s_per_step / 60",
                        "sds": "sds_iterations * sds.s_per_iteration / 60",
                        "refinement": "refine_rounds * (refine_views * (refine.s_per_target_render + "
                                      "refine.s_per_view_denoise) + refine_iterations * refine.s_per_regress_step) / 60",
                        "total": "inversion + sds + refinement (generate, preprocess, export and turntable not timed)"},
            "counts": {k: recipe[k] for k in ("invert_steps", "sds_iterations", "refine_views",
                                              "refine_denoise_steps_per_view", "refine_iterations", "refine_rounds")}},
        estimated_minutes_this_device={k: round(v, 2) for k, v in minutes.items()},
        paper_rtx4090_minutes=dict(PAPER),
        k_subjects=subjects,
        wall_s=round(time.perf_counter() - started, 1))
    if not all(math.isfinite(v) for v in minutes.values()):
        raise RuntimeError(f"non-finite estimate {minutes}")
    return report


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(bench_portrait3d_text(size=sys.argv[1] if len(sys.argv) > 1 else "full"), indent=1))
