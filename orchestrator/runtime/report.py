"""report.json, the one report writer of every recipe: what ran (recipe and its hash), the sections the
stages added (ctx.add_report_section: input, face, fit, texture, metrics, ...), seconds per stage (summed
over resumes), warnings, the models that served the job and the artifacts it wrote.

Models: those the stages recorded (the face models that analysed the photo, the head template, the render
backend), then, for each service a stage of the recipe calls (StageSpec.services), what the service
describes."""

from __future__ import annotations

from dataclasses import asdict

from orchestrator.stages.context import StageContext
from orchestrator.stages.registry import STAGES
from services.common.errors import HeadForgeError

REPORT = "report.json"


def _service_models(services: set[str], clients) -> dict:
    models: dict = {}
    try:
        if "face" in services:
            models["face"] = [asdict(m) for m in clients.face.describe().models]
        if "guidance" in services:
            models["guidance"] = {info.name: [asdict(m) for m in info.models]
                                  for info, _ in clients.guidance.describe().backbones}
    except HeadForgeError as e:   # the report is still written; it says what could not be asked
        models["unavailable"] = e.message
    return models


def build_report(loaded, ctx: StageContext, clients) -> dict:
    """The report of a finished job (a JSON-ready dict); loaded: the job's LoadedRecipe."""
    sections = dict(ctx.state.get("report", {}))
    recorded = sections.pop("models", {})
    services = {s for spec in loaded.recipe.stages for s in STAGES.get(spec.kind).services}
    models = {**_service_models(services - set(recorded), clients), **recorded}
    seconds = ctx.state.get("stage_seconds", {})
    total = round(sum(seconds.values()), 2)
    return {"recipe": loaded.recipe.name, "recipe_sha256": loaded.sha256, **sections,
            "stage_seconds": seconds, "total_seconds": total, "timings_s": {**seconds, "total": total},
            "resumed_from": ctx.state.get("resumed_from", []), "warnings": ctx.state.get("warnings", []),
            "models": models, "artifacts": [*ctx.state.get("artifacts", []), REPORT]}
