"""The caption stage run by run_local: the tiny BLIP-2 (random weights) captions the given reference picture and
its caption becomes the job's text prompt unless the job gave one; with no captioner the job's prompt is used;
a caption stage without a preprocess is refused when the recipe loads; the preflight names a missing captioner."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from orchestrator.local import run_local
from orchestrator.recipes import load_recipe
from orchestrator.runtime.endpoints import ServiceClients
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.images import encode_png
from services.guidance.config import GuidanceConfig, load_config
from services.guidance.service import GuidanceService, InProcessGuidanceClient

HEADER = """
name: caption_check
description: TEST the caption stage.
output: mesh
inputs: {min_images: 1, max_images: 1, prompt_required: false}
seed: 0
checkpoint_every: 100
stages:
"""
GIVEN = "  - {name: reference, kind: preprocess, params: {reference: given, camera: {azimuth: 0, radius: 4.0, fov: 35}}}\n"


def recipe(caption_params: str = "{}", preprocess: bool = True):
    return load_recipe(text=HEADER + (GIVEN if preprocess else "") +
                       f"  - {{name: caption, kind: caption, params: {caption_params}}}\n")


def picture() -> bytes:
    """A grey disc on white, 64 x 64 (the given reference)."""
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 < 20 ** 2
    return encode_png(np.where(disc[..., None], 120, 255).astype(np.uint8).repeat(3, axis=-1))


@pytest.fixture(scope="module")
def captioning(tiny_guidance_yaml):
    tiny = yaml.safe_load(tiny_guidance_yaml.read_text())
    path = tiny_guidance_yaml.parent / "captions-stage.yaml"
    path.write_text(yaml.safe_dump({"backbones": [{"name": "analytic", "backend": "analytic"}],
                                    "captioners": tiny["captioners"]}))
    svc = GuidanceService(load_config(path, device="cpu"))
    yield svc
    svc.close()


def clients(svc: GuidanceService) -> ServiceClients:
    from services.render.service import InProcessRenderClient

    return ServiceClients(face=None, render=InProcessRenderClient(), guidance=InProcessGuidanceClient(svc))


def report(result) -> dict:
    return json.loads((result.out_dir / "report.json").read_text())


def run(loaded, prompt: str, svc, tmp_path):
    return run_local(loaded, [picture()], prompt, tmp_path / "out", clients=clients(svc), show_progress=False)


def test_the_caption_is_the_prompt_and_is_labelled_random_weights(captioning, tmp_path):
    result = run(recipe("{template: 'a portrait, {caption}', max_new_tokens: 5}"), "", captioning, tmp_path)
    assert result.state == "succeeded", result
    r = report(result)
    section = r["caption"]
    assert section["captioner"] == "blip2-tiny" and section["random_weights"] and section["source"] == "captioner"
    assert section["caption"].startswith("a photo of")
    assert section["prompt"] == f"a portrait, {section['caption']}" == section["used_prompt"]
    assert not r["result_is_real"]
    assert any("captioner" in w and "random weights" in w for w in r["warnings"])
    saved = json.loads((result.out_dir / "caption" / "caption.json").read_text())
    assert saved["prompt"] == section["prompt"] and saved["model"]["provenance"] == "random_weights"
    again = run(recipe("{template: 'a portrait, {caption}', max_new_tokens: 5}"), "", captioning, tmp_path / "2")
    assert report(again)["caption"]["caption"] == section["caption"]     # greedy: deterministic


def test_the_jobs_prompt_wins_over_the_caption(captioning, tmp_path):
    r = report(run(recipe("{captioner: blip-tiny, max_new_tokens: 4}"), "a bald man", captioning, tmp_path))
    assert r["caption"]["captioner"] == "blip-tiny" and r["caption"]["used_prompt"] == "a bald man"
    assert r["caption"]["job_prompt_given"]


def test_no_captioner_falls_back_to_the_jobs_prompt(tmp_path):
    svc = GuidanceService(GuidanceConfig(device="cpu"))
    try:
        result = run(recipe(), "a woman with red hair", svc, tmp_path)
        assert result.state == "succeeded", result
        section = report(result)["caption"]
        assert section["source"] == "job_prompt" and section["prompt"] == "a woman with red hair"
        assert section["note"] == "no captioner configured: the job's prompt"
        failed = run(recipe(), "", svc, tmp_path / "none")     # nothing to fall back on: preflight says so
        assert failed.state == "failed" and "no prompt to fall back on" in failed.error_message
        failed = run(recipe("{fallback: fail}"), "a prompt", svc, tmp_path / "fail")
        assert failed.state == "failed" and "no captioner is configured" in failed.error_message
    finally:
        svc.close()


def test_a_caption_stage_needs_a_preprocess_before_it():
    with pytest.raises(InvalidArgument, match="put a preprocess stage before it"):
        recipe(preprocess=False)
    with pytest.raises(InvalidArgument, match="caption"):
        recipe("{template: 'no field'}")


def test_the_preflight_names_a_missing_captioner(captioning):
    from orchestrator.recipes.requirements import check, missing

    loaded = recipe("{captioner: blip3}")
    problems = missing(loaded, clients(captioning))
    assert len(problems) == 1 and "captioner 'blip3' is not configured" in problems[0]
    with pytest.raises(FailedPrecondition) as e:
        check(loaded, clients(captioning), prompt="")
    assert e.value.reason == "MODELS_MISSING"
    assert missing(recipe(), clients(captioning), prompt="") == []
