"""Runs one job's stages in order, resuming after the last completed stage (and, inside a stage, after its
last checkpoint), and reports what happens as events. The same function runs inside a Ray actor (the
cluster runtime), or directly in the CLI's process (`headforge generate`).

Events (plain dicts, sent back to whoever owns the job store):
  {"kind": "stage", "stage": name, "state": "running" | "succeeded" | "failed" | "cancelled"}
  {"kind": "resumed", "stage": name}                 a stage continues from a checkpoint
  {"kind": "progress", "progress": Progress}
  {"kind": "artifact", "record": ArtifactRecord}
  {"kind": "done", "state": "succeeded" | "failed" | "cancelled", "error_message": str, "error_reason": str}
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from dataclasses import asdict
from typing import Callable

from orchestrator.recipes import load_recipe
from orchestrator.stages import scene
from orchestrator.stages.context import JobCancelled, StageContext
from orchestrator.stages.registry import STAGES
from services.common.errors import HeadForgeError

log = logging.getLogger(__name__)

STATE_ARTIFACT = "checkpoints/state.json"

Emit = Callable[[dict], None]


def execute(job_id: str, recipe_yaml: str, images: list[bytes], prompt: str, clients, artifacts,
            emit: Emit, is_cancelled: Callable[[], bool]) -> str:
    """Run (or resume) a job. `artifacts` is an ArtifactStore; returns the final state."""
    loaded = load_recipe(text=recipe_yaml)

    def write(name: str, data: bytes, stage: str):
        record = artifacts.write(job_id, name, data, stage)
        emit({"kind": "artifact", "record": record})
        return record

    ctx = StageContext(job_id=job_id, seed=loaded.recipe.seed, images=images, prompt=prompt, clients=clients,
                       checkpoint_every=loaded.recipe.checkpoint_every, write_artifact=write,
                       read_artifact=lambda name: artifacts.read(job_id, name),
                       report=lambda p: emit({"kind": "progress", "progress": p}), is_cancelled=is_cancelled)
    if artifacts.exists(job_id, STATE_ARTIFACT):
        ctx.state = json.loads(artifacts.read(job_id, STATE_ARTIFACT))
    completed = ctx.state.setdefault("completed_stages", [])
    for spec in loaded.recipe.stages:
        if spec.name in completed:
            continue
        ctx.stage = spec.name
        if ctx.state.get("current_stage") == spec.name:
            emit({"kind": "resumed", "stage": spec.name})
        ctx.state["current_stage"] = spec.name
        emit({"kind": "stage", "stage": spec.name, "state": "running"})
        started = time.perf_counter()
        try:
            ctx.check_cancelled()
            STAGES.get(spec.kind, field="kind").run(ctx, loaded.params[spec.name])
        except JobCancelled:
            scene.close_scene(ctx)
            emit({"kind": "stage", "stage": spec.name, "state": "cancelled"})
            emit({"kind": "done", "state": "cancelled", "error_message": "cancelled by request",
                  "error_reason": "CANCELLED"})
            return "cancelled"
        except HeadForgeError as e:
            return _fail(ctx, spec.name, emit, f"{spec.name}: {e.message}", e.reason or type(e).__name__)
        except Exception as e:  # noqa: BLE001 - a stage bug fails the job with its traceback in the log
            log.error("job %s stage %s failed:\n%s", job_id, spec.name, traceback.format_exc())
            return _fail(ctx, spec.name, emit, f"{spec.name}: {type(e).__name__}: {e}", "STAGE_ERROR")
        completed.append(spec.name)
        seconds = ctx.state.setdefault("stage_seconds", {})
        seconds[spec.name] = round(seconds.get(spec.name, 0.0) + time.perf_counter() - started, 2)
        ctx.state["current_stage"] = ""
        ctx.checkpoint()
        emit({"kind": "stage", "stage": spec.name, "state": "succeeded"})
    scene.close_scene(ctx)
    if not artifacts.exists(job_id, "report.json"):   # a stage may write its own (fast_head does)
        write("report.json", json.dumps(_report(loaded, ctx, artifacts, clients), indent=1).encode(), "")
    emit({"kind": "done", "state": "succeeded", "error_message": "", "error_reason": ""})
    return "succeeded"


def _report(loaded, ctx: StageContext, artifacts, clients) -> dict:
    """report.json: recipe and its hash, seconds per stage (summed over resumes), the evaluation's metrics,
    warnings, and the models that served the job."""
    report = {"recipe": loaded.recipe.name, "recipe_sha256": loaded.sha256,
              "stage_seconds": ctx.state.get("stage_seconds", {}),
              "total_seconds": round(sum(ctx.state.get("stage_seconds", {}).values()), 2),
              "resumed_from": ctx.state.get("resumed_from", []), "warnings": ctx.state.get("warnings", [])}
    if artifacts.exists(ctx.job_id, "metrics.json"):
        report["metrics"] = json.loads(artifacts.read(ctx.job_id, "metrics.json"))
    models = {}
    try:
        models["face"] = [asdict(m) for m in clients.face.describe().models]
        models["guidance"] = {info.name: [asdict(m) for m in info.models]
                              for info, _ in clients.guidance.describe().backbones}
    except HeadForgeError as e:   # the report is still written; it says what could not be asked
        models["unavailable"] = e.message
    report["models"] = models
    return report


def _fail(ctx: StageContext, stage: str, emit: Emit, message: str, reason: str) -> str:
    scene.close_scene(ctx)
    emit({"kind": "stage", "stage": stage, "state": "failed"})
    emit({"kind": "done", "state": "failed", "error_message": message, "error_reason": reason})
    return "failed"
