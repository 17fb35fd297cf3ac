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


