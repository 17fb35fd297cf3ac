"""The Portrait3D-ID recipe (orchestrator/recipes/builtin/portrait3d_id.yaml) timed phase by phase with RANDOM
WEIGHTS: a few steps of each phase on the stages' own in-process code paths, seconds per step extrapolated to the
recipe's counts (read from load_recipe("portrait3d_id").params), peak GPU memory per phase, next to the paper's
"about 1 h per head on one V100". Figures of the architectures' cost, not a result: no pretrained model is used
and what the stages make is meaningless.

Phases (each the recipe's stage params with fewer steps, on in-memory artifacts):
  geometry   orchestrator/stages/geometry_targets.run: two Generate calls (the normal and the depth backbone, each
             SD1.5 + a Canny ControlNet + IP-Adapter FaceID) at the reference size, num_steps cut to a few;
             seconds per DDIM step x the recipe's num_steps x 2;
  invert     services.inversion.invert with the recipe's settings (W+, L2 + LPIPS at 256, then PTI) on a
             PanoHead-architecture tri-grid generator (tests/bench/inversion.PANOHEAD), via
             tests/bench/inversion.time_inversion;
  fit        orchestrator/stages/optimise.run with fit_gan_normals' params on a render-service DMTet (the
             recipe's grid_resolution, extent and colour field, to_dmtet's learning rates) regressing
             normal_camera targets that render_targets made at gan_normals' cameras (256 px);
  sculpt     optimise.run with sculpt's params: the reference mask / normal / depth terms (the geometry phase's
             maps) and ISD (Distill, variant isd, SD1.5 + FaceID at identity scale 1 + the landmark ControlNet fed
             478 landmarks, CFG 100, at 512) on 256 px renders, with the normal-consistency and Laplacian
             regularisers;
  texture    orchestrator/stages/texture_inpaint.run with texture's params on 2 of its 15 views, num_steps cut
             to 2: per view = render + Inpaint (SD1.5 + normal ControlNet + FaceID at 512) + back-projection +
             checkpoint, the Inpaint's seconds per step scaled to the recipe's num_steps;
  refine     orchestrator/stages/refine.run with refine's params, a few rounds: per round = 1 target render,
             Denoise (strength x num_steps DDIM steps, normal ControlNet + FaceID) at 512, one regression step
             (L2 + LPIPS on a VGG16 with random weights + the reference view's L2).
Not timed: preprocess (the face service), caption (BLIP-2), align_landmarks, the conversions (marching cubes,
xatlas), export, turntable and evaluate. The DMTet starts from a sphere (not PanoHead's marching-cubes surface)
and the textured mesh is an icosphere with spherical UVs at to_textured_mesh's texture size (not the sculpted
surface unwrapped by xatlas): the per-step cost is of the same networks and rasterisers.

size "full": on CUDA, one SD1.5 UNet + VAE + CLIP ViT-L pipeline with random weights in fp16 (as
tests/bench/guidance.random_sd15_backbone) carrying a full-size random IP-Adapter FaceID (512-d -> 4 tokens x
768, LoRA rank 128) and three full-size random ControlNets (Canny, landmarks, normal): the four backbone names
the recipe calls (humannorm_normal, humannorm_depth, sd15, realistic_vision_40) share it, so resident memory
counts one copy of SD1.5 where a deployment holds four. size "tiny": the tiny SD (services/guidance/
tiny_models.py), tiny-trigrid, DMTet grid 32 and small resolutions: the CPU smoke test of this benchmark.
"""

from __future__ import annotations

