"""optimise: the subject's loop. Each step renders the views its due terms need, turns every term into
dLoss/dImage (orchestrator/stages/terms.py: reference-view losses here, SDS from the guidance service,
identity loss from the face service, regression onto stored targets) and sends them to the render
service's ApplyGradients with the regularisers. Views come from the stage's camera sampler
(orchestrator/stages/cameras.py). The step count and the scene are checkpointed every `checkpoint_every`
steps; a resumed job continues from there with the same per-step random choices (seeded by (seed, step))."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orchestrator.stages import terms as T
from orchestrator.stages.cameras import step_rng, views_for_step
from orchestrator.stages.context import StageContext
from orchestrator.stages.environments import environment_for_step
from orchestrator.stages.params import REFERENCE_TERMS, OptimiseParams
from orchestrator.stages.scene import ensure_scene, scene_expressions, use_optimizer
from orchestrator.stages.schedules import schedule_at
from services.common.errors import FailedPrecondition
from services.render.types import RegularizerTerm


def run(ctx: StageContext, params: OptimiseParams) -> None:
    render, total = ctx.clients.render, params.iterations
    steps_done = ctx.state.setdefault("steps", {})
    start = int(steps_done.get(ctx.stage, 0))
    if start:   # a resumed job: say from where (kept in the checkpointed state, for reports and tests)
        ctx.state.setdefault("resumed_from", []).append({"stage": ctx.stage, "step": start})
        scene_id = ensure_scene(ctx)
    else:
        scene_id = use_optimizer(ctx, params.optimizer) if params.optimizer is not None else ensure_scene(ctx)
    subject = T.load_subject(ctx, params.terms, params.reference_resolution)
    expressions = scene_expressions(ctx)
    environments = _environment_folder(ctx, params)
    for step in range(start, total):
        ctx.check_cancelled()
        due = T.due_terms(params.terms, step)
        metrics: dict[str, float] = {}
        grads = []
        # its own stream, so adding expressions or lighting leaves a recipe's camera draws as they were
        draw = np.random.default_rng([ctx.seed, step, 11])
        look = T.Look()
        if expressions:
            look.expression = int(draw.integers(len(expressions)))
            look.expression_text = expressions[look.expression]
            metrics["expression"] = look.expression
        reference = [(t, w) for _, t, w in due if t.kind in REFERENCE_TERMS]
        if reference:
            grads += T.reference_terms(ctx, scene_id, subject, reference, metrics, look)
        on_views = [(i, t, w) for i, t, w in due if t.kind in ("sds", "identity")]
        if on_views:
            views = views_for_step(params.cameras, step, params.views_per_step, step_rng(ctx.seed, step), total)
            if params.shading is not None:
                look.shading = params.shading.kind
                if params.shading.kind != "diffuse":
                    look.environment = environment_for_step(params.shading, environments, draw)
            grads += T.view_terms(ctx, scene_id, subject, on_views, views, step, total, metrics, look)
        regress = [(t, w) for _, t, w in due if t.kind == "regress"]
        if regress:
            grads += T.regress_terms(ctx, scene_id, subject, regress, step, metrics, look)
        regs = [RegularizerTerm(g.name, schedule_at(g.weight, step), g.params) for g in params.regularizers]
        regs = [g for g in regs if g.weight > 0]
        if grads or regs:
            render.apply_gradients(scene_id, grads, regs)
        if (step + 1) % ctx.checkpoint_every == 0 or step + 1 == total:
            steps_done[ctx.stage] = step + 1
            ctx.checkpoint(render.get_state(scene_id))
        ctx.progress(step + 1, total, **metrics)


def _environment_folder(ctx: StageContext, params: OptimiseParams):
    """The folder of .hdr maps the shading names (under the job's models_dir when relative), or None for
    procedural lighting; FailedPrecondition before the loop when it is not there."""
    spec = params.shading
    if spec is None or not spec.reads_files:
        return None
    folder = Path(ctx.model_path(spec.environments))
    if not folder.is_dir():
        raise FailedPrecondition(f"{ctx.stage}: shading.environments {spec.environments!r} is not a folder on the "
                                 f"machine that runs the job (looked at {folder})", reason="NO_ENVIRONMENT_MAPS")
    return folder
