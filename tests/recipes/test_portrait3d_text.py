"""portrait3d_text's pieces, each on real components: its YAML's cameras translated into HeadForge's convention,
the per-level learning rates written out for any pyramid, the code's alpha-weighted regression loss and its native
patches, and the preflight that names every missing model before a stage runs. The closed loop and the job over
gRPC are in tests/integration/test_portrait3d_text_job.py."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.local import run_local
from orchestrator.recipes import load_recipe
from orchestrator.stages import losses
from orchestrator.stages.params import OptimizerParams
from orchestrator.stages.refine import _patch
from orchestrator.stages.scene import with_level_lrs
from services.common.errors import FailedPrecondition
from services.core.camera_batch import CameraBatch
from services.core.cameras import orbit_camera


def test_the_recipe_translates_the_codes_cameras_once():
    r = load_recipe("portrait3d_text")
    sds, refine = r.params["sds"], r.params["refine"]
    # polar 60..105 -> elevation -15..30; radius 2.7 and pivot 0.0649 generator units -> x 2 world units
    assert (sds.cameras.elevation, sds.cameras.radius, sds.cameras.fov) == ((-15.0, 30.0), (5.4, 5.4), (12.45, 12.45))
    assert sds.cameras.target == pytest.approx((0.0, 0.1298, 0.0), abs=1e-3)
    code_views = {(round(((a + 180) % 360) - 180, 1), 90 - polar)
                  for a in np.linspace(0, 360, 8)[:7] for polar in (60, 90, 120)}
    views = {(round(v.azimuth, 1), v.elevation) for v in refine.cameras.views}
    assert views == code_views and len(refine.cameras.views) == 21
    assert {(v.radius, v.fov) for v in refine.cameras.views} == {(5.4, 12.45)}
    assert refine.iterations == 19 * 21 and refine.strength == pytest.approx(200 / 1000)
    term = sds.terms[0]
    assert (term.guidance_scale, term.t_range, term.weighting, term.resolution) == (100.0, (0.02, 0.4), "sds", 512)
    assert r.params["invert"].l2_weight == 0 and r.params["invert"].lpips_weight > 0   # the projector: LPIPS alone


def test_level_lrs_are_written_out_for_the_scenes_levels():
    rule = OptimizerParams(kind="adan", level_lrs=[0.1, 0.2, 1.0])
    full = with_level_lrs(rule, [f"level_{r}" for r in (8, 16, 32, 64, 128, 256, 512)] + ["decoder"]).lrs
    assert full == {"level_512": 0.1, "level_256": 0.2, **{f"level_{r}": 1.0 for r in (8, 16, 32, 64, 128)}}
    tiny = with_level_lrs(rule, ["level_16", "decoder", "level_8", "level_32"]).lrs
    assert tiny == {"level_32": 0.1, "level_16": 0.2, "level_8": 1.0}
    named = OptimizerParams(level_lrs=[0.5], lrs={"level_8": 0.01})
    assert with_level_lrs(named, ["level_8", "level_16"]).lrs == {"level_8": 0.01, "level_16": 0.5}
    with pytest.raises(FailedPrecondition, match="pyramid"):
        with_level_lrs(rule, ["planes", "decoder"])


def test_alpha_weighted_loss_has_the_gradients_of_its_formula():
    rng = np.random.default_rng(0)
    pred, target = rng.random((1, 3, 5, 6)), rng.random((1, 3, 5, 6))
    alpha = rng.random((1, 1, 5, 6))
    loss, g_pred, g_alpha = losses.alpha_weighted_photometric(pred, alpha, target, l1_weight=0.5, l2_weight=4000.0)
    assert loss == pytest.approx(np.mean(alpha * (0.5 * np.abs(pred - target) + 4000.0 * (pred - target) ** 2)))
    eps = 1e-6
    for arr, grad in ((pred, g_pred), (alpha, g_alpha)):
        for idx in [(0, 0, 1, 2), (0, 0, 4, 5)] + ([(0, 2, 3, 3)] if arr.shape[1] == 3 else []):
            bumped = arr.copy()
            bumped[idx] += eps
            args = (bumped, alpha, target) if arr is pred else (pred, bumped, target)
            up = losses.alpha_weighted_photometric(*args, l1_weight=0.5, l2_weight=4000.0)[0]
            assert (up - loss) / eps == pytest.approx(grad[idx], rel=1e-3, abs=1e-6)


def test_native_patches_are_exact_crops_with_their_cameras():
    cam = orbit_camera(30, 10, 5.4, fov_deg=12.45, width=32, height=32)
    image = np.random.default_rng(1).random((3, 32, 32)).astype(np.float32)
    patch_cam, crop = _patch(image, cam, 16, np.random.default_rng(2), native=True)
    assert crop.shape == (1, 3, 16, 16) and (patch_cam.width, patch_cam.height) == (16, 16)
    x0 = int(round(cam.K[0, 2] - patch_cam.K[0, 2]))
    y0 = int(round(cam.K[1, 2] - patch_cam.K[1, 2]))
    assert np.array_equal(crop[0], image[:, y0:y0 + 16, x0:x0 + 16])   # no resampling
    full, part = CameraBatch.from_pinholes([cam]), CameraBatch.from_pinholes([patch_cam])
    o1, d1 = full.pixel_rays()
    o2, d2 = part.pixel_rays()
    assert np.allclose(d1[0, y0:y0 + 16, x0:x0 + 16].numpy(), d2[0].numpy(), atol=1e-6)


def test_a_job_without_its_models_fails_before_any_stage_naming_each(tmp_path):
    """In-process services with nothing configured (the analytic prior, no generator, no LPIPS): the preflight
    fails the job at once and names the backbone, the generator and the missing LPIPS weights."""
    result = run_local(load_recipe("portrait3d_text"), [], "upper body photo of a woman", tmp_path / "out",
                       show_progress=False)
    assert result.state == "failed" and result.error_reason == "MODELS_MISSING" and result.error_code == "FAILED_PRECONDITION"
    for named in ("realistic_vision_51", "3dportraitgan_512", "LPIPS", "generate:", "sds:", "refine:", "invert:"):
        assert named in result.error_message, named
    assert not (tmp_path / "out").exists() and not result.stage_seconds