import dataclasses
import io
import math
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from orchestrator.recipes import load_recipe
from orchestrator.stages import geometry_targets, optimise, refine, render_targets, texture_inpaint
from orchestrator.stages.context import camera_to_json
from orchestrator.stages.invert import _settings as invert_settings
from orchestrator.stages.params import ordered_view_count
from orchestrator.stages.scene import create_job_scene
from services.common.images import encode_png
from services.core.cameras import orbit_camera
from services.guidance.config import BatchingConfig, GuidanceConfig, load_config
from services.guidance.service import GuidanceService, InProcessGuidanceClient
from services.guidance.tiny_models import faceid_state
from services.inversion.generators.triplane_generator import TriplaneGenerator
from services.inversion.tiny import tiny_generator
from services.render.service import InProcessRenderClient, RenderService
from tests.bench.inversion import PANOHEAD, _lpips, time_inversion
from tests.helpers import write_random_lpips
from tests.bench.portrait3d_text import _context, _Memory, _step_seconds, _Timed

RECIPE = "portrait3d_id"
NOTE = ("RANDOM WEIGHTS: the cost of the architectures on this device, not a result (no pretrained generator, "
        "diffusion model, ControlNet, adapter or VGG; the images and shapes made are meaningless)")
PAPER = {"total": 60, "device": "one V100", "source": "Portrait3D-ID: about 1 h per head"}
PHASES = ("geometry", "invert", "fit", "sculpt", "texture", "refine")
BACKBONES = ("humannorm_normal", "humannorm_depth", "sd15", "realistic_vision_40")

# steps timed per phase and (tiny) the resolutions; 0 = the recipe's own
SIZES = {
    "full": dict(geometry_steps=2, invert_steps=5, pti_steps=5, fit_steps=6, sculpt_steps=6, texture_views=2,
                 texture_steps=2, refine_rounds=4, fit_targets=4, grid=0, photo=512, render=0, distill=0,
                 texture_px=0, texture_size=0, refine_px=0, sphere_subdivisions=6,
                 lpips_widths=(64, 128, 256, 512, 512)),
    "tiny": dict(geometry_steps=2, invert_steps=2, pti_steps=2, fit_steps=3, sculpt_steps=3, texture_views=2,
                 texture_steps=2, refine_rounds=3, fit_targets=2, grid=32, photo=64, render=32, distill=64,
                 texture_px=64, texture_size=64, refine_px=64, sphere_subdivisions=2,
                 lpips_widths=(8, 16, 32, 32, 32)),
}


# ---------------------------------------------------------------------------------------------------- models

def _full_backbones(device: torch.device) -> dict:
    """The recipe's four backbone names over one random SD1.5 pipeline (fp16) with FaceID and three ControlNets."""
    from diffusers import ControlNetModel

    from services.guidance.backbones.diffusers_backbone import DiffusersBackbone
    from services.guidance.backbones.diffusers_config import DiffusersBackboneConfig
    from tests.bench.guidance import random_sd15_backbone

    base = random_sd15_backbone(device)
    pipe, dtype = base.pipe, base.dtype
    nets = {}   # from the UNet before the adapter goes in (its IP processors would be in the blocks' state dicts)
    for i, kind in enumerate(("canny", "landmarks", "normal")):
        torch.manual_seed(10 + i)
        nets[kind] = ControlNetModel.from_unet(pipe.unet).to(device=device, dtype=dtype).eval().requires_grad_(False)
    pipe.load_ip_adapter([faceid_state(pipe.unet, rank=128)], subfolder=[""], weight_name=[""], image_encoder_folder=None,
                         low_cpu_mem_usage=False)
    pipe.unet.to(device=device, dtype=dtype).requires_grad_(False)
    control = {k: {"name": k, "kind": k, "path": "(in memory)"} for k in nets}
    entries = {"humannorm_normal": dict(output_kind="normal", controlnets=[control["canny"]]),
               "humannorm_depth": dict(output_kind="depth", depth_convention="inverse_depth",
                                       controlnets=[control["canny"]]),
               "sd15": dict(controlnets=[control["landmarks"], control["normal"]]),
               "realistic_vision_40": dict(controlnets=[control["landmarks"], control["normal"]])}
    out = {}
    for name, extra in entries.items():
        cfg = DiffusersBackboneConfig(name=name, path="(in memory)", dtype="float16",
                                      identity_adapters=[{"name": "faceid", "path": "(in memory)"}], **extra)
        out[name] = DiffusersBackbone(cfg, pipe, {c["name"]: nets[c["name"]] for c in extra["controlnets"]},
                                      ["faceid"], 512, [], [], device, dtype, base._scheduler_config)
    return out


