"""The ID-to-3D recipe (orchestrator/recipes/builtin/id_to_3d.yaml) timed phase by phase with RANDOM WEIGHTS: a
few steps of each optimise stage on its own in-process code path (orchestrator/stages/optimise.run with the
recipe's stage params, load_recipe("id_to_3d").params, iterations cut), seconds per step extrapolated to the
recipe's counts, peak GPU memory per phase, and geometry throughput when K subjects share one GPU, next to the
paper's "6,000 geometry iterations ~30 min, 2,000 texture iterations ~15 min on a V100". Figures of the
architecture's cost, not a result: no pretrained model is used and what the stages make is meaningless.

The scene: the recipe's init stage (orchestrator/stages/scene.run_init) makes a render-service scene of kind
dmtet_expression from HeadForge's head template at the recipe's grid resolution, extent, max_offset and three
expression codes (full: the hash grids' defaults, 16 levels x 2 features x 2^19 entries; tiny: grid 32 and 2 x 2 x
2^8). The subject: a random photo, head mask and unit 512-d identity embedding (tests/bench/portrait3d_id's
_subject_state). The guidance service's backbone realistic_vision_faceid (the recipe's name) carries the identity
adapter (IP-Adapter FaceID), the expression adapter (services/guidance/backbones/expression_adapter.py) and the
LoRAs "normal" (output kind normal) and "albedo" (output kind albedo).

Phases (each one stage's params, its iterations cut to a few; the first timed step (warm-up, the stage's set-up)
and the last (the stage's final checkpoint) are left out of s_per_iteration):
  geometry           SDS on normal_camera (normal LoRA, identity and the step's expression, CFG 10, 512 px) on
                     256 px renders, Laplacian 5000, Adam on sdf_net / codes / deform;
  texture_diffuse    SDS on rgb (albedo LoRA) shaded pbr_diffuse under a procedural environment map (the device
                     has no HDR files: shading.environments = procedural), Adam on the material network;
  texture_full       the same, shading pbr;
  texture_photoreal  the same without the LoRA (a few steps: the per-step cost of texture_full minus the LoRA).
K subjects: K threads, each running the geometry stage (if it ran; else texture_diffuse, and the JSON says so) on
its own scene (a copy of the init scene) against the same render and guidance services (the guidance service's
dynamic batcher): steps/s in total, against K = 1.
Not timed: preprocess (the face service: detection, ArcFace), export (per-expression GLBs: xatlas and baking),
turntable and evaluate.

size "full": on CUDA, SD1.5's UNet + VAE + CLIP ViT-L with random weights in fp16 (tests/bench/guidance.
random_sd15_backbone) with a full-size random IP-Adapter FaceID (512-d -> 4 tokens x 768, LoRA rank 128), a random
expression adapter for SD1.5 (the pooled 768-d text embedding -> 4 tokens x 768) and random kohya LoRAs "normal"
and "albedo" (rank 16 on self-attention, 32 on cross-attention: the paper's). size "tiny": the tiny models
(services/guidance/tiny_models.write_tiny_models, its kohya albedo LoRA added), grid 32 and small resolutions: the
CPU smoke test of this benchmark. A phase that runs out of GPU memory is recorded as such (its error and peak) and
the others still run.
"""

from __future__ import annotations

import gc
import math
import statistics
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import torch

from orchestrator.recipes import load_recipe
from orchestrator.stages import optimise
from orchestrator.stages.scene import create_job_scene, run_init
from services.common.auth import current_tenant
from services.guidance.config import BatchingConfig, GuidanceConfig, load_config
from services.guidance.service import GuidanceService, InProcessGuidanceClient
from services.render.service import InProcessRenderClient, RenderService
from tests.bench.portrait3d_id import _optimise_phase, _subject_state
from tests.bench.portrait3d_text import _context, _Memory, _step_seconds, _Timed

