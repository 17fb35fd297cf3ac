"""preprocess with several photos of one person (ID-to-3D takes 1-5): the identity is the mean of the photos'
unit embeddings re-normalised, photos can be held out for the evaluation, and a photo without a face fails
naming it. Real dlib models in the in-process face service."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator.local import run_local
from orchestrator.recipes import load_recipe
from orchestrator.runtime.endpoints import ServiceClients
from services.common.images import encode_png
from services.face.service import InProcessFaceClient

RECIPE = """
name: identity_check
description: TEST preprocess with several photos.
output: mesh
inputs: {{min_images: 1, max_images: 5, prompt_required: false}}
seed: 0
checkpoint_every: 100
stages:
  - {{name: preprocess, kind: preprocess, params: {{reference: crop, crop_size: 64, holdout_photos: {holdout}}}}}
"""


def _run(photos, tmp_path, holdout: int = 0):
    face = InProcessFaceClient()
    try:
        return run_local(load_recipe(text=RECIPE.format(holdout=holdout)), [encode_png(p) for p in photos], "",
                         tmp_path / "out", clients=ServiceClients(face=face, render=None, guidance=None),
                         show_progress=False)
    finally:
        face.close()


def test_two_photos_combine_as_the_renormalised_mean_and_a_held_out_copy_scores_as_its_original(
        astronaut, hopper, tmp_path):
    result = _run([astronaut, hopper, astronaut], tmp_path / "a", holdout=1)
    assert result.state == "succeeded", result.error_message
    identity = json.loads((result.out_dir / "report.json").read_text())["identity"]
    assert (identity["photos"], identity["held_out"]) == (2, 1)
    a, b = identity["cosine_to_combined"]
    # two unit vectors have the same cosine to their re-normalised mean: sqrt((1 + a.b) / 2) each
    assert a == pytest.approx(b, abs=1e-3) and 0.5 < a < 0.999
    assert identity["held_out_cosine_to_combined"] == [pytest.approx(a, abs=1e-3)]   # the same photo as images[0]


def test_one_photo_keeps_its_embedding_and_holding_out_every_photo_is_refused(astronaut, tmp_path):
    one = _run([astronaut], tmp_path / "one")
    assert one.state == "succeeded" and "identity" not in json.loads((one.out_dir / "report.json").read_text())
    refused = _run([astronaut, astronaut], tmp_path / "all", holdout=2)
    assert refused.state == "failed" and "holdout_photos" in refused.error_message


def test_a_further_photo_without_a_face_fails_naming_it(astronaut, tmp_path):
    blank = np.full((256, 256, 3), 200, np.uint8)
    result = _run([astronaut, blank], tmp_path)
    assert result.state == "failed" and result.error_reason == "NO_FACE", result.error_message
    assert result.error_message.startswith("preprocess: images[1]: no face found")