def _tiny_backbones(tmp: Path, device: torch.device) -> dict:
    """The recipe's four backbone names over the tiny SD (as tests/integration/test_portrait3d_id_job does)."""
    from services.guidance.backbones.registry import load_backbone
    from services.guidance.tiny_models import write_tiny_models

    config = load_config(write_tiny_models(tmp / "guidance"), device=device.type)
    sd = next(e for e in config.backbones if e["name"] == "sd15-tiny")
    base = {k: sd[k] for k in ("backend", "family", "path", "identity_adapters")}
    canny = {"name": "canny", "kind": "canny", "path": sd["controlnets"][1]["path"]}
    entries = {"humannorm_normal": {**base, "output_kind": "normal", "controlnets": [canny]},
               "humannorm_depth": {**base, "output_kind": "depth", "depth_convention": "inverse_depth",
                                   "controlnets": [canny]},
               "sd15": {**base, "controlnets": sd["controlnets"]},
               "realistic_vision_40": {**base, "controlnets": sd["controlnets"]}}
    return {name: load_backbone({**e, "name": name}, Path(config.base_dir), device) for name, e in entries.items()}


# ---------------------------------------------------------------------------------------------------- subject

def _subject_state(ctx, size_px: int) -> None:
    """What preprocess and align_landmarks leave for the later stages: the reference crop (a random photo, an
    elliptical head mask, the PanoHead frontal camera: radius 5.4, fov 13.37), a 512-d identity embedding, and the
    aligned 68 / 478 3D landmarks (points on the front of the head)."""
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (size_px, size_px, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:size_px, :size_px] / size_px - 0.5
    mask = ((xx / 0.3) ** 2 + (yy / 0.4) ** 2 < 1).astype(np.uint8) * 255
    ctx.artifact("preprocess/reference.png", encode_png(photo))
    ctx.artifact("preprocess/mask.png", encode_png(np.repeat(mask[..., None], 3, axis=-1)))
    camera = orbit_camera(0.0, 0.0, 5.4, fov_deg=13.37, width=size_px, height=size_px)
    embedding = rng.standard_normal(512).astype(np.float32)
    ctx.state["reference"] = {"image": "preprocess/reference.png", "mask": "preprocess/mask.png",
                              "camera": camera_to_json(camera), "embedding": (embedding / np.linalg.norm(embedding)).tolist()}

    def front(n):
        az, el = np.radians(rng.uniform(-50, 50, n)), np.radians(rng.uniform(-35, 25, n))
        return (0.9 * np.stack([np.cos(el) * np.sin(az), np.sin(el), np.cos(el) * np.cos(az)], 1)).astype(np.float32)

    buf = io.BytesIO()
    np.savez(buf, landmarks_3d_68=front(68), landmarks_3d_478=front(478))
    ctx.artifact("align/landmarks.npz", buf.getvalue())
    ctx.state["photo"] = {"note": "benchmark subject (load_photo_face is not called: landmarks are aligned)"}
    ctx.state["aligned_landmarks"] = "align/landmarks.npz"


def _sphere_mesh_init(subdivisions: int, texture_size: int) -> dict:
    """An icosphere (radius 0.85) with spherical UVs and a grey texture: a textured mesh without xatlas."""
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.85)
    v = np.asarray(sphere.vertices, np.float32)
    uv = np.stack([0.5 + np.arctan2(v[:, 0], v[:, 2]) / (2 * np.pi),
                   0.5 + np.arcsin(np.clip(v[:, 1] / 0.85, -1, 1)) / np.pi], 1).astype(np.float32)
    return {"vertices": v, "faces": np.asarray(sphere.faces, np.int32), "uvs": uv,
            "texture": np.full((3, texture_size, texture_size), 0.5, np.float32), "texture_size": texture_size}