RECIPE = "id_to_3d"
BACKBONE = "realistic_vision_faceid"
NOTE = ("RANDOM WEIGHTS: the cost of the architecture on this device, not a result (no pretrained diffusion model, "
        "identity or expression adapter or LoRA; the shapes and textures made are meaningless)")
PAPER = {"device": "one V100", "source": "ID-to-3D, implementation details",
         "geometry": {"iterations": 6000, "minutes": 30}, "geometry_13_expressions_minutes": 240,
         "texture": {"iterations": 2000, "minutes": 15}}
PHASES = ("geometry", "texture_diffuse", "texture_full", "texture_photoreal")
TEXTURE = ("texture_diffuse", "texture_full", "texture_photoreal")

# steps per phase (photoreal: fewer), steps per subject in the K-subject loops; 0 / {} = the recipe's own
SIZES = {
    "full": dict(steps=5, photoreal_steps=3, k_steps=4, k_subjects=(1, 2, 4), grid=0, hash={}, render=0, distill=0,
                 delay_ms=2, lora_ranks=(16, 32), expression_tokens=4),
    "tiny": dict(steps=3, photoreal_steps=3, k_steps=3, k_subjects=(1, 2), grid=32,
                 hash={"hash_levels": "2", "hash_features": "2", "hash_log2_size": "8"}, render=32, distill=64,
                 delay_ms=5),
}


# ---------------------------------------------------------------------------------------------------- models

def _full_backbone(device: torch.device, tmp: Path):
    """realistic_vision_faceid at full size: random SD1.5 (fp16) + FaceID + expression adapter + LoRAs."""
    from services.guidance.backbones.diffusers_backbone import DiffusersBackbone
    from services.guidance.backbones.diffusers_config import DiffusersBackboneConfig, LoraConfig
    from services.guidance.backbones.diffusers_loader import _load_lora
    from services.guidance.backbones.expression_adapter import (expression_state, read_expression_adapter,
                                                                write_expression_adapter)
    from services.guidance.tiny_models import _write_kohya_lora, faceid_state
    from tests.bench.guidance import random_sd15_backbone

    s = SIZES["full"]
    base = random_sd15_backbone(device)
    pipe, dtype = base.pipe, base.dtype
    # the files first (from the plain UNet's attention modules), each written and read back in its own format
    loras = []
    for i, (name, kind) in enumerate((("normal", "normal"), ("albedo", "albedo"))):
        path = tmp / f"lora-{name}" / f"{name}_lora.safetensors"
        _write_kohya_lora(pipe.unet, path, seed=30 + i, ranks=s["lora_ranks"])
        loras.append(LoraConfig(name=name, path=str(path.parent), weight_name=path.name, output_kind=kind))
    text_dim = int(pipe.text_encoder.config.hidden_size)
    expression_file = tmp / "expression-adapter" / "expression_adapter.safetensors"
    write_expression_adapter(expression_file, expression_state(pipe.unet, text_dim, tokens=s["expression_tokens"]),
                             s["expression_tokens"])
    expression, _ = read_expression_adapter(expression_file, pipe.unet, text_dim)
    # as diffusers_loader does: the identity adapter then the expression adapter in one list, then the LoRAs
    pipe.load_ip_adapter([faceid_state(pipe.unet, rank=128), expression], subfolder=["", ""], weight_name=["", ""],
                         image_encoder_folder=None, low_cpu_mem_usage=False)
    for lora in loras:
        _load_lora(pipe, lora.name, Path(lora.path) / lora.weight_name)
    pipe.unet.to(device=device, dtype=dtype).requires_grad_(False)
    cfg = DiffusersBackboneConfig(name=BACKBONE, path="(in memory)", dtype="float16",
                                  identity_adapters=[{"name": "faceid", "path": "(in memory)"}],
                                  expression_adapters=[{"name": "expression", "path": str(expression_file.parent)}],
                                  loras=loras)
    return DiffusersBackbone(cfg, pipe, {}, ["faceid"], 512, loras, [], device, dtype, base._scheduler_config,
                             expression_adapters=["expression"])


