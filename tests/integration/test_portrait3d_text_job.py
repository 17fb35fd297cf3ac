"""portrait3d_text end to end, as in production:
- the closed loop (a TEST on the oracle prior, never a result): the recipe's own SDS and refinement stages, from
  the exported field of a tiny random GAN's sample G(w1), recover held-out views of a second sample G(w2) the
  oracle shows, with the decoder untouched and the per-level learning rates at 1 : 0.2 : 0.1;
- `headforge submit --recipe portrait3d_text` on a `headforge cluster` whose model repository names the recipe's
  models (realistic_vision_51, 3dportraitgan_512) but points them at tiny random models in the real layouts: every
  stage runs over gRPC on Ray and every artifact of the method is fetched, report.json flagging the test models.
  Random weights draw no face, so the job's options take the generated picture as the reference view at the GAN's
  camera (preprocess `given`, invert `crop: reference`); LPIPS is a random VGG16 in the lpips layout."""

from __future__ import annotations

import json
import shutil

import yaml

from tests.helpers import headforge, job_on_cluster, write_random_lpips


def test_closed_loop_recovers_the_second_samples_views_with_the_renderer_frozen(tmp_path):
    from orchestrator.closed_loop_papers import run_portrait3d_text

    result = run_portrait3d_text(tmp_path, {"stages.sds.iterations": "50", "stages.refine.iterations": "42"})
    assert result["state"] == "succeeded", result["error"]
    gt = result["ground_truth"]
    before, after_sds, after = gt["before"], gt["after_sds"], gt["after"]
    assert after_sds["psnr_db"] > before["psnr_db"] + 6 and after_sds["chamfer"] < before["chamfer"], gt
    assert after["psnr_db"] > after_sds["psnr_db"] + 1, gt   # the refinement's targets take it further
    assert before["decoder_sha256"] == after_sds["decoder_sha256"] == after["decoder_sha256"]   # frozen renderer
    sds = result["optimizers"]["sds"]
    assert sds["kind"] == "adan" and sds["frozen"] == ["decoder"]
    lrs = [sds["lrs"][f"level_{r}"] for r in (8, 16, 32)]   # in the tiny GAN's units (the check's lr / 21)
    assert [round(v / lrs[0], 3) for v in lrs] == [1.0, 0.2, 0.1]
    assert len(set(result["optimizers"]["refine"]["lrs"].values())) == 1
    assert result["result_is_real"] is False
    assert any("test prior" in w for w in result["warnings"]) and any("random weights" in w for w in result["warnings"])


def _model_repository(root):
    """Tiny random models under the names of the recipe's real ones (what a user's model repository says)."""
    from services.guidance.tiny_models import write_tiny_models
    from services.inversion.tiny import write_tiny_generators

    config = write_tiny_models(root / "guidance")
    data = yaml.safe_load(config.read_text())
    sd = data["backbones"][0]
    data["backbones"].append({"name": "realistic_vision_51", "backend": sd["backend"], "family": sd["family"],
                              "path": sd["path"]})
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    [folder] = write_tiny_generators(root / "models" / "inversion", names=("tiny-3dportraitgan",))
    shutil.move(folder, folder.parent / "3dportraitgan_512")
    write_random_lpips(root / "models")   # serve inversion's convention: models/lpips/vgg16.pth + vgg.pth
    return config, root / "models"


SMALL = {
    "stages.generate.choose": "first", "stages.generate.num_images": "2", "stages.generate.size": "64",
    "stages.generate.num_steps": "2",
    "stages.preprocess.reference": "given",
    "stages.preprocess.camera": "{azimuth: 0, elevation: 0, radius: 5.4, fov: 12.45, target: [0, 0.13, 0]}",
    "stages.invert.crop": "reference", "stages.invert.steps": "4",
    "stages.sds.iterations": "3", "stages.sds.cameras.resolution": "32",
    "stages.sds.terms": "[{kind: sds, backbone: realistic_vision_51, guidance_scale: 100, t_range: [0.02, 0.4], "
                        "resolution: 64}]",
    "stages.refine.iterations": "3", "stages.refine.cameras.resolution": "64", "stages.refine.patch_size": "32",
    "stages.turntable.frames": "4", "stages.turntable.size": "32",
    "stages.evaluate.resolution": "64", "stages.evaluate.geometry_resolution": "64",
}


def test_submit_portrait3d_text_runs_every_stage_over_grpc_on_ray(tmp_path):
    config, models = _model_repository(tmp_path)
    options = [a for k, v in SMALL.items() for a in ("--option", f"{k}={v}")]

    def refuses_no_prompt(target):
        no_prompt = headforge("submit", "--recipe", "portrait3d_text", *options, "--target", target)
        assert no_prompt.returncode != 0 and "prompt" in no_prompt.stderr

    out = job_on_cluster(tmp_path, ["--guidance-config", str(config), "--inversion-models-dir", str(models)],
                         ["--recipe", "portrait3d_text", "--prompt", "upper body photo of a woman", *options],
                         before_submit=refuses_no_prompt, timeout=600)
    for name in ("generate/candidate_0.png", "generate/candidate_1.png", "generate/chosen.png", "invert/crop.png",
                 "invert/reconstruction.png", "invert/latent.npz", "refine/refine/targets_0.npz",
                 "export/portrait.npz", "export/portrait.glb", "turntable.gif", "report.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["result_is_real"] is False
    warnings = " ".join(report["warnings"])
    assert "realistic_vision_51" in warnings and "3dportraitgan_512" in warnings and "random weights" in warnings
    assert report["optimizers"]["sds"]["frozen"] == ["decoder"]
    assert report["inversion"]["generator"]["name"] == "3dportraitgan_512" and report["inversion"]["optimize_camera"]