def _recipe_params(s: dict):
    """(the recipe's params by stage, the counts the extrapolation uses, the params the phases run with)."""
    p = load_recipe(RECIPE).params
    geo, inv, gan, dmt, fit, sculpt, tex, ref = (p[k] for k in ("geometry", "invert", "gan_normals", "to_dmtet",
                                                                 "fit_gan_normals", "sculpt", "texture", "refine"))
    isd = next(t for t in sculpt.terms if t.kind == "sds")
    counts = {"geometry_generate_calls": 2, "geometry_num_steps": geo.num_steps, "invert_steps": inv.steps,
              "pti_steps": inv.pti_steps if inv.pti else 0, "fit_iterations": fit.iterations,
              "sculpt_iterations": sculpt.iterations, "texture_views": ordered_view_count(tex.cameras),
              "texture_num_steps": tex.num_steps, "refine_rounds": ref.rounds, "refine_iterations": ref.iterations,
              "refine_denoise_steps": round(ref.strength * ref.num_steps), "dmtet_grid_resolution": dmt.dmtet.grid_resolution,
              "sculpt_render_px": int(sculpt.cameras.resolution), "isd_px": int(isd.resolution),
              "texture_px": int(tex.cameras.resolution), "refine_px": int(ref.cameras.resolution)}
    run = SimpleNamespace()
    run.geometry = geo.model_copy(update={"num_steps": s["geometry_steps"]})
    run.invert = inv.model_copy(update={"steps": s["invert_steps"], "pti_steps": s["pti_steps"],
                                        "progress_every": s["invert_steps"]})
    run.dmtet = dmt.model_copy(update={"dmtet": dmt.dmtet.model_copy(update={"grid_resolution": s["grid"] or
                                                                             dmt.dmtet.grid_resolution})})
    run.gan = gan.model_copy(update={"target_views": s["fit_targets"], "cameras": gan.cameras.model_copy(
        update={"resolution": s["render"] or gan.cameras.resolution})})
    run.fit = fit.model_copy(update={"iterations": s["fit_steps"]})
    terms = [t.model_copy(update={"resolution": s["distill"] or t.resolution}) if t.kind == "sds" else t
             for t in sculpt.terms]
    run.sculpt = sculpt.model_copy(update={
        "iterations": s["sculpt_steps"], "terms": terms, "reference_resolution": s["render"] or sculpt.reference_resolution,
        "cameras": sculpt.cameras.model_copy(update={"resolution": s["render"] or sculpt.cameras.resolution})})
    views = tex.cameras.views[:s["texture_views"]]
    run.texture = tex.model_copy(update={"num_steps": s["texture_steps"], "cameras": tex.cameras.model_copy(
        update={"views": views, "resolution": s["texture_px"] or tex.cameras.resolution})})
    run.refine = ref.model_copy(update={"rounds": s["refine_rounds"], "reference_resolution": s["refine_px"] or
                                        ref.reference_resolution, "cameras": ref.cameras.model_copy(
        update={"resolution": s["refine_px"] or ref.cameras.resolution})})
    run.texture_size = s["texture_size"] or p["to_textured_mesh"].texture_size
    return counts, run


# ---------------------------------------------------------------------------------------------------- phases

def _geometry(ctx, guidance_timed, params, warm: bool) -> dict:
    if warm:                                   # CUDA: kernels, cuDNN plans and the text cache first
        geometry_targets.run(ctx, params)
        guidance_timed.calls.clear()
    geometry_targets.run(ctx, params)
    calls = guidance_timed.calls["generate"]
    per_call = statistics.mean(s for s, _ in calls)
    return {"generate_calls_timed": len(calls), "num_steps_timed": params.num_steps,
            "s_per_generate_timed": round(per_call, 4), "s_per_step": round(per_call / params.num_steps, 4)}