def _tiny_backbone(device: torch.device, tmp: Path):
    """realistic_vision_faceid over the tiny SD with its FaceID, expression adapter, normal LoRA and the kohya
    albedo LoRA (output kind albedo); no ControlNets (the recipe's terms have no controls)."""
    from services.guidance.backbones.registry import load_backbone
    from services.guidance.tiny_models import write_tiny_models

    config = load_config(write_tiny_models(tmp / "guidance"), device=device.type)
    sd = next(e for e in config.backbones if e["name"] == "sd15-tiny")
    albedo = {"name": "albedo", "path": "lora-albedo-kohya-tiny", "weight_name": "albedo_lora.safetensors",
              "output_kind": "albedo"}
    entry = {**sd, "name": BACKBONE, "controlnets": [], "loras": [*sd["loras"], albedo]}
    return load_backbone(entry, Path(config.base_dir), device)


# ---------------------------------------------------------------------------------------------------- params

def _recipe_params(s: dict):
    """(the counts the extrapolation uses, the init params, the phases' params) from the recipe."""
    p = load_recipe(RECIPE).params
    init = p["init"]
    dm = init.dmtet
    counts = {f"{k}_iterations": p[k].iterations for k in PHASES}
    counts.update(texture_iterations=sum(p[k].iterations for k in TEXTURE), expressions=len(dm.expressions),
                  grid_resolution=dm.grid_resolution, render_px=int(p["geometry"].cameras.resolution),
                  sds_px=int(p["geometry"].terms[0].resolution))
    init = init.model_copy(update={"dmtet": dm.model_copy(update={
        "grid_resolution": s["grid"] or dm.grid_resolution, "options": {**dm.options, **s["hash"]}})})
    run = {}
    for name in PHASES:
        st = p[name]
        update = {"iterations": s["photoreal_steps"] if name == "texture_photoreal" else s["steps"],
                  "cameras": st.cameras.model_copy(update={"resolution": s["render"] or st.cameras.resolution}),
                  "terms": [t.model_copy(update={"resolution": s["distill"] or t.resolution}) for t in st.terms]}
        if st.shading is not None:   # no HDR files on the device: procedural skies
            update["shading"] = st.shading.model_copy(update={"environments": "procedural"})
        run[name] = st.model_copy(update=update)
    return counts, init, run


# ---------------------------------------------------------------------------------------------------- running

def _out_of_memory(e: BaseException, mem: _Memory) -> dict:
    """A phase's row when CUDA ran out of memory: the error's first line and the peak before it."""
    row = {"error": "CUDA out of memory", "detail": str(e).split("\n")[0][:400], **mem.figures()}
    gc.collect()
    torch.cuda.empty_cache()
    return row


def concurrent_steps_per_s(marks: list[list[float]]) -> float:
    """Total steps/s of loops run concurrently, from each loop's progress stamps: the steps finished inside the
    window where every loop is past its first step and none has reached its last (the final checkpoint); with no
    such window (too few steps to overlap), the sum of each loop's own rate."""
    t0, t1 = max(m[0] for m in marks), min(m[-2] for m in marks)
    inside = sum(1 for m in marks for x in m if t0 < x <= t1)
    if t1 > t0 and inside:
        return inside / (t1 - t0)
    return sum(1 / statistics.mean(_step_seconds(m)) for m in marks)


