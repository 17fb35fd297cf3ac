"""report.json, the one report writer of every recipe: what ran (recipe and its hash), the sections the
stages added (ctx.add_report_section: input, face, fit, texture, metrics, ...), seconds per stage (summed
over resumes), warnings, the models that served the job and the artifacts it wrote.

Models: those the stages recorded (the face models that analysed the photo, the head template, the render
backend), then, for each service a stage of the recipe calls (StageSpec.services), what the service
describes; of the guidance service only the backbones the recipe's stages call (requirements.guidance_backbones; the default for
a stage that names none): a deployment that also configures the analytic prior does not serve every job with it.

Honesty: every model record with a provenance (services/core/models.py: a test prior, random weights) adds a
warning, and "result_is_real" is false then (and when a service could not say what it runs): such output
shows that the pipeline works, it is never a result."""

from __future__ import annotations

from dataclasses import asdict
from typing import Iterator

from orchestrator.recipes.requirements import guidance_backbones
from orchestrator.stages.context import StageContext
from orchestrator.stages.registry import STAGES
from services.common.errors import HeadForgeError
from services.core.models import RANDOM_WEIGHTS, TEST_PRIOR

REPORT = "report.json"
NOT_A_RESULT = "the output shows the pipeline works, it is not a result"
_WHAT = {TEST_PRIOR: ("is a test prior", "are test priors"),     # provenance -> (one record, several)
         RANDOM_WEIGHTS: ("has random weights", "have random weights")}
_LABELS = {"guidance": "guidance backbone", "face": "face models", "captioner": "captioner"}   # report["models"] key -> words in a warning


def _service_models(services: set[str], clients, backbones: set[str]) -> dict:
    models: dict = {}
    try:
        if "face" in services and clients.face is not None:
            models["face"] = [asdict(m) for m in clients.face.describe().models]
        if "guidance" in services and backbones and clients.guidance is not None:
            models["guidance"] = {info.name: [asdict(m) for m in info.models]
                                  for info, is_default in clients.guidance.describe().backbones
                                  if info.name in backbones or (is_default and "" in backbones)}
    except HeadForgeError as e:   # the report is still written; it says what could not be asked
        models["unavailable"] = e.message
    return models


def _records(node, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    """Every model record (a dict with a "role") in report["models"], however nested, with its key path."""
    if isinstance(node, dict):
        if "role" in node:
            yield path, node
            return
        for key, value in node.items():
            yield from _records(value, (*path, str(key)))
    elif isinstance(node, list):
        for value in node:
            yield from _records(value, path)


def provenance_warnings(models: dict) -> list[str]:
    """One warning per place in report["models"] (a guidance backbone, the face models, ...) and provenance,
    naming the records: "guidance backbone analytic (exemplars: builtin) is a test prior: ..."."""
    found: dict[tuple[tuple[str, ...], str], list[str]] = {}
    for path, record in _records(models):
        provenance = record.get("provenance") or ""
        if provenance:
            found.setdefault((path, provenance), []).append(f"{record['role']}: {record.get('name', '')}")
    warnings = []
    for (path, provenance), names in found.items():
        where = " ".join([_LABELS.get(path[0], path[0]), *path[1:]]) if path else "a model"
        one, many = _WHAT.get(provenance, (f"has provenance {provenance}", f"have provenance {provenance}"))
        warnings.append(f"{where} ({'; '.join(names)}) {one if len(names) == 1 else many}: {NOT_A_RESULT}")
    return warnings


def build_report(loaded, ctx: StageContext, clients) -> dict:
    """The report of a finished job (a JSON-ready dict); loaded: the job's LoadedRecipe."""
    sections = dict(ctx.state.get("report", {}))
    recorded = sections.pop("models", {})
    services = {s for spec in loaded.recipe.stages for s in STAGES.get(spec.kind).services}
    models = {**_service_models(services - set(recorded), clients, guidance_backbones(loaded)), **recorded}
    seconds = ctx.state.get("stage_seconds", {})
    total = round(sum(seconds.values()), 2)
    honesty = provenance_warnings(models)
    if "unavailable" in models:
        honesty.append(f"the models that served the job are not all known ({models['unavailable']}): whether the "
                       "output is a result cannot be told")
    return {"recipe": loaded.recipe.name, "recipe_sha256": loaded.sha256, **sections,
            "stage_seconds": seconds, "total_seconds": total, "timings_s": {**seconds, "total": total},
            "resumed_from": ctx.state.get("resumed_from", []),
            "warnings": [*ctx.state.get("warnings", []), *honesty], "result_is_real": not honesty,
            "models": models, "artifacts": [*ctx.state.get("artifacts", []), REPORT]}
