"""`headforge generate`'s engine (orchestrator.local.run_local): whole recipes in this process with the
same stage code the cluster runs; services in-process."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orchestrator.local import run_local
from orchestrator.recipes import load_recipe
from orchestrator.runtime.endpoints import Endpoints
from services.core.cameras import orbit_camera
from services.common.images import encode_png
from services.guidance.backbones.analytic import builtin_exemplars
from services.render.service import InProcessRenderClient

FAST = {"stages.optimise.iterations": "12", "stages.init.num_points": "400", "stages.evaluate.resolution": "64",
        "stages.evaluate.turntable_frames": "4"}


def _views_psnr(ply: bytes, target: np.ndarray) -> list[float]:
    render = InProcessRenderClient()
    scene = render.create_scene("gaussians", asset=(ply, "ply"))
    out = []
    for azimuth in (0, 90, 180, -90):
        cam = orbit_camera(azimuth, 10, 3.0, fov_deg=30, width=32, height=32)
        rgb = render.render(scene.scene_id, [cam], ["rgb"], background=np.full(3, 0.5, np.float32)).outputs["rgb"][0]
        out.append(float(-10 * np.log10(np.mean((rgb - target) ** 2))))
    return out


def test_sds_alone_against_the_analytic_prior_converges(tmp_path):
    """The whole loop (render -> Distill -> ApplyGradients) turns grey Gaussians into a red ball: every view
    approaches the prompted exemplar (a red disc on grey)."""
    red_disc = builtin_exemplars(32)[0][0]
    result = run_local(load_recipe("analytic_prior"), [], "", tmp_path / "out", show_progress=False)
    assert result.state == "succeeded", result.error_message
    before = _views_psnr(_grey_ply(), red_disc)
    after = _views_psnr((tmp_path / "out" / "export" / "head.ply").read_bytes(), red_disc)
    assert max(before) < 15 and min(after) > 24, (before, after)


def _grey_ply() -> bytes:
    render = InProcessRenderClient()
    scene = render.create_scene("gaussians", {"num_points": 800, "radius": 0.9})
    return render.export(scene.scene_id, "ply")


def test_photo_to_gaussians_slice_writes_every_artifact(tmp_path, astronaut, tiny_guidance_yaml):
    """preprocess -> init -> optimise (reference view + SDS from the tiny SD1.5-layout model) -> export ->
    evaluate, in process."""
    from plyfile import PlyData

    options = {**FAST, "stages.optimise.terms": "[{kind: reference_rgb}, {kind: reference_mask, weight: 0.5}, "
                                                "{kind: sds, weight: 0.01, prompt: a head, resolution: 64}]"}
    result = run_local(load_recipe("sds_gaussians", options=options), [encode_png(astronaut)], "",
                       tmp_path / "out", endpoints=Endpoints(guidance_config=str(tiny_guidance_yaml)),
                       show_progress=False)
    assert result.state == "succeeded", result.error_message
    out = tmp_path / "out"
    for name in ("export/head.ply", "turntable.gif", "contact_sheet.png", "metrics.json", "report.json",
                 "preprocess/reference.png", "eval/left_frontal.png", "eval/rear.png"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoints").exists()
    assert PlyData.read(str(out / "export" / "head.ply"))["vertex"].count == 400
    report = json.loads((out / "report.json").read_text())
    assert set(report["stage_seconds"]) == {"preprocess", "init", "optimise", "export", "evaluate"}
    assert set(report["metrics"]["identity"]) == {"left_frontal", "left", "right_frontal", "right"}
    assert report["metrics"]["lpips"].startswith("not available")
    assert report["metrics"]["reference_view"]["psnr_db"] > 0


def test_a_photo_without_a_face_fails_cleanly(tmp_path):
    blank = encode_png(np.full((128, 128, 3), 200, np.uint8))
    result = run_local(load_recipe("sds_gaussians", options=FAST), [blank], "", tmp_path / "out",
                       show_progress=False)
    assert result.state == "failed" and result.error_reason == "NO_FACE" and "no face" in result.error_message
    assert not (tmp_path / "out").exists()


def test_mesh_then_convert_to_gaussians(tmp_path):
    """init a textured mesh (sphere), convert it to Gaussians on its surface, optimise those against the
    analytic prior, export a PLY: the convert stage hands the job to a new scene."""
    from plyfile import PlyData

    text = load_recipe("analytic_prior").yaml.replace("representation: gaussians", "representation: mesh")
    data = __import__("yaml").safe_load(text)
    lrs = data["stages"][0]["params"].pop("lrs")       # the Gaussian groups' rates move to the convert stage
    data["stages"].insert(1, {"name": "convert", "kind": "convert", "params": {"num_points": 600, "lrs": lrs}})
    data["stages"][2]["params"]["iterations"] = 5
    result = run_local(load_recipe(text=__import__("yaml").safe_dump(data)), [], "", tmp_path / "out",
                       show_progress=False)
    assert result.state == "succeeded", result.error_message
    vertices = PlyData.read(str(tmp_path / "out" / "export" / "head.ply"))["vertex"]
    radii = np.sqrt(vertices["x"] ** 2 + vertices["y"] ** 2 + vertices["z"] ** 2)
    assert vertices.count == 600 and np.median(radii) == pytest.approx(0.9, rel=0.15)   # on the sphere


def test_the_fast_recipe_as_stages(tmp_path, astronaut):
    """The embedded default as a recipe of ordinary stages: the files `headforge generate` writes."""
    import trimesh

    options = {"stages.texture.texture_size": "256", "stages.fit.fit_steps": "4", "stages.turntable.frames": "4"}
    result = run_local(load_recipe("fast", options=options), [encode_png(astronaut)], "", tmp_path / "out",
                       show_progress=False)
    assert result.state == "succeeded", result.error_message
    for name in ("asset.glb", "turntable.gif", "contact_sheet.png", "report.json"):
        assert (tmp_path / "out" / name).is_file(), name
    mesh = trimesh.load(tmp_path / "out" / "asset.glb", force="mesh")
    assert len(mesh.faces) > 10000 and mesh.visual.material is not None


def test_report_names_the_recipe_timings_and_models(tmp_path):
    result = run_local(load_recipe("analytic_prior", options={"stages.optimise.iterations": "3"}), [], "",
                       tmp_path / "out", show_progress=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["recipe"] == "analytic_prior" and len(report["recipe_sha256"]) == 64
    assert set(report["stage_seconds"]) == {"init", "optimise", "export"} and report["total_seconds"] > 0
    assert {m["role"] for m in report["models"]["face"]} >= {"detector"}
    assert report["models"]["guidance"]["analytic"][0]["backend"] == "analytic"
    assert result.state == "succeeded"
