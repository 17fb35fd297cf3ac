"""The evaluate stage's identity over a grid of views (ID-to-3D: elevation [-15, +15], rotation [-65, +65])
against the photos preprocess held out: jobs on the fast recipe's stages (template fit + texture) with real dlib
models in the in-process face service and the in-process render service. The held-out references decide the
numbers; none held out falls back to the input photo with a warning; an identity_model the face service does
not run fails the job before its first stage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator.evaluation import grid_angles, view_camera
from orchestrator.local import run_local
from orchestrator.recipes import load_recipe
from orchestrator.runtime.endpoints import ServiceClients
from services.common.images import encode_png

GRID = "{yaw: [-30, 30], elevation: [-10, 10], yaw_steps: 3, elevation_steps: 2}"
RECIPE = """
name: identity_grid_check
description: TEST identity over a grid of views against held-out photos.
output: mesh
inputs: {{min_images: 1, max_images: 3, prompt_required: false}}
seed: 0
checkpoint_every: 100
stages:
  - {{name: analyse, kind: preprocess, params: {{reference: photo, holdout_photos: {holdout}}}}}
  - {{name: fit, kind: template_fit, params: {{fit_steps: 2}}}}
  - {{name: texture, kind: template_texture, params: {{texture_size: 128}}}}
  - name: evaluate
    kind: evaluate
    params: {{resolution: 256, geometry_resolution: 64, turntable_frames: 0, identity_grid: {grid},
              identity_references: {refs}{extra}}}
"""


@pytest.fixture(scope="module")
def clients(face_service):
    from services.face.service import InProcessFaceClient
    from services.render.service import InProcessRenderClient

    return ServiceClients(face=InProcessFaceClient(face_service), render=InProcessRenderClient(), guidance=None)


def _job(photos, tmp_path, clients, *, holdout=0, refs="holdout", extra=""):
    text = RECIPE.format(holdout=holdout, grid=GRID, refs=refs, extra=extra)
    result = run_local(load_recipe(text=text), [encode_png(p) for p in photos], "", tmp_path, clients=clients,
                       show_progress=False)
    report = json.loads((result.out_dir / "report.json").read_text()) if result.state == "succeeded" else None
    return result, report


@pytest.fixture(scope="module")
def jobs(astronaut, hopper, clients, tmp_path_factory):
    """The same identity (images[0], the astronaut) with a held-out astronaut, a held-out hopper, both, and none."""
    out = {}
    for name, photos, holdout in (("astronaut", [astronaut, astronaut], 1), ("hopper", [astronaut, hopper], 1),
                                  ("both", [astronaut, astronaut, hopper], 2), ("none", [astronaut], 0)):
        result, report = _job(photos, tmp_path_factory.mktemp(name), clients, holdout=holdout)
        assert result.state == "succeeded", result.error_message
        out[name] = (result, report)
    return out


def test_grid_views_angles_and_renders(jobs):
    result, report = jobs["astronaut"]
    grid = report["metrics"]["identity_grid"]
    angles = [(v["yaw"], v["elevation"]) for v in grid["views"]]
    assert angles == grid_angles((-30, 30), (-10, 10), 3, 2) == [(-30.0, -10.0), (0.0, -10.0), (30.0, -10.0),
                                                                 (-30.0, 10.0), (0.0, 10.0), (30.0, 10.0)]
    assert grid["recogniser"] == "dlib" and grid["references"] == 1 and grid["reference_source"] == "held_out_photos"
    assert "mean dlib cosine" in grid["identity_definition"] and "held-out photos" in grid["identity_definition"]
    assert "not its recogniser CosFace" in grid["identity_definition"]
    assert (grid["radius"], grid["render_size"]) == (6.5, 256)
    frontal = next(v for v in grid["views"] if v["yaw"] == 0 and v["elevation"] == 10)
    assert frontal["face_found"] and 0 < frontal["similarity"] <= 1 and len(frontal["per_reference"]) == 1
    found = [v for v in grid["views"] if v["face_found"]]
    assert grid["face_found_fraction"] == pytest.approx(len(found) / 6, abs=1e-4)
    assert grid["mean"] == pytest.approx(np.mean([v["similarity"] for v in grid["views"]]), abs=1e-3)
    assert all(v["similarity"] == 0.0 and v["per_reference"] is None for v in grid["views"] if not v["face_found"])
    written = sorted(p.name for p in (result.out_dir / "eval" / "identity_grid").iterdir())
    assert written == sorted(f"grid_yaw{y:+g}_elev{e:+g}.png" for y, e in angles)
    assert not any("identity_grid" in w for w in report["metrics"]["warnings"])


def test_cameras_follow_the_projects_convention():
    """Yaw is the orbit azimuth (+ = camera on +X), elevation positive above, at the protocol's radius."""
    up, right = view_camera(0, 64, elevation=15).position, view_camera(65, 64).position
    assert up[1] > 0 and abs(up[0]) < 1e-6 and right[0] > 0
    assert np.linalg.norm(up - (0, -0.05, 0)) == pytest.approx(6.5) and np.linalg.norm(right - (0, -0.05, 0)) == \
        pytest.approx(6.5)


