"""Runs one job's stages in order, resuming after the last completed stage (and, inside a stage, after its
last checkpoint), and reports what happens as events. The same function runs inside a Ray actor (the
cluster runtime), or directly in the CLI's process (`headforge generate`).

A service that loses the job's state mid-stage (the render service restarted and its scenes are gone, or a
service stayed unreachable past the client's retry budget) does not fail the job: the stage starts again
from the job's last checkpoint (state and scene), at most SERVICE_LOSS_RETRIES times per stage, so at most
one checkpoint interval is redone.

Events (plain dicts, sent back to whoever owns the job store):
  {"kind": "stage", "stage": name, "state": "running" | "succeeded" | "failed" | "cancelled"}
  {"kind": "resumed", "stage": name}                 a stage continues from a checkpoint
  {"kind": "progress", "progress": Progress}
  {"kind": "artifact", "record": ArtifactRecord}
  {"kind": "done", "state": "succeeded" | "failed" | "cancelled", "error_message": str, "error_reason": str,
   "error_code": the gRPC status name of a failure (failed only)}
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from typing import Callable

from orchestrator.recipes import load_recipe, requirements
from orchestrator.runtime.report import REPORT, build_report
from orchestrator.stages import scene
from orchestrator.stages.context import JobCancelled, StageContext
from orchestrator.stages.registry import STAGES
from services.common.errors import HeadForgeError

log = logging.getLogger(__name__)

STATE_ARTIFACT = "checkpoints/state.json"
SERVICE_LOSS_RETRIES = 3
SERVICE_LOSS_BACKOFF_S = 2.0
# NOT_FOUND reasons that mean the render service no longer holds what the job made (it restarted)
_LOST_REASONS = frozenset({"SCENE_NOT_FOUND", "STEP_HANDLE_NOT_FOUND"})

Emit = Callable[[dict], None]


def execute(job_id: str, recipe_yaml: str, images: list[bytes], prompt: str, clients, artifacts,
            emit: Emit, is_cancelled: Callable[[], bool], image_names: list[str] | None = None,
            models_dir: str = "") -> str:
    """Run (or resume) a job. `artifacts` is an ArtifactStore; image_names: where the photos came from
    (for the report), when known; models_dir: the job's models_dir (relative model paths in the recipe
    resolve under it, StageContext.model_path). Returns the final state."""
    loaded = load_recipe(text=recipe_yaml)

    def write(name: str, data: bytes, stage: str):
        record = artifacts.write(job_id, name, data, stage)
        written = ctx.state.setdefault("artifacts", [])
        if not name.startswith("checkpoints/") and name not in written:
            written.append(name)
        emit({"kind": "artifact", "record": record})
        return record

    ctx = StageContext(job_id=job_id, seed=loaded.recipe.seed, images=images, job_prompt=prompt, clients=clients,
                       checkpoint_every=loaded.recipe.checkpoint_every, write_artifact=write,
                       read_artifact=lambda name: artifacts.read(job_id, name),
                       report=lambda p: emit({"kind": "progress", "progress": p}), is_cancelled=is_cancelled,
                       image_names=list(image_names or []), models_dir=models_dir)
    if artifacts.exists(job_id, STATE_ARTIFACT):
        ctx.state = json.loads(artifacts.read(job_id, STATE_ARTIFACT))
    if not ctx.state.get("completed_stages"):
        try:   # before any stage: a recipe the services cannot serve fails at once, naming what to configure
            requirements.check(loaded, clients, models_dir, prompt)
        except HeadForgeError as e:   # no stage ran: the job fails without a stage event
            emit({"kind": "done", "state": "failed", "error_message": e.message,
                  "error_reason": e.reason or type(e).__name__, "error_code": e.code.name})
            return "failed"
    for spec in loaded.recipe.stages:
        if spec.name in ctx.state.setdefault("completed_stages", []):
            continue
        ctx.stage = spec.name
        if ctx.state.get("current_stage") == spec.name:
            emit({"kind": "resumed", "stage": spec.name})
        ctx.state["current_stage"] = spec.name
        emit({"kind": "stage", "stage": spec.name, "state": "running"})
        started = time.perf_counter()
        try:
            ctx.check_cancelled()
            _run_stage(ctx, spec, loaded.params[spec.name], artifacts, emit)
            if spec.kind == "preprocess":   # what the photo's face lacks fails here, before any GPU stage
                requirements.check_photo(loaded, ctx.state)
        except JobCancelled:
            scene.close_scene(ctx)
            emit({"kind": "stage", "stage": spec.name, "state": "cancelled"})
            emit({"kind": "done", "state": "cancelled", "error_message": "cancelled by request",
                  "error_reason": "CANCELLED"})
            return "cancelled"
        except HeadForgeError as e:
            return _fail(ctx, spec.name, emit, f"{spec.name}: {e.message}", e.reason or type(e).__name__,
                         e.code.name)
        except Exception as e:  # noqa: BLE001 - a stage bug fails the job with its traceback in the log
            log.error("job %s stage %s failed:\n%s", job_id, spec.name, traceback.format_exc())
            return _fail(ctx, spec.name, emit, f"{spec.name}: {type(e).__name__}: {e}", "STAGE_ERROR", "INTERNAL")
        ctx.state["completed_stages"].append(spec.name)
        seconds = ctx.state.setdefault("stage_seconds", {})
        seconds[spec.name] = round(seconds.get(spec.name, 0.0) + time.perf_counter() - started, 2)
        ctx.state["current_stage"] = ""
        ctx.checkpoint()
        emit({"kind": "stage", "stage": spec.name, "state": "succeeded"})
    scene.close_scene(ctx)
    write(REPORT, json.dumps(build_report(loaded, ctx, clients), indent=1).encode(), "")
    emit({"kind": "done", "state": "succeeded", "error_message": "", "error_reason": ""})
    return "succeeded"


def _service_lost(e: HeadForgeError) -> bool:
    """Whether a stage's error means a service lost (or could not be reached for) the job's state."""
    return e.code.name == "UNAVAILABLE" or (e.code.name == "NOT_FOUND" and e.reason in _LOST_REASONS)


def _run_stage(ctx: StageContext, spec, params, artifacts, emit: Emit) -> None:
    """Run one stage; after a service loss (_service_lost) restart it from the last checkpoint."""
    for attempt in range(SERVICE_LOSS_RETRIES + 1):
        try:
            STAGES.get(spec.kind, field="kind").run(ctx, params)
            return
        except HeadForgeError as e:
            if attempt == SERVICE_LOSS_RETRIES or not _service_lost(e) or \
                    not artifacts.exists(ctx.job_id, STATE_ARTIFACT):
                raise
            log.warning("job %s stage %s: %s (%s); restarting the stage from the last checkpoint",
                        ctx.job_id, spec.name, e.message, e.reason or e.code.name)
            ctx.scratch.pop("scene_id", None)     # gone with the service; ensure_scene restores it
            ctx.state = json.loads(artifacts.read(ctx.job_id, STATE_ARTIFACT))
            ctx.state.setdefault("service_losses", []).append(
                {"stage": spec.name, "reason": e.reason or e.code.name})
            ctx.state["current_stage"] = spec.name
            emit({"kind": "resumed", "stage": spec.name})
            ctx.check_cancelled()
            time.sleep(SERVICE_LOSS_BACKOFF_S * (attempt + 1))


def _fail(ctx: StageContext, stage: str, emit: Emit, message: str, reason: str, code: str) -> str:
    scene.close_scene(ctx)
    emit({"kind": "stage", "stage": stage, "state": "failed"})
    emit({"kind": "done", "state": "failed", "error_message": message, "error_reason": reason,
          "error_code": code})
    return "failed"
