"""id_to_3d end to end, as in production:
- the closed loop (a TEST on the oracle prior, never a result): the recipe's own geometry and texture stages, from
  the known head's neutral variant, with one random expression code per step and the expression text selecting
  which of three known variants the oracle shows: each code's surface moves on its own (Chamfer per code to every
  variant), and the texture stages bring the colours towards the head's albedo;
- `headforge submit --recipe id_to_3d` with two photos of one person (one held out) on a `headforge cluster` whose
  model repository names the recipe's backbone (realistic_vision_faceid) but points it at the tiny random SD with
  an IP-Adapter FaceID, the expression adapter, a diffusers-format normal LoRA and a kohya-format albedo LoRA, two
  tiny Radiance .hdr environment maps, and a face service recognising with a tiny InsightFace pack (512-d): every
  stage runs over gRPC on Ray and the artifacts of the method (one GLB per expression with PBR materials, the
  model's NPZ, the turntable, the evaluation over the paper's grid of views against the held-out photo) are
  fetched, report.json flagging the test models."""

from __future__ import annotations

import io
import json

import numpy as np
import yaml
from PIL import Image

from tests.helpers import job_on_cluster


def test_closed_loop_moves_each_expression_code_on_its_own_and_textures_the_head(tmp_path):
    """Shrunk for make test (40 geometry and 30 texture steps; the check's own figures, full size, are in the
    README): the codes start as one surface (the known neutral head) and leave it each its own way, the neutral
    code staying nearest the neutral variant; the texture stages take the grey albedo towards the head's."""
    from orchestrator.closed_loop_papers import run_id_to_3d

    small = {"stages.geometry.iterations": "40", "stages.texture_diffuse.iterations": "24",
             "stages.texture_full.iterations": "4", "stages.texture_photoreal.iterations": "2"}
    result = run_id_to_3d(tmp_path, small)
    assert result["state"] == "succeeded", result["error"]
    gt = result["ground_truth"]
    before, geometry, after = gt["before"]["expressions"], gt["after_geometry"]["expressions"], gt["after"]
    assert [geometry[t]["code"] for t in ("neutral", "smile", "mouth open")] == [0, 1, 2]
    assert len({json.dumps(before[t]["chamfer_to"]) for t in before}) == 1          # one surface at the start
    assert len({json.dumps(geometry[t]["chamfer_to"]) for t in geometry}) == 3      # three after: each code its own
    assert geometry["neutral"]["recovered"], geometry
    assert after["psnr_db"] > gt["after_geometry"]["psnr_db"] + 0.5, gt               # grey -> the head's albedo
    assert result["result_is_real"] is False


def _hdr_maps(folder):
    """Two tiny Radiance .hdr maps (a warm sky and a cool one), as Poly Haven's HDRIs lie in a folder."""
    import cv2

    folder.mkdir(parents=True)
    for name, bgr in (("warm.hdr", (0.6, 0.9, 1.4)), ("cool.hdr", (1.4, 1.0, 0.7))):
        sky = np.ones((16, 32, 3), np.float32) * np.asarray(bgr, np.float32)
        sky[:4, 10:14] = 20.0                                              # a sun
        cv2.imwrite(str(folder / name), sky)


def _model_repository(root):
    """The tiny SD under the recipe's backbone name with everything ID-to-3D conditions on, the face service's
    512-d InsightFace pack and the environment maps under the models directory."""
    from services.face.backends.tiny_insightface import write_tiny_pack
    from services.guidance.tiny_models import write_tiny_models

    config = write_tiny_models(root / "guidance")
    data = yaml.safe_load(config.read_text())
    sd = data["backbones"][0]
    albedo = {"name": "albedo", "path": "lora-albedo-kohya-tiny", "weight_name": "albedo_lora.safetensors",
              "output_kind": "albedo"}
    data["backbones"].append({**{k: sd[k] for k in ("backend", "family", "path", "identity_adapters",
                                                    "expression_adapters")},
                              "name": "realistic_vision_faceid", "loras": [*sd["loras"], albedo]})
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    _hdr_maps(root / "models" / "envmaps")
    pack = write_tiny_pack(root / "models" / "face" / "buffalo_l")
    return config, root / "models", pack


