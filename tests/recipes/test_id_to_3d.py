"""id_to_3d's pieces on real components: its YAML's numbers against the paper (section C's iterations, timestep
ranges, learning rates, Laplacian weight, grid and code sizes; section 4's evaluation grid), the orchestration of
expressions (one random code per step, its text sent as the expression condition), the per-expression export,
and the preflight that names every missing model and capability (LoRAs, expression adapter, identity adapter,
environment maps) before a stage runs. The closed loop and the job over gRPC are in
tests/integration/test_id_to_3d_job.py; the scene kind in tests/render/test_dmtet_expression.py."""

from __future__ import annotations

import pytest

from orchestrator.closed_loop import reference_picture
from orchestrator.local import run_local
from orchestrator.recipes import load_recipe
from orchestrator.stages.environments import environment_for_step, procedural_environment
from orchestrator.stages.params import InitParams, ShadingParams
from orchestrator.stages.scene import expression_slug


def test_the_recipe_says_what_the_paper_says():
    p = load_recipe("id_to_3d").params
    init = p["init"]
    assert init.representation == "dmtet_expression" and init.dmtet.grid_resolution == 256
    assert len(init.dmtet.expressions) in (3, 6, 13)                          # C: 3, 6 or 13 expressions
    geo = p["geometry"]
    assert geo.iterations == 6000 and geo.regularizers[0].name == "laplacian" and geo.regularizers[0].weight == 5000
    assert geo.optimizer.lrs["sdf_net"] == 1e-4                                # C: lr 1e-4
    sds = geo.terms[0]
    assert sds.output == "normal_camera" and [lora.name for lora in sds.loras] == ["normal"]
    assert sds.identity_scale > 0 and sds.expression_scale > 0 and sds.guidance_scale == 10
    assert sds.t_anneal[0][1:] == (0.2, 0.7) and sds.t_anneal[1] == (3000, 0.2, 0.7)   # [200, 700] first half
    assert sds.t_anneal[-1][1:] == (0.05, 0.2)                                         # then annealed to [50, 200]
    diffuse, full, photo = p["texture_diffuse"], p["texture_full"], p["texture_photoreal"]
    assert diffuse.iterations + full.iterations + photo.iterations == 2000            # C: 2,000 texture iterations
    assert diffuse.iterations == 0.8 * 2000 and photo.iterations == 20
    assert diffuse.shading.kind == "pbr_diffuse" and full.shading.kind == "pbr" and diffuse.shading.random_rotation
    assert diffuse.terms[0].t_range == (0.05, 0.9) and full.terms[0].t_range == (0.05, 0.5)
    assert photo.terms[0].t_range == (0.05, 0.1) and not photo.terms[0].loras
    assert [lora.name for lora in diffuse.terms[0].loras] == ["albedo"]
    for stage in (diffuse, full, photo):
        assert set(stage.optimizer.frozen) == {"sdf_net", "codes", "deform"}
        assert stage.optimizer.lrs["material_net"] == 0.01                            # C: lr 0.01
    grid = p["evaluate"].identity_grid
    assert (grid.yaw, grid.elevation) == ((-65, 65), (-15, 15))                        # 4: the evaluation views
    assert "glb" in p["export"].formats and p["export"].units == "metres"


def test_dmtet_expression_scenes_need_their_expression_texts():
    with pytest.raises(ValueError, match="expressions"):
        InitParams(representation="dmtet_expression", source="sphere")
    with pytest.raises(ValueError, match="expressions"):
        InitParams(representation="dmtet", source="sphere", dmtet={"expressions": ["neutral"]})
    with pytest.raises(ValueError, match="distinct"):
        InitParams(representation="dmtet_expression", dmtet={"expressions": ["smile", "smile"]})
    assert expression_slug("Mouth open!") == "mouth_open" and expression_slug("  ") == "expression"


def test_environments_are_linear_rotated_and_seeded():
    import numpy as np

    a = procedural_environment(np.random.default_rng(1), 16)
    assert a.shape == (3, 16, 32) and (a >= 0).all() and abs(float(a.mean()) - 1) < 1e-5
    assert not np.allclose(a, procedural_environment(np.random.default_rng(2), 16))
    spec = ShadingParams(kind="pbr")
    e1, e2 = (environment_for_step(spec, None, np.random.default_rng(7)) for _ in range(2))
    assert np.array_equal(e1.radiance, e2.radiance) and e1.rotation_y_deg == e2.rotation_y_deg   # resumable
    assert environment_for_step(ShadingParams(random_rotation=False), None, np.random.default_rng(7)).rotation_y_deg == 0


def test_hdr_folders_are_read_and_a_missing_one_is_named(tmp_path):
    import cv2
    import numpy as np

    from services.common.errors import FailedPrecondition

    folder = tmp_path / "envmaps"
    folder.mkdir()
    sky = np.zeros((64, 128, 3), np.float32)
    sky[..., 2] = 3.0                                                        # BGR: a red sky in RGB
    cv2.imwrite(str(folder / "red.hdr"), sky)
    env = environment_for_step(ShadingParams(max_height=16), folder, np.random.default_rng(0))
    assert env.radiance.shape == (3, 16, 32) and np.allclose(env.radiance[0], 3.0, rtol=0.02)
    assert np.allclose(env.radiance[1:], 0)
    with pytest.raises(FailedPrecondition, match="no Radiance .hdr"):
        environment_for_step(ShadingParams(), tmp_path, np.random.default_rng(0))


def test_a_job_without_its_models_fails_before_any_stage_naming_each(tmp_path):
    """In-process services with nothing configured (the analytic prior, no LoRAs, no expression adapter, no
    environment maps)."""
    result = run_local(load_recipe("id_to_3d"), [reference_picture(64)], "a photo of a man", tmp_path / "out",
                       show_progress=False)
    assert result.state == "failed" and result.error_reason == "MODELS_MISSING"
    for named in ("realistic_vision_faceid", "envmaps"):
        assert named in result.error_message, named
    assert not (tmp_path / "out").exists() and not result.stage_seconds


def test_preflight_names_the_missing_loras_and_environment_maps(tmp_path):
    """The recipe's backbone configured (an oracle standing in) but without its normal / albedo LoRAs, and a models
    directory without envmaps/: each lack is named with its stage."""
    from types import SimpleNamespace

    from orchestrator.recipes.requirements import missing
    from services.guidance.config import BatchingConfig, GuidanceConfig
    from services.guidance.service import GuidanceService, InProcessGuidanceClient

    svc = GuidanceService(GuidanceConfig(device="cpu", batching=BatchingConfig(max_queue_delay_ms=0), backbones=[
        {"backend": "oracle", "name": "realistic_vision_faceid", "default": True, "loras": []}]))
    problems = " | ".join(missing(load_recipe("id_to_3d"), SimpleNamespace(guidance=InProcessGuidanceClient(svc),
                                                                            face=None, inversion=None), str(tmp_path)))
    assert "geometry: guidance backbone 'realistic_vision_faceid' has no LoRA 'normal'" in problems
    assert "texture_diffuse: guidance backbone 'realistic_vision_faceid' has no LoRA 'albedo'" in problems
    assert "texture_diffuse: no Radiance .hdr environment maps" in problems and "envmaps" in problems
    (tmp_path / "envmaps").mkdir()
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "envmaps" / "sky.hdr"), np.ones((8, 16, 3), np.float32))
    again = " | ".join(missing(load_recipe("id_to_3d"), SimpleNamespace(guidance=InProcessGuidanceClient(svc),
                                                                         face=None, inversion=None), str(tmp_path)))
    assert "environment maps" not in again and "no LoRA 'normal'" in again