def _k_subjects(k: int, state: bytes, render, guidance, params, mem: _Memory) -> dict:
    """K threads, each optimise.run of `params` on its own copy of the scene (checkpoint `state`, made with the
    stage's optimiser), against the same render and guidance services."""
    mem.start()
    stats = guidance.batcher.stats
    images0, batches0 = stats.images, stats.batches
    clients = SimpleNamespace(render=render, guidance=InProcessGuidanceClient(guidance), face=None, inversion=None)
    runs = []
    for i in range(k):
        ctx, marks = _context(clients, seed=100 + i, stage=f"subject_{i}")
        _subject_state(ctx, 64)
        ctx.state["expressions"] = list(params.expressions)
        create_job_scene(ctx, "dmtet_expression", asset=(state, "checkpoint"), optimizer=params.stage.optimizer,
                         options=params.options)
        runs.append((ctx, marks))
    stage = params.stage.model_copy(update={"optimizer": None})   # the scenes already have the stage's optimiser
    errors: list[BaseException] = []

    def subject(ctx):
        try:
            optimise.run(ctx, stage)
        except BaseException as e:   # noqa: BLE001 - reported by the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=subject, args=(ctx,)) for ctx, _ in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if errors:
            if isinstance(errors[0], torch.cuda.OutOfMemoryError):
                return _out_of_memory(errors[0], mem)
            raise errors[0]
        return {"steps_per_s": round(concurrent_steps_per_s([m for _, m in runs]), 4),
                "steps_timed": sum(len(_step_seconds(m)) for _, m in runs),
                "mean_distill_batch_images": round((stats.images - images0) / max(1, stats.batches - batches0), 2),
                **mem.figures(k)}
    finally:
        for ctx, _ in runs:
            render.close_scene(ctx.scratch.pop("scene_id"))