def test_similarity_is_against_the_held_out_photos(jobs):
    same = jobs["astronaut"][1]["metrics"]["identity_grid"]
    other = jobs["hopper"][1]["metrics"]["identity_grid"]
    # the same scene (the identity and the fit come from images[0]) and the same faces found...
    assert [v["face_found"] for v in same["views"]] == [v["face_found"] for v in other["views"]]
    # ...but other references: other numbers, the astronaut's own photo the closer one
    pairs = [(a["similarity"], b["similarity"]) for a, b in zip(same["views"], other["views"]) if a["face_found"]]
    assert pairs and all(a != pytest.approx(b, abs=1e-3) for a, b in pairs)
    assert same["mean"] > other["mean"]
    # both held out: one cosine per reference, the view's similarity their mean
    both = jobs["both"][1]["metrics"]["identity_grid"]
    assert both["references"] == 2
    for a, b, v in zip(same["views"], other["views"], both["views"]):
        if v["face_found"]:
            assert v["per_reference"] == pytest.approx([a["similarity"], b["similarity"]], abs=2e-3)
            assert v["similarity"] == pytest.approx(np.mean(v["per_reference"]), abs=1e-4)


def test_no_held_out_photo_falls_back_to_the_input_photo_with_a_warning(jobs):
    report = jobs["none"][1]
    grid = report["metrics"]["identity_grid"]
    assert grid["reference_source"] == "input_photo" and grid["references"] == 1
    assert "input photo's identity" in grid["identity_definition"]
    warnings = [w for w in report["metrics"]["warnings"] if w.startswith("identity_grid")]
    assert len(warnings) == 1 and "no photos were held out" in warnings[0]
    # the input photo is the held-out copy of itself: the same numbers as holding out the astronaut again
    held = jobs["astronaut"][1]["metrics"]["identity_grid"]
    assert [v["similarity"] for v in grid["views"]] == pytest.approx([v["similarity"] for v in held["views"]],
                                                                     abs=2e-3)


def test_an_identity_model_the_face_service_does_not_run_fails_before_the_first_stage(astronaut, clients, tmp_path):
    result, _ = _job([astronaut], tmp_path, clients, extra=", identity_model: cosface")
    assert result.state == "failed" and result.error_reason == "MODELS_MISSING"
    assert "identity_model 'cosface', but the face service embeds with 'dlib'" in result.error_message
    assert "--cosface-onnx" in result.error_message


def test_grid_params_are_validated():
    from pydantic import ValidationError

    from orchestrator.stages.params import EvaluateParams

    p = EvaluateParams(identity_grid={})
    assert (p.identity_grid.yaw, p.identity_grid.elevation) == ((-65.0, 65.0), (-15.0, 15.0))
    assert (p.identity_grid.yaw_steps, p.identity_grid.elevation_steps, p.identity_references) == (5, 3, "holdout")
    assert EvaluateParams().identity_grid is None
    with pytest.raises(ValidationError, match="lo <= hi"):
        EvaluateParams(identity_grid={"yaw": [30, -30]})
    with pytest.raises(ValidationError, match="elevation_steps 1 takes one elevation"):
        EvaluateParams(identity_grid={"elevation_steps": 1})
    with pytest.raises(ValidationError):
        EvaluateParams(identity_references="gallery")
