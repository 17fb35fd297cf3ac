"""portrait3d_id's pieces on real components: its YAML's numbers against the paper (Appendix B's ordered views,
t = 120 refinement, the 5,000 geometry iterations, the camera ranges), and the preflight that names every missing
model and every missing capability (identity adapter, ControlNet, normal / depth output) before a stage runs. The
closed loop and the job over gRPC are in tests/integration/test_portrait3d_id_job.py; the landmark alignment in
tests/orchestrator/test_landmark_alignment.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from orchestrator.closed_loop import reference_picture
from orchestrator.local import run_local
from orchestrator.recipes import load_recipe
from orchestrator.recipes.requirements import missing
from services.face.config import FaceConfig
from services.face.service import InProcessFaceClient
from services.guidance.config import BatchingConfig, GuidanceConfig
from services.guidance.service import GuidanceService, InProcessGuidanceClient


def test_the_recipe_says_what_the_paper_says():
    p = load_recipe("portrait3d_id").params
    views = [(v.azimuth, v.elevation) for v in p["texture"].cameras.views]
    assert views[:8] == [(a, -15.0) for a in (0, 45, -45, 90, -90, 135, -135, 180)]      # B.2, in this order
    assert len(views) == 15 and all(e > 0 for _, e in views[8:])                          # "then the top views"
    tex = p["texture"]
    assert tex.backbone == "realistic_vision_40" and tex.identity_scale > 0 and tex.normal_control > 0
    refine = p["refine"]
    assert refine.rounds * refine.target_views * refine.iterations == 400                  # B.3: 400 steps
    assert refine.strength == pytest.approx(120 / 1000)                                    # at t = 120
    cams = refine.cameras
    assert (cams.azimuth, cams.elevation, cams.radius) == ((-180, 180), (-20, 45), (2.5, 4.0))
    assert (refine.l2, refine.perceptual, refine.reference_l2) == (1.0, 1.0, 1.0)
    assert refine.identity_scale > 0 and refine.normal_control > 0 and refine.optimizer.frozen == ["vertices"]
    assert p["fit_gan_normals"].iterations + p["sculpt"].iterations == 5000                 # 5.1
    isd = next(t for t in p["sculpt"].terms if t.kind == "sds")
    assert (isd.variant, isd.backbone, isd.identity_scale > 0) == ("isd", "sd15", True)
    assert [(c.kind, c.points) for c in isd.controls] == [("landmarks", 478)]
    assert {t.kind for t in p["sculpt"].terms} >= {"reference_mask", "reference_normal", "reference_depth"}
    assert p["to_dmtet"].dmtet.grid_resolution == 512 and p["to_textured_mesh"].texture_size == 1024
    inv = p["invert"]
    assert inv.generator == "panohead" and inv.pti and inv.l2_weight > 0 and inv.lpips_weight > 0
    geo = p["geometry"]
    assert (geo.normal_backbone, geo.depth_backbone) == ("humannorm_normal", "humannorm_depth")
    assert geo.canny_control > 0 and geo.identity_scale > 0
    assert p["gan_normals"].output == "normal_camera"
    assert p["fit_gan_normals"].terms[0].target == "targets/gan_normals.npz"


def test_a_job_without_its_models_fails_before_any_stage_naming_each(tmp_path):
    """In-process services with nothing configured (the analytic prior, no generator, no LPIPS weights)."""
    result = run_local(load_recipe("portrait3d_id"), [reference_picture(64)], "a photo of a man", tmp_path / "out",
                       show_progress=False)
    assert result.state == "failed" and result.error_reason == "MODELS_MISSING"
    for named in ("humannorm_normal", "humannorm_depth", "sd15", "realistic_vision_40", "panohead", "LPIPS"):
        assert named in result.error_message, named
    assert not (tmp_path / "out").exists() and not result.stage_seconds


def test_preflight_names_missing_adapters_controlnets_and_output_kinds():
    """Backbones under the recipe's names that lack what its stages condition on (oracles here: no identity
    adapter, no ControlNets, the normal model making RGB; a FaceID-sized adapter beside dlib's 128-d
    embeddings): each lack is named with its stage."""
    bare = {"backend": "oracle", "identity_adapters": [], "controls": []}
    svc = GuidanceService(GuidanceConfig(device="cpu", batching=BatchingConfig(max_queue_delay_ms=0), backbones=[
        {**bare, "name": "humannorm_normal", "default": True}, {**bare, "name": "humannorm_depth", "output_kind": "depth"},
        {**bare, "name": "sd15"},
        {"backend": "oracle", "name": "realistic_vision_40", "controls": ["normal"]}]))   # a 512-d faceid adapter
    face = InProcessFaceClient(config=FaceConfig(detector="dlib", recognizer="dlib"))
    try:
        clients = SimpleNamespace(guidance=InProcessGuidanceClient(svc), face=face, inversion=None)
        problems = " | ".join(missing(load_recipe("portrait3d_id"), clients))
    finally:
        svc.close()
        face.close()
    assert "geometry: guidance backbone 'humannorm_normal' makes rgb pictures" in problems
    assert "humannorm_depth' makes" not in problems                       # it declares depth
    assert "geometry: guidance backbone 'humannorm_depth' has no canny ControlNet" in problems
    assert "geometry: guidance backbone 'humannorm_normal' has no identity adapter" in problems
    assert "sculpt: guidance backbone 'sd15' has no identity adapter" in problems
    assert "sculpt: guidance backbone 'sd15' has no landmarks ControlNet" in problems
    assert "'realistic_vision_40' has no identity adapter" not in problems
    assert ("texture (realistic_vision_40), refine (realistic_vision_40): the identity adapter takes 512-d embeddings, "
            "the face service's recogniser 'dlib' gives 128-d ones") in problems
    assert "realistic_vision_40' has no normal ControlNet" not in problems   # it has one
    assert "need the inversion service" in problems


DENSE = """
name: dense_landmarks_check
description: TEST a landmark-controlled SDS term after preprocess.
output: mesh
inputs: {min_images: 1, max_images: 1, prompt_required: false}
seed: 0
checkpoint_every: 100
stages:
  - {name: preprocess, kind: preprocess, params: {reference: crop, crop_size: 64}}
  - {name: init, kind: init, params: {representation: dmtet, source: sphere, dmtet: {grid_resolution: 32}}}
  - name: sculpt
    kind: optimise
    params:
      iterations: 1
      cameras: {kind: orbit, resolution: 32}
      terms: [{kind: sds, backbone: landmarked, resolution: 32, controls: [{kind: landmarks, points: 478}]}]