def bench_id_to_3d(device: str | None = None, size: str = "full", k_subjects=None) -> dict:
    """The JSON figures (module docstring). device: "cuda" / "cpu" (default: cuda when present); k_subjects: the
    K of the K-subject loops (default: the size's; 1 is always run)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    started = time.perf_counter()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    s = SIZES[size]
    cuda = dev.type == "cuda"
    ks = sorted(set(k_subjects or s["k_subjects"]) | {1})
    counts, init, run = _recipe_params(s)
    mem = _Memory(dev)
    tmp_dir = tempfile.TemporaryDirectory()
    tmp = Path(tmp_dir.name)
    stages: dict = {}
    subjects: dict = {}
    guidance = None
    try:
        t = time.perf_counter()
        if size == "full":
            bb = _full_backbone(dev, tmp)
            guidance_text = ("SD1.5 UNet + VAE + CLIP ViT-L architecture, random weights, fp16, with a random "
                             "full-size IP-Adapter FaceID, expression adapter and kohya LoRAs normal / albedo "
                             f"(ranks {s['lora_ranks'][0]} / {s['lora_ranks'][1]})")
        else:
            bb = _tiny_backbone(dev, tmp)
            guidance_text = ("tiny SD1.5 layout with tiny FaceID, expression adapter, normal LoRA and kohya albedo "
                             "LoRA (services/guidance/tiny_models.py), random weights, 64 px")
        guidance = GuidanceService(GuidanceConfig(device=dev.type, batching=BatchingConfig(
            max_batch_images=16, max_queue_delay_ms=s["delay_ms"])), backbones={BACKBONE: bb})
        models_s = time.perf_counter() - t
        render = InProcessRenderClient(RenderService(device=str(dev)))
        guidance_timed = _Timed(InProcessGuidanceClient(guidance), ("distill",))
        render_timed = _Timed(render, ("render", "apply_gradients"))
        clients = SimpleNamespace(render=render_timed, guidance=guidance_timed, face=None, inversion=None)

        # the init stage: the head template's expression DMTet at the recipe's grid
        ctx, marks = _context(clients, seed=1, stage="init")
        _subject_state(ctx, 64)
        t = time.perf_counter()
        run_init(ctx, init)
        init_s = time.perf_counter() - t
        scene = render.service.store.get(current_tenant(), ctx.scratch["scene_id"]).rep
        dm = init.dmtet
        described = {"guidance": guidance_text,
                     "scene": {"kind": "dmtet_expression", "source": init.start, "grid_resolution": dm.grid_resolution,
                               "extent": dm.extent, "max_offset": dm.max_offset, "expressions": list(dm.expressions),
                               "hash_grid": scene.hash_sizes, "grid_vertices": int(scene.template.numel()),
                               "network_vertices": int(scene.band().numel()),
                               "parameters": sum(p.numel() for p in scene.parameters()),
                               "random_weights": "the networks start at random (their read-outs at zero)"}}
        del scene
        state = render.get_state(ctx.scratch["scene_id"], exclude_optimizer=True)   # the K subjects' scenes

        for name in PHASES:
            ctx.stage = name
            render_timed.calls.clear()
            guidance_timed.calls.clear()
            mem.start()
            try:
                stages[name] = {**_optimise_phase(ctx, marks, render_timed, guidance_timed, run[name]),
                                **mem.figures()}
            except torch.cuda.OutOfMemoryError as e:
                stages[name] = _out_of_memory(e, mem)
        render.close_scene(ctx.scratch.pop("scene_id"))

        # K subjects on one GPU: geometry loops (texture_diffuse when geometry did not fit)
        k_phase = "geometry" if "error" not in stages["geometry"] else "texture_diffuse"
        k_params = SimpleNamespace(stage=run[k_phase].model_copy(update={"iterations": s["k_steps"]}),
                                   expressions=dm.expressions, options={**dm.options, **s["hash"]})
        for k in ks:
            subjects[str(k)] = _k_subjects(k, state, render, guidance, k_params, mem)
            if "error" in subjects[str(k)]:
                break
    finally:
        if guidance is not None:
            guidance.close()
        tmp_dir.cleanup()

    minutes = {name: round(counts[f"{name}_iterations"] * stages[name]["s_per_iteration"] / 60, 3)
               for name in PHASES if "error" not in stages[name]}
    if all(k in minutes for k in TEXTURE):
        minutes["texture"] = round(sum(minutes[k] for k in TEXTURE), 3)
    if "geometry" in minutes and "texture" in minutes:
        minutes["total"] = round(minutes["geometry"] + minutes["texture"], 3)
    if not all(math.isfinite(v) and v > 0 for v in minutes.values()):
        raise RuntimeError(f"non-positive or non-finite estimate {minutes}")
    base = subjects.get("1", {}).get("steps_per_s")
    for k, row in subjects.items():
        if "steps_per_s" in row and base:
            row["speedup_vs_1"] = round(row["steps_per_s"] / base, 2)
            its = counts[f"{k_phase}_iterations"]
            row[f"{k_phase}_minutes_for_k_subjects"] = round(its * int(k) / row["steps_per_s"] / 60, 2)
            row[f"{k_phase}_minutes_per_subject"] = round(its / row["steps_per_s"] / 60, 2)
    return {
        "note": NOTE, "size": size, "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "torch": torch.__version__, "recipe": RECIPE, "models": described, "stages": stages,
        "setup_s": {"models": round(models_s, 1), "init_scene": round(init_s, 1)},
        "extrapolation": {
            "formula": {**{name: f"{name}_iterations * {name}.s_per_iteration / 60" for name in PHASES},
                        "texture": "texture_diffuse + texture_full + texture_photoreal",
                        "total": "geometry + texture (preprocess, export, turntable and evaluate not timed)"},
            "counts": counts},
        "estimated_minutes_this_device": minutes,
        "paper_v100": dict(PAPER),
        "k_subjects": {"phase": k_phase, "steps_per_subject": s["k_steps"],
                       "what": "K threads, each the phase's optimise loop on its own scene, sharing the render and "
                               "guidance services (dynamic batching): steps/s in total",
                       **subjects},
        "not_timed": {"preprocess": "the face service (detection, ArcFace identity): not in this kit",
                      "export": "one GLB per expression (marching tets, xatlas, baking the material network)",
                      "turntable": "24 renders", "evaluate": "renders and the face service's recogniser"},
        "wall_s": round(time.perf_counter() - started, 1)}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(bench_id_to_3d(size=sys.argv[1] if len(sys.argv) > 1 else "full"), indent=1))
