"""generate: text -> a portrait for the photo recipes (Portrait3D-Text's first step). The guidance service's
Generate draws `num_images` candidates; the recipe's `choose` says which one the job continues with:
  first       the first candidate;
  face_score  the face service's detection score x cos(yaw) x cos(pitch) of each candidate's largest face
              (a confident, frontal face wins; candidates without a face are out; none left: the stage fails
              with NO_FACE_IN_CANDIDATES).
Every candidate and the scores are kept (generate/candidate_<k>.png, the report's generate section); the
chosen picture becomes the job's photo for the preprocess stage."""

from __future__ import annotations

import math

import numpy as np

from orchestrator.stages.context import StageContext
from orchestrator.stages.params import GenerateParams
from services.common.errors import FailedPrecondition
from services.common.images import encode_png
from services.face.types import AnalyzeOptions
from services.guidance.types import Conditions, GenerateRequest

CHOSEN = "generate/chosen.png"


def face_score(face_client, image: np.ndarray) -> float | None:
    """detection score x cos(yaw) x cos(pitch) of the largest face in image (H, W, 3) uint8; None: no face."""
    faces = face_client.analyze(image, AnalyzeOptions(skip_crop=True, skip_masks=True, skip_embedding=True)).faces
    if not faces:
        return None
    f = faces[0]
    frontal = math.cos(math.radians(min(abs(f.pose.yaw), 90.0))) * math.cos(math.radians(min(abs(f.pose.pitch), 90.0)))
    return float(f.score) * frontal


def run(ctx: StageContext, params: GenerateParams) -> None:
    prompt = params.prompt or ctx.prompt
    if not prompt:
        raise FailedPrecondition("generate needs a prompt (the stage's prompt or the job's)", reason="NO_PROMPT")
    result = ctx.clients.guidance.generate(GenerateRequest(
        conditions=Conditions(backbone=params.backbone, prompt=prompt, negative_prompt=params.negative_prompt),
        num_images=params.num_images, width=params.size, height=params.size, num_steps=params.num_steps,
        guidance_scale=params.guidance_scale, seed=ctx.seed + 11))
    pictures = [(np.clip(x.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8) for x in result.images]
    scores: list[float | None] = []
    for k, picture in enumerate(pictures):
        ctx.check_cancelled()
        ctx.artifact(f"generate/candidate_{k}.png", encode_png(picture))
        scores.append(face_score(ctx.clients.face, picture) if params.choose == "face_score" else None)
        ctx.progress(k + 1, len(pictures), "candidates")
    if params.choose == "first":
        chosen = 0
    else:
        ranked = [(s, k) for k, s in enumerate(scores) if s is not None]
        if not ranked:
            raise FailedPrecondition(f"none of the {len(pictures)} generated pictures has a face the face service "
                                     "finds", reason="NO_FACE_IN_CANDIDATES")
        chosen = max(ranked)[1]
    ctx.artifact(CHOSEN, encode_png(pictures[chosen]))
    ctx.state["generated"] = {"image": CHOSEN}
    ctx.add_report_section("generate", {"prompt": prompt, "backbone": params.backbone or "(the service default)",
                                        "seed": result.seed, "choose": params.choose, "chosen": chosen,
                                        "scores": [None if s is None else round(s, 4) for s in scores]})
