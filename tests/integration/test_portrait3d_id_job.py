"""portrait3d_id end to end, as in production:
- the closed loop (a TEST on the oracle prior, never a result): the recipe's own geometry-target, normal-fitting,
  sculpting, texture-inpainting and refinement stages take a DMTet sphere towards the known head: held-out Chamfer
  and normal error fall, the 15 ordered inpainting views cover the surface with a small colour error against the
  head's albedo, and no texel the photo gave is changed afterwards;
- `headforge submit --recipe portrait3d_id` on a `headforge cluster` whose model repository names the recipe's
  models (humannorm_normal, humannorm_depth, sd15, realistic_vision_40, panohead, blip2) but points them at tiny
  random models in the real layouts, the face service recognising with a tiny random InsightFace pack (512-d
  embeddings: what IP-Adapter FaceID takes): every stage runs over gRPC on Ray on the astronaut photo and every
  artifact of the method is fetched, report.json flagging the test models."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import yaml
from PIL import Image

from tests.helpers import job_on_cluster, write_random_lpips


def test_closed_loop_sculpts_a_sphere_into_the_known_head_and_textures_it(tmp_path):
    from orchestrator.closed_loop_papers import run_portrait3d_id

    # the check shrunk for make test's time (about 90 s on 2 cores): half its sculpting and GAN-normal views, 2/3 of
    # its normal fitting, 4 inpainting steps, 8 refinement rounds; its own figures (full size) are in the README
    small = {"stages.sculpt.iterations": "60", "stages.gan_normals.target_views": "12",
             "stages.fit_gan_normals.iterations": "80", "stages.texture.num_steps": "4", "stages.refine.rounds": "8"}
    result = run_portrait3d_id(tmp_path, small)
    assert result["state"] == "succeeded", result["error"]
    gt = result["ground_truth"]
    before, fit, sculpt, after = gt["before"], gt["after_fit"], gt["after_sculpt"], gt["after"]
    assert fit["chamfer"] < 0.9 * before["chamfer"] and fit["normal_error_deg"] < before["normal_error_deg"] - 1, gt
    assert sculpt["chamfer"] < fit["chamfer"], gt
    assert after["chamfer"] < 0.8 * before["chamfer"], gt
    assert after["normal_error_deg"] < before["normal_error_deg"] - 1, gt
    texture = gt["after_texture"]["texture"]
    assert texture["coverage"] > 0.9 and texture["colour_mae"] < 0.1, texture
    assert after["texture"]["colour_mae"] < texture["colour_mae"], gt          # the refinement's SDEdit targets
    written = result["texture_inpaint"]["texels_written"]
    assert list(written)[:2] == ["photo", "view_0"] and len(written) == 16 and all(v > 0 for v in written.values())
    kept = result["texture_inpaint"]["photo_kept"]
    assert kept["pixels"] > 100 and kept["max_change"] == 0.0                  # T_k = m T_{k-1} + (1 - m) T^_k
    depth = result["geometry_targets"]["depth"]
    assert depth["backbone"] == "oracle_depth" and depth["depth_convention"] == "inverse_depth"
    assert result["result_is_real"] is False and any("test prior" in w for w in result["warnings"])


def _model_repository(root):
    """Tiny random models under the names of the recipe's real ones (what a user's model repository says): one
    tiny SD1.5 folder serves every backbone, each declaring what its real model is (HumanNorm's normal and depth
    models: output kinds; a Canny ControlNet: a tiny ControlNet fed Canny edges), a tiny BLIP-2 the captioner,
    a tiny tri-grid GAN PanoHead, a random VGG16 LPIPS, and a tiny InsightFace pack the face service's ArcFace."""
    from services.face.backends.tiny_insightface import write_tiny_pack
    from services.guidance.tiny_models import write_tiny_models
    from services.inversion.tiny import write_tiny_generators

    config = write_tiny_models(root / "guidance")
    data = yaml.safe_load(config.read_text())
    sd = data["backbones"][0]
    base = {k: sd[k] for k in ("backend", "family", "path", "identity_adapters")}
    canny = {"name": "canny", "kind": "canny", "path": sd["controlnets"][1]["path"]}
    data["backbones"] += [
        {**base, "name": "humannorm_normal", "output_kind": "normal", "controlnets": [canny]},
        {**base, "name": "humannorm_depth", "output_kind": "depth", "depth_convention": "inverse_depth",
         "controlnets": [canny]},
        {**base, "name": "sd15", "controlnets": sd["controlnets"]},
        {**base, "name": "realistic_vision_40", "controlnets": sd["controlnets"]}]
    data["captioners"] = [{**data["captioners"][0], "name": "blip2", "default": True}]   # the default captioner
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    [folder] = write_tiny_generators(root / "models" / "inversion", names=("tiny-trigrid",))
    shutil.move(folder, folder.parent / "panohead")
    write_random_lpips(root / "models")   # serve inversion's convention: models/lpips/vgg16.pth + vgg.pth
    pack = write_tiny_pack(root / "models" / "face" / "buffalo_l")
    return config, root / "models", pack