def _term(output: str, lora: str | None) -> str:
    loras = f"loras: [{{name: {lora}}}], " if lora else ""
    return (f"[{{kind: sds, output: {output}, backbone: realistic_vision_faceid, {loras}identity_scale: 1.0, "
            "expression_scale: 1.0, guidance_scale: 10.0, resolution: 64, t_range: [0.05, 0.9]}]")


SMALL = {
    "stages.preprocess.crop_size": "64", "stages.preprocess.holdout_photos": "1",
    "stages.init.texture_size": "64",
    "stages.init.dmtet": ("{grid_resolution: 32, extent: 1.6, max_offset: 0.3, expressions: [neutral, smile, mouth open],"
                          " options: {hash_levels: '4', hash_log2_size: '10'}}"),
    "stages.geometry.iterations": "3", "stages.geometry.cameras.resolution": "32",
    "stages.geometry.terms": _term("normal_camera", "normal"),
    "stages.texture_diffuse.iterations": "2", "stages.texture_diffuse.cameras.resolution": "32",
    "stages.texture_diffuse.terms": _term("rgb", "albedo"),
    "stages.texture_full.iterations": "2", "stages.texture_full.cameras.resolution": "32",
    "stages.texture_full.terms": _term("rgb", "albedo"),
    "stages.texture_photoreal.iterations": "1", "stages.texture_photoreal.cameras.resolution": "32",
    "stages.texture_photoreal.terms": _term("rgb", None),
    "stages.turntable.frames": "4", "stages.turntable.size": "32",
    "stages.evaluate.resolution": "64", "stages.evaluate.geometry_resolution": "64",
    "stages.evaluate.identity_grid": "{yaw: [-65, 65], elevation: [-15, 15], yaw_steps: 2, elevation_steps: 2}",
}


def _photos(folder):
    """The astronaut and her mirror image: two photos of one person."""
    from skimage import data

    paths = []
    for name, image in (("astronaut.png", data.astronaut()), ("astronaut_mirrored.png", data.astronaut()[:, ::-1])):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
        (folder / name).write_bytes(buf.getvalue())
        paths.append(str(folder / name))
    return paths


def test_submit_id_to_3d_runs_every_stage_over_grpc_on_ray(tmp_path):
    import trimesh

    config, models, pack = _model_repository(tmp_path)
    options = [a for k, v in SMALL.items() for a in ("--option", f"{k}={v}")]
    out = job_on_cluster(tmp_path, ["--guidance-config", str(config), "--inversion-models-dir", str(models),
                                    "--face-args", f"--detector auto --recognizer insightface --insightface-dir {pack}"],
                         [*_photos(tmp_path), "--recipe", "id_to_3d", "--prompt", "a photo of a woman", *options])
    for slug in ("neutral", "smile", "mouth_open"):
        glb = out / "export" / f"head_{slug}.glb"
        assert glb.is_file(), slug
        mat = trimesh.load(glb, file_type="glb", force="mesh").visual.material
        assert mat.baseColorTexture is not None and mat.metallicRoughnessTexture is not None
    assert (out / "export" / "head.glb").read_bytes() == (out / "export" / "head_neutral.glb").read_bytes()
    for name in ("export/head.npz", "turntable.gif", "report.json", "metrics.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["result_is_real"] is False and "realistic_vision_faceid" in " ".join(report["warnings"])
    assert report["expressions"]["texts"] == ["neutral", "smile", "mouth open"]
    grid = report["metrics"]["identity_grid"]
    assert grid["references"] == 1 and grid["reference_source"] == "held_out_photos" and len(grid["views"]) == 4
