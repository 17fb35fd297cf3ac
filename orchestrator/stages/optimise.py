"""optimise: the subject's loop. Each step renders the views its due terms need, turns every term into
dLoss/dImage (reference-view L2 computed here, SDS from the guidance service, identity loss from the face
service) and sends them to the render service's ApplyGradients with the regularisers. The step count
and the scene are checkpointed every `checkpoint_every` steps; a resumed job continues from there with
the same per-step random choices (they are seeded by (seed, step))."""

from __future__ import annotations

import numpy as np
from PIL import Image

from orchestrator.stages.schedules import schedule_at
from orchestrator.stages.context import StageContext, camera_from_json
from orchestrator.stages.params import OptimiseParams, Term
from orchestrator.stages.scene import ensure_scene
from services.core.cameras import camera_for_box, sample_orbit_cameras
from services.common.images import decode_png
from services.guidance.types import Conditions, DistillRequest, TimestepSchedule
from services.render.types import GradientTerm, RegularizerTerm


def _reference(ctx: StageContext, resolution: int):
    ref = ctx.state["reference"]
    photo = decode_png(ctx.read_artifact(ref["image"]))[..., :3]
    mask = decode_png(ctx.read_artifact(ref["mask"]))[..., 0]
    photo = np.asarray(Image.fromarray(photo).resize((resolution, resolution), Image.BILINEAR), np.float32) / 255
    mask = np.asarray(Image.fromarray(mask).resize((resolution, resolution), Image.BILINEAR), np.float32) / 255
    full = camera_from_json(ref["camera"])
    camera = camera_for_box(full, (0, 0, full.width, full.height), resolution)
    return camera, photo.transpose(2, 0, 1)[None], mask[None, None]


def _timesteps(term: Term, fraction: float) -> TimestepSchedule:
    lo, hi = term.t_range
    end = term.t_range_end or (0.0, 0.0)
    return TimestepSchedule(t_min=lo, t_max=hi, t_min_end=end[0], t_max_end=end[1], training_fraction=fraction)


def run(ctx: StageContext, params: OptimiseParams) -> None:
    scene_id = ensure_scene(ctx)
    render, total = ctx.clients.render, params.iterations
    camera, photo, mask = _reference(ctx, params.resolution) if "reference" in ctx.state else (None, None, None)
    steps_done = ctx.state.setdefault("steps", {})
    start = int(steps_done.get(ctx.stage, 0))
    if start:   # a resumed job: say from where (kept in the checkpointed state, for reports and tests)
        ctx.state.setdefault("resumed_from", []).append({"stage": ctx.stage, "step": start})
    c = params.cameras
    for step in range(start, total):
        ctx.check_cancelled()
        due = [(t, schedule_at(t.weight, step)) for t in params.terms if step % t.every == 0]
        due = [(t, w) for t, w in due if w > 0]
        terms, metrics = [], {}
        reference = [(t, w) for t, w in due if t.kind in ("reference_rgb", "reference_mask")]
        if reference:
            if camera is None:
                raise ValueError("reference terms need a preprocess stage before optimise")
            r = render.render(scene_id, [camera], ["rgb", "alpha"], requires_grad=True, background=params.background)
            for t, w in reference:
                out, target = (r.outputs["rgb"], photo) if t.kind == "reference_rgb" else (r.outputs["alpha"], mask)
                diff = out - target
                metrics[t.kind] = float(np.mean(diff ** 2))
                terms.append(GradientTerm(r.step_handle, "rgb" if t.kind == "reference_rgb" else "alpha",
                                          (2.0 * w / diff.size) * diff, name=t.kind))
        rng = np.random.default_rng([ctx.seed, step])
        for i, (t, w) in enumerate((t, w) for t, w in due if t.kind in ("sds", "identity")):
            cams = sample_orbit_cameras(params.views_per_step, rng, azimuth=c.azimuth, elevation=c.elevation,
                                        radius=c.radius, fov=(c.fov_deg, c.fov_deg), width=params.resolution,
                                        height=params.resolution)
            r = render.render(scene_id, cams, ["rgb"], requires_grad=True, background=params.background)
            if t.kind == "sds":
                # renders can overshoot [0, 1] slightly (unclamped colours): the prior sees them clipped and
                # its gradient passes straight through
                d = ctx.clients.guidance.distill(DistillRequest(
                    images=np.clip(r.outputs["rgb"], 0, 1), cameras=cams, guidance_scale=t.guidance_scale,
                    conditions=Conditions(backbone=t.backbone, prompt=t.prompt or ctx.prompt,
                                          negative_prompt=t.negative_prompt,
                                          view_dependent_prompt=t.view_dependent_prompt),
                    timesteps=_timesteps(t, step / max(1, total - 1)), weighting=t.weighting,
                    seed=int(rng.integers(1, 2 ** 62)), resolution=t.resolution))
                metrics["sds_loss"] = float(np.mean([x.loss for x in d.diagnostics]))
                terms.append(GradientTerm(r.step_handle, "rgb", d.grad.astype(np.float32), weight=w, name="sds"))
            else:
                reference_embedding = np.asarray(ctx.state["reference"]["embedding"], np.float32)
                loss = ctx.clients.face.identity_loss(np.clip(r.outputs["rgb"], 0, 1), reference_embedding)
                metrics["identity_loss"] = float(np.mean(loss.loss))
                terms.append(GradientTerm(r.step_handle, "rgb", loss.grad, weight=w, name="identity"))
        regs = [RegularizerTerm(g.name, schedule_at(g.weight, step), g.params) for g in params.regularizers]
        regs = [g for g in regs if g.weight > 0]
        if terms or regs:
            render.apply_gradients(scene_id, terms, regs)
        if (step + 1) % ctx.checkpoint_every == 0 or step + 1 == total:
            steps_done[ctx.stage] = step + 1
            ctx.checkpoint(render.get_state(scene_id))
        ctx.progress(step + 1, total, **metrics)
