"""caption: the text prompt y from the reference picture (Portrait3D-ID section 4.1 and PSHead caption the portrait
with BLIP-2). The preprocessed reference (ctx.state["reference"]["image"], RGB on white) goes to the guidance
service's Caption; the stage keeps

  state["caption"] = {"prompt": template.format(caption=raw), "caption": raw, "captioner": name,
                      "random_weights": bool, "source": "captioner" | "job_prompt"}

writes caption/caption.json (the same, plus the captioner's model record) and a "caption" report section.
ctx.prompt is the job's prompt when the user gave one, else this prompt (StageContext.prompt). With no captioner
configured (Describe lists none) and fallback "job_prompt", the job's prompt is used and the report says so;
fallback "fail" (or no job prompt to fall back on) fails the stage. A caption from random weights (the tiny
models) is labelled as such: its model record carries provenance random_weights, so the report's honesty
warnings name it and result_is_real is false."""

from __future__ import annotations

import json
from dataclasses import asdict

from orchestrator.stages.context import StageContext
from orchestrator.stages.params import CaptionParams
from services.common.errors import FailedPrecondition
from services.core.models import RANDOM_WEIGHTS
from services.guidance.types import CaptionRequest

ARTIFACT = "caption/caption.json"
NO_CAPTIONER = "no captioner configured: the job's prompt"


def _fallback(ctx: StageContext, params: CaptionParams, why: str) -> dict:
    if params.fallback == "fail" or not ctx.job_prompt:
        raise FailedPrecondition(f"{ctx.stage}: {why}, and the job has no prompt to fall back on"
                                 if params.fallback == "job_prompt" else f"{ctx.stage}: {why} (fallback: fail)",
                                 reason="NO_CAPTIONER")
    ctx.warn(f"{ctx.stage}: {why}; the job's prompt is the text prompt")
    return {"prompt": ctx.job_prompt, "caption": "", "captioner": "", "random_weights": False,
            "source": "job_prompt", "note": NO_CAPTIONER}


def run(ctx: StageContext, params: CaptionParams) -> None:
    ref = ctx.state.get("reference")
    if ref is None:
        raise FailedPrecondition(f"{ctx.stage} needs the reference view: put a preprocess stage before it",
                                 reason="NO_PREPROCESS")
    guidance = ctx.clients.guidance
    if guidance is None:
        result = _fallback(ctx, params, "no guidance service")
        record = None
    elif not guidance.describe().captioners:
        result = _fallback(ctx, params, "no captioner configured in the guidance service")
        record = None
    else:
        answer = guidance.caption(CaptionRequest(image=ctx.read_artifact(ref["image"]), captioner=params.captioner,
                                                 prompt=params.prompt_prefix, max_new_tokens=params.max_new_tokens))
        record = asdict(answer.model)
        random = answer.model.provenance == RANDOM_WEIGHTS
        result = {"prompt": params.template.format(caption=answer.caption), "caption": answer.caption,
                  "captioner": answer.captioner, "random_weights": random, "source": "captioner"}
        if random:
            result["note"] = "a caption from random weights (a tiny test model): noise, not a description"
        ctx.add_report_section("models", {"captioner": {answer.captioner: [record]}})
    ctx.state["caption"] = result
    ctx.artifact(ARTIFACT, json.dumps({**result, "model": record}, indent=1).encode())
    ctx.add_report_section("caption", {**result, "job_prompt_given": bool(ctx.job_prompt),
                                       "used_prompt": ctx.prompt, "artifact": ARTIFACT})
    ctx.progress(1, 1, "caption")
