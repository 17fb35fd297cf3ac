"""Output of a test prior or of random weights is never presented as a result: report.json warns and says
result_is_real false, `headforge generate` prints it, `headforge submit` has no toy default recipe; the fast
recipe on the shipped dlib models stays a real result."""

from __future__ import annotations

import json

from orchestrator.local import run_local
from orchestrator.recipes import load_recipe
from orchestrator.runtime.report import NOT_A_RESULT, provenance_warnings
from tests.helpers import headforge

TWO_STEPS = {"stages.optimise.iterations": "2"}


def test_provenance_warnings_walk_nested_model_records():
    models = {"face": [{"role": "detector", "backend": "insightface", "name": "det_10g.onnx", "provenance": "random_weights"},
                       {"role": "recognizer", "backend": "insightface", "name": "w600k_r50.onnx",
                        "provenance": "random_weights"}],
              "guidance": {"analytic": [{"role": "exemplars", "backend": "analytic", "name": "builtin",
                                         "provenance": "test_prior"}],
                           "sd15": [{"role": "unet", "backend": "diffusers", "name": "sd15/unet", "provenance": ""}]},
              "render": {"kind": "mesh", "backend": "torch"}, "head_template": "headforge-template-v1"}
    warnings = provenance_warnings(models)
    assert warnings == [
        f"face models (detector: det_10g.onnx; recognizer: w600k_r50.onnx) have random weights: {NOT_A_RESULT}",
        f"guidance backbone analytic (exemplars: builtin) is a test prior: {NOT_A_RESULT}"]
    assert provenance_warnings({"guidance": {"sd15": models["guidance"]["sd15"]}}) == []


def test_analytic_prior_report_is_not_a_result(tmp_path):
    result = run_local(load_recipe("analytic_prior", options=TWO_STEPS), [], "", tmp_path / "out", show_progress=False)
    assert result.state == "succeeded", result.error_message
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["result_is_real"] is False
    assert f"guidance backbone analytic (exemplars: builtin) is a test prior: {NOT_A_RESULT}" in report["warnings"]
    assert report["models"]["guidance"]["analytic"][0]["provenance"] == "test_prior"


def test_report_lists_only_the_backbones_the_recipe_uses(tmp_path):
    """A guidance service that also configures another backbone: report.json lists (and warns about) only
    the one the recipe's sds term names."""
    from orchestrator.runtime.endpoints import Endpoints

    config = tmp_path / "guidance.yaml"
    config.write_text("backbones: [{name: unused, backend: analytic, default: true}, {name: analytic, backend: analytic}]\n")
    result = run_local(load_recipe("analytic_prior", options=TWO_STEPS), [], "", tmp_path / "out",
                       endpoints=Endpoints(guidance_config=str(config)), show_progress=False)
    assert result.state == "succeeded", result.error_message
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert list(report["models"]["guidance"]) == ["analytic"]
    assert not [w for w in report["warnings"] if "unused" in w] and report["result_is_real"] is False


def test_fast_recipe_on_dlib_is_a_real_result(tmp_path, astronaut):
    from orchestrator.fast import run_fast
    from services.face.service import InProcessFaceClient
    from services.render.service import InProcessRenderClient

    result = run_fast(astronaut, tmp_path / "fast", face_client=InProcessFaceClient(),
                      render_client=InProcessRenderClient(), turntable_frames=4, fit_steps=2, texture_size=128)
    report = json.loads(result.report.read_text())
    assert report["result_is_real"] is True
    assert not [w for w in report["warnings"] if NOT_A_RESULT in w], report["warnings"]
    assert all(m["provenance"] == "" for m in report["models"]["face"])


def test_generate_prints_the_test_prior_warning(tmp_path):
    r = headforge("generate", "--recipe", "analytic_prior", "--option", "stages.optimise.iterations=2",
                  "--out", str(tmp_path / "out"), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"warning: guidance backbone analytic (exemplars: builtin) is a test prior: {NOT_A_RESULT}" in r.stdout
    assert "NOT A RESULT" in r.stdout.splitlines()[-1]


def test_submit_has_no_default_recipe():
    r = headforge("submit", "photo.png", "--target", "127.0.0.1:1")
    assert r.returncode == 2 and "--recipe" in r.stderr and "required" in r.stderr
    r = headforge("submit", "--help")
    assert r.returncode == 0 and "analytic_prior, fast, id_to_3d, portrait3d_id, portrait3d_text, sds_gaussians" in " ".join(r.stdout.split())