SCULPT_TERMS = ("[{kind: reference_mask, weight: 500}, "
                "{kind: reference_normal, target: geometry/reference_normal.npy, weight: 100}, "
                "{kind: reference_depth, target: geometry/reference_depth.npy, weight: 50}, "
                "{kind: sds, variant: isd, backbone: sd15, identity_scale: 1.0, guidance_scale: 100, "
                "t_range: [0.02, 0.98], resolution: 64, controls: [{kind: landmarks, points: 478, scale: 1.0}]}]")
SMALL = {
    "stages.preprocess.crop_size": "64", "stages.geometry.num_steps": "2",
    "stages.invert.steps": "2", "stages.invert.pti_steps": "2", "stages.align.resolution": "64",
    "stages.gan_normals.target_views": "2", "stages.gan_normals.cameras.resolution": "32",
    "stages.to_mesh.texture_size": "64", "stages.to_dmtet.dmtet.grid_resolution": "32",
    "stages.fit_gan_normals.iterations": "2",
    "stages.sculpt.iterations": "2", "stages.sculpt.reference_resolution": "32",
    "stages.sculpt.cameras.resolution": "32", "stages.sculpt.terms": SCULPT_TERMS,
    "stages.to_textured_mesh.texture_size": "64", "stages.texture.num_steps": "2",
    "stages.texture.cameras.resolution": "64",
    "stages.refine.rounds": "2", "stages.refine.num_steps": "10", "stages.refine.reference_resolution": "32",
    "stages.refine.cameras.resolution": "64",
    "stages.turntable.frames": "4", "stages.turntable.size": "32",
    "stages.evaluate.resolution": "64", "stages.evaluate.geometry_resolution": "64",
}


def _astronaut(path):
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


def test_submit_portrait3d_id_runs_every_stage_over_grpc_on_ray(tmp_path):
    config, models, pack = _model_repository(tmp_path)
    options = [a for k, v in SMALL.items() for a in ("--option", f"{k}={v}")]
    photo = _astronaut(tmp_path / "astronaut.png")
    out = job_on_cluster(tmp_path, ["--guidance-config", str(config), "--inversion-models-dir", str(models),
                                    "--face-args", f"--detector auto --recognizer insightface --insightface-dir {pack}"],
                         [str(photo), "--recipe", "portrait3d_id", *options])
    for name in ("caption/caption.json", "geometry/reference_normal.npy", "geometry/reference_depth.npy",
                 "invert/latent.npz", "targets/gan_normals.npz", "export/head.glb", "turntable.gif", "report.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["result_is_real"] is False
    warnings = " ".join(report["warnings"])
    for model in ("humannorm_normal", "sd15", "realistic_vision_40", "panohead", "blip2"):
        assert model in warnings, model
    caption = json.loads((out / "caption" / "caption.json").read_text())
    assert caption["captioner"] == "blip2" and caption["prompt"]
    assert report["texture_inpaint"]["views"] == 15 and report["texture_inpaint"]["photo_kept"]["max_change"] == 0.0
    assert report["geometry_targets"]["depth"]["depth_convention"] == "inverse_depth"
    normal = np.load(out / "geometry" / "reference_normal.npy")
    assert normal.shape == (3, 64, 64) and np.isfinite(normal).all()       # (3, H, W) at the reference crop
    length = np.linalg.norm(normal, axis=0)
    assert (length > 0).mean() > 0.2 and np.allclose(length[length > 0], 1.0, atol=1e-3)   # unit inside the mask