"""


def test_a_photo_without_478_landmarks_fails_at_preprocess_before_any_gpu_stage(tmp_path):
    """dlib finds the astronaut's face with 68 points; a later stage draws MediaPipe's 478: the job fails right
    after preprocess (NO_DENSE_LANDMARKS, naming the stage and the fix), before the scene is made."""
    from skimage import data

    from orchestrator.runtime.endpoints import ServiceClients
    from services.common.images import encode_png
    from services.render.service import InProcessRenderClient

    svc = GuidanceService(GuidanceConfig(device="cpu", batching=BatchingConfig(max_queue_delay_ms=0), backbones=[
        {"backend": "oracle", "name": "landmarked", "controls": ["landmarks"], "default": True}]))
    face = InProcessFaceClient(config=FaceConfig(detector="dlib", recognizer="dlib"))
    events = []
    try:
        clients = ServiceClients(face=face, render=InProcessRenderClient(), guidance=InProcessGuidanceClient(svc))
        result = run_local(load_recipe(text=DENSE), [encode_png(data.astronaut())], "", tmp_path / "out",
                           clients=clients, show_progress=False, on_event=events.append)
    finally:
        svc.close()
        face.close()
    assert result.state == "failed" and result.error_reason == "NO_DENSE_LANDMARKS", result.error_message
    assert "['sculpt']" in result.error_message and "--detector auto" in result.error_message
    ran = [e["stage"] for e in events if e["kind"] == "stage" and e["state"] == "running"]
    assert ran == ["preprocess"]