def _optimise_phase(ctx, marks, render_timed, guidance_timed, params) -> dict:
    start = len(marks)
    optimise.run(ctx, params)
    steps = _step_seconds(marks[start:])
    row = {"iterations_timed": len(steps), "s_per_iteration": round(statistics.mean(steps), 4),
           "s_per_iteration_median": round(statistics.median(steps), 4),
           "breakdown_s": {"render": round(render_timed.mean_s("render_grad"), 4),
                           "apply_gradients": round(render_timed.mean_s("apply_gradients"), 4)}}
    if "distill" in guidance_timed.calls:
        row["breakdown_s"]["distill"] = round(guidance_timed.mean_s("distill"), 4)
    return row


def bench_portrait3d_id(device: str | None = None, size: str = "full") -> dict:
    """The JSON figures (module docstring). device: "cuda" / "cpu" (default: cuda when present)."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    started = time.perf_counter()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    s = SIZES[size]
    cuda = dev.type == "cuda"
    counts, run = _recipe_params(s)
    mem = _Memory(dev)
    tmp_dir = tempfile.TemporaryDirectory()
    tmp = Path(tmp_dir.name)
    stages: dict = {}
    guidance = None
    try:
        if size == "full":
            backbones = _full_backbones(dev)
            described = {"guidance": "SD1.5 UNet + VAE + CLIP ViT-L architecture, random weights, fp16, with a "
                                     "random full-size IP-Adapter FaceID and Canny / landmark / normal ControlNets; "
                                     "one pipeline shared by " + ", ".join(BACKBONES),
                         "generator": "PanoHead architecture (tri-grid 256^2 x 32 ch x depth 3, SR 64 -> 512), "
                                      "random weights"}
            gen = TriplaneGenerator(PANOHEAD)
        else:
            backbones = _tiny_backbones(tmp, dev)
            described = {"guidance": "tiny SD1.5 layout with tiny ControlNets and FaceID "
                                     "(services/guidance/tiny_models.py), random weights, 64 px; one per name of "
                                     + ", ".join(BACKBONES),
                         "generator": "tiny-trigrid (services/inversion/tiny.py), random weights"}
            gen = tiny_generator("tiny-trigrid")
        described["generator_parameters"] = sum(p.numel() for p in gen.parameters())
        guidance = GuidanceService(GuidanceConfig(device=dev.type, batching=BatchingConfig(max_batch_images=16,
                                                                                           max_queue_delay_ms=2)),
                                   backbones=backbones)
        write_random_lpips(tmp / "models", s["lpips_widths"])
        render = InProcessRenderClient(RenderService(device=str(dev)))
        guidance_timed = _Timed(InProcessGuidanceClient(guidance), ("generate", "distill", "inpaint", "denoise"))
        render_timed = _Timed(render, ("render", "apply_gradients", "back_project"))
        clients = SimpleNamespace(render=render_timed, guidance=guidance_timed, face=None, inversion=None)

        # geometry: the two Generate calls of geometry_targets (their maps are the sculpt phase's targets)
        ctx, marks = _context(clients, seed=1, stage="geometry")
        ctx.models_dir = str(tmp / "models")
        _subject_state(ctx, s["photo"])
        mem.start()
        stages["geometry"] = {**_geometry(ctx, guidance_timed, run.geometry, warm=cuda), **mem.figures()}

        # invert: W+ then PTI on the PanoHead-sized generator (the recipe's settings, fewer steps)
        lpips = _lpips(s["lpips_widths"], str(dev))
        settings = invert_settings(run.invert, 0)
        if cuda:
            time_inversion(gen, steps=1, pti_steps=1, lpips=lpips, device=dev.type,
                           settings=dataclasses.replace(settings, steps=1, pti_steps=1, progress_every=1))
        mem.start()
        row = time_inversion(gen, steps=run.invert.steps, pti_steps=run.invert.pti_steps, lpips=lpips,
                             device=dev.type, settings=settings)
        stages["invert"] = {"steps_timed": row["steps"], "pti_steps_timed": row["pti_steps"],
                            "s_per_step": row["invert_s_per_step"],
                            "s_per_pti_step": round(1 / row["pti_steps_per_s"], 4) if row["pti_steps_per_s"] else None,
                            "lpips": row["lpips"], **mem.figures()}
        del lpips, gen
        if cuda:
            torch.cuda.empty_cache()

        # fit: a DMTet at the recipe's grid (sphere start), render_targets' normal maps, the regression loop
        ctx.stage = "to_dmtet"
        dm = run.dmtet.dmtet
        create_job_scene(ctx, "dmtet", {"grid_resolution": dm.grid_resolution, "extent": dm.extent,
                                        "sphere_radius": 0.8}, optimizer=run.dmtet.optimizer_params(),
                         options={"color_field": "true"} if dm.color_field else {}, seed=3)
        ctx.stage = "gan_normals"
        render_targets.run(ctx, run.gan)
        mem.start()
        ctx.stage = "fit_gan_normals"
        render_timed.calls.clear()
        stages["fit"] = {**_optimise_phase(ctx, marks, render_timed, guidance_timed, run.fit), **mem.figures()}

        # sculpt: reference terms + ISD on the same DMTet
        mem.start()
        ctx.stage = "sculpt"
        render_timed.calls.clear()
        guidance_timed.calls.clear()
        stages["sculpt"] = {**_optimise_phase(ctx, marks, render_timed, guidance_timed, run.sculpt), **mem.figures()}
        render.close_scene(ctx.scratch.pop("scene_id"))

        # texture: texture_inpaint on a textured mesh, a few of its views
        ctx.stage = "to_textured_mesh"
        mesh = _sphere_mesh_init(s["sphere_subdivisions"], run.texture_size)
        if cuda:   # warm-up on a scene of its own: one view (back-projection and the Inpaint path's first call)
            create_job_scene(ctx, "mesh", mesh, seed=4)
            ctx.stage = "texture_warmup"
            texture_inpaint.run(ctx, run.texture.model_copy(update={"cameras": run.texture.cameras.model_copy(
                update={"views": run.texture.cameras.views[:1]})}))
            render.close_scene(ctx.scratch.pop("scene_id"))
            ctx.stage = "to_textured_mesh"
        create_job_scene(ctx, "mesh", mesh, seed=4)
        render_timed.calls.clear()
        guidance_timed.calls.clear()
        mem.start()
        ctx.stage = "texture"
        start = len(marks)
        texture_inpaint.run(ctx, run.texture)
        view_marks = marks[start:]
        inpaint = guidance_timed.calls.get("inpaint", [])
        if not inpaint:
            raise RuntimeError("texture: no view had unseen pixels to inpaint")
        inpaint_s = statistics.mean(x for x, _ in inpaint)
        views_s = [b - a for a, b in zip(view_marks[:-1], view_marks[1:])] or [view_marks[0] - marks[start - 1]]
        stages["texture"] = {"views_timed": len(run.texture.cameras.views), "num_steps_timed": run.texture.num_steps,
                             "inpaint_calls": len(inpaint), "s_per_inpaint_timed": round(inpaint_s, 4),
                             "s_per_inpaint_step": round(inpaint_s / run.texture.num_steps, 4),
                             "s_per_view_other": round(max(0.0, statistics.mean(views_s) - inpaint_s), 4),
                             "s_per_render": round(render_timed.mean_s("render"), 4),
                             "s_per_back_project": round(render_timed.mean_s("back_project"), 4), **mem.figures()}

        # refine: rounds of (target render, Denoise, one regression step with LPIPS and the reference L2)
        render_timed.calls.clear()
        guidance_timed.calls.clear()
        mem.start()
        ctx.stage = "refine"
        start = len(marks)
        refine.run(ctx, run.refine)
        rounds = [b - a for a, b in zip(marks[start:-1], marks[start + 1:])]
        rounds = rounds[1:] if len(rounds) > 1 else rounds
        denoise = guidance_timed.calls.get("denoise", [])
        stages["refine"] = {"rounds_timed": len(rounds), "s_per_round": round(statistics.mean(rounds), 4),
                            "s_per_round_median": round(statistics.median(rounds), 4),
                            "s_per_denoise": round(guidance_timed.mean_s("denoise"), 4),
                            "denoise_calls": len(denoise), "denoise_steps": counts["refine_denoise_steps"],
                            "s_per_render": round(render_timed.mean_s("render"), 4),
                            "s_per_render_grad": round(render_timed.mean_s("render_grad"), 4),
                            "s_per_apply_gradients": round(render_timed.mean_s("apply_gradients"), 4),
                            **mem.figures()}
        render.close_scene(ctx.scratch.pop("scene_id"))
    finally:
        if guidance is not None:
            guidance.close()
        tmp_dir.cleanup()

    c = counts
    minutes = {
        "geometry": c["geometry_generate_calls"] * c["geometry_num_steps"] * stages["geometry"]["s_per_step"] / 60,
        "invert": (c["invert_steps"] * stages["invert"]["s_per_step"]
                   + c["pti_steps"] * (stages["invert"]["s_per_pti_step"] or 0.0)) / 60,
        "fit": c["fit_iterations"] * stages["fit"]["s_per_iteration"] / 60,
        "sculpt": c["sculpt_iterations"] * stages["sculpt"]["s_per_iteration"] / 60,
        "texture": c["texture_views"] * (c["texture_num_steps"] * stages["texture"]["s_per_inpaint_step"]
                                         + stages["texture"]["s_per_view_other"]) / 60,
        "refine": c["refine_rounds"] * stages["refine"]["s_per_round"] / 60}
    minutes["total"] = sum(minutes.values())
    if not all(math.isfinite(v) and v > 0 for v in minutes.values()):
        raise RuntimeError(f"non-positive or non-finite estimate {minutes}")
    return {
        "note": NOTE, "size": size, "device": torch.cuda.get_device_name(dev) if cuda else "cpu",
        "torch": torch.__version__, "models": described, "recipe": RECIPE, "stages": stages,
        "extrapolation": {
            "formula": {"geometry": "geometry_generate_calls * geometry_num_steps * geometry.s_per_step / 60",
                        "invert": "(invert_steps * invert.s_per_step + pti_steps * invert.s_per_pti_step) / 60",
                        "fit": "fit_iterations * fit.s_per_iteration / 60",
                        "sculpt": "sculpt_iterations * sculpt.s_per_iteration / 60",
                        "texture": "texture_views * (texture_num_steps * texture.s_per_inpaint_step + "
                                   "texture.s_per_view_other) / 60",
                        "refine": "refine_rounds * refine.s_per_round / 60",
                        "total": "the phases' sum (preprocess, caption, align, conversions, export, turntable and "
                                 "evaluate not timed)"},
            "counts": counts},
        "estimated_minutes_this_device": {k: round(v, 3) for k, v in minutes.items()},
        "paper_v100_minutes": dict(PAPER),
        "not_timed": {"preprocess": "the face service (detection, parsing, 3DDFA-V2, ArcFace): not in this kit",
                      "caption": "BLIP-2 captioning: one call per job, not in this kit",
                      "align": "align_landmarks: a few renders and a least-squares fit, seconds",
                      "conversions": "marching cubes -> DMTet SDF and DMTet -> xatlas-unwrapped mesh: the DMTet "
                                     "starts from a sphere and the textured mesh is an icosphere with spherical UVs",
                      "k_subjects": "several subjects per GPU not measured for this recipe (see portrait3d_text)"},
        "wall_s": round(time.perf_counter() - started, 1)}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(bench_portrait3d_id(size=sys.argv[1] if len(sys.argv) > 1 else "full"), indent=1))
