"""The `headforge` command as a user runs it."""

from __future__ import annotations

import json

from tests.conftest import png_bytes
from tests.helpers import headforge


def test_face_analyze_json_and_images(tmp_path, astronaut):
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(png_bytes(astronaut))
    out = tmp_path / "faces"
    r = headforge("face", "analyze", str(photo), "--json", "--out", str(out))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["image_width"] == 512 and len(report["faces"]) == 1
    face = report["faces"][0]
    assert len(face["landmarks_68"]) == 68 and len(face["embedding"]) == 128 and len(face["eg3d_label"]) == 25
    assert {p.name for p in out.iterdir()} == {"face0_aligned_crop.png", "face0_head_mask.png",
                                               "face0_face_mask.png", "face0_crop_head_mask.png"}


def test_face_analyze_bad_input_exits_nonzero_with_a_message(tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    r = headforge("face", "analyze", str(junk))
    assert r.returncode == 1 and "INVALID_ARGUMENT" in r.stderr and "Traceback" not in r.stderr
    r = headforge("face", "analyze", str(tmp_path / "missing.png"))
    assert r.returncode == 1 and "missing.png" in r.stderr




QUICK = ("--option", "stages.fit.fit_steps=2", "--option", "stages.turntable.frames=4", "--no-progress")


def test_generate_texture_size_reaches_the_glb(tmp_path, astronaut):
    import trimesh

    photo = tmp_path / "astronaut.png"
    photo.write_bytes(png_bytes(astronaut))
    r = headforge("generate", str(photo), "--out", str(tmp_path / "out"), "--texture-size", "256", *QUICK)
    assert r.returncode == 0, r.stderr
    mesh = trimesh.load(tmp_path / "out" / "asset.glb", force="mesh")
    assert mesh.visual.material.baseColorTexture.size == (256, 256)
    assert json.loads((tmp_path / "out" / "report.json").read_text())["texture"]["size"] == 256
    assert "same person at " in r.stdout and " of 5 views" in r.stdout


def test_generate_face_index_beyond_the_faces_fails_cleanly(tmp_path, astronaut):
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(png_bytes(astronaut))
    out = tmp_path / "out"
    r = headforge("generate", str(photo), "--out", str(out), "--face-index", "5", *QUICK)
    assert r.returncode == 1 and "has 1 face(s)" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_generate_flags_a_recipe_cannot_take_fail_cleanly(tmp_path):
    r = headforge("generate", "--recipe", "analytic_prior", "--texture-size", "256", "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "texture_size" in r.stderr and "Traceback" not in r.stderr


def test_generate_face_flags_configure_the_face_service(tmp_path, astronaut):
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(png_bytes(astronaut))
    r = headforge("generate", str(photo), "--out", str(tmp_path / "o"), "--detector", "insightface", *QUICK)
    assert r.returncode == 1 and "insightface_dir" in r.stderr and "Traceback" not in r.stderr
    r = headforge("generate", str(photo), "--out", str(tmp_path / "o"), "--max-image-pixels", "1000", *QUICK)
    assert r.returncode == 1 and "Traceback" not in r.stderr and not (tmp_path / "o").exists()
