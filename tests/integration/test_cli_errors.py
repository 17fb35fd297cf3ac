"""What a user sees when something is wrong (issue 20, items 4, 6 and 7): one clear line, the right exit
code, never a traceback; `serve` refuses flags that do not apply; `eval` takes a Gaussians output folder."""

from __future__ import annotations

import json
import socket
import tomllib

import numpy as np
import pytest
import yaml

from orchestrator.recipes import BUILTIN
from services.common.process import ROOT
from tests.conftest import png_bytes
from tests.helpers import headforge


def _no_traceback(r) -> None:
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, r.stderr


def test_serve_on_a_busy_port_is_one_error_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = headforge("serve", "render", "--port", str(port), timeout=120)
    assert r.returncode == 2 and f"127.0.0.1:{port}" in r.stderr and "in use" in r.stderr, r.stderr
    _no_traceback(r)


def test_serve_guidance_on_cuda_without_a_cuda_torch_exits_2():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this torch has CUDA: --device cuda is valid here")
    r = headforge("serve", "guidance", "--device", "cuda", "--port", "0", timeout=180)
    assert r.returncode == 2 and "no CUDA support" in r.stderr and "--device" not in r.stdout, r.stderr
    _no_traceback(r)


@pytest.mark.parametrize("flags, named", [
    (["--runtime", "none", "--subject-gpus", "0.5"], "--subject-gpus"),
    (["--guidance", "127.0.0.1:1", "--guidance-config", "guidance.yaml"], "--guidance-config"),
    (["--inversion", "127.0.0.1:1", "--inversion-models-dir", "models"], "--inversion-models-dir"),
    (["--ray-address", "ray://head:10001", "--ray-resource", "fake_gpu=1"], "--ray-resource"),
])
def test_serve_jobs_rejects_flags_that_do_not_apply(tmp_path, flags, named):
    r = headforge("serve", "jobs", "--port", "0", "--store", str(tmp_path / "j.db"),
                  "--artifacts", str(tmp_path / "a"), *flags, timeout=120)
    assert r.returncode == 2 and named in r.stderr and "INVALID_ARGUMENT" in r.stderr, r.stderr
    _no_traceback(r)
    assert not (tmp_path / "j.db").exists(), "refused before opening the store"


def test_serve_jobs_s3_without_s3fs_says_what_to_install(tmp_path):
    pytest.importorskip("fsspec")
    try:
        import s3fs  # noqa: F401
        pytest.skip("s3fs is installed here")
    except ImportError:
        pass
    r = headforge("serve", "jobs", "--port", "0", "--runtime", "none", "--store", str(tmp_path / "j.db"),
                  "--artifacts", "s3://bucket/jobs", timeout=120)
    assert r.returncode == 2 and "s3fs" in r.stderr and "headforge[s3]" in r.stderr, r.stderr
    _no_traceback(r)


def test_version():
    r = headforge("--version", timeout=60)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert r.returncode == 0 and r.stdout.strip() == f"headforge {version}", r.stdout + r.stderr


def test_a_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.png"
    for args in (["face", "analyze", str(missing)], ["submit", str(missing), "--recipe", "fast", "--target", "127.0.0.1:1"],
                 ["generate", "--recipe-file", str(missing)]):
        r = headforge(*args, timeout=120)
        assert r.returncode == 1 and f"file not found: {missing}" in r.stderr, (args, r.stderr)
        assert "Errno" not in r.stderr
        _no_traceback(r)


def test_an_unknown_recipe_field_names_its_path_and_the_allowed_fields(tmp_path):
    recipe = yaml.safe_load((BUILTIN / "analytic_prior.yaml").read_text())
    stage = next(i for i, s in enumerate(recipe["stages"]) if "iterations" in s.get("params", {}))
    recipe["stages"][stage]["params"]["iteratons"] = 5          # a typo
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    r = headforge("generate", "--recipe-file", str(path), "--out", str(tmp_path / "out"), timeout=120)
    assert r.returncode == 1, r.stderr
    assert f"stages[{stage}].params.iteratons" in r.stderr and "unknown field 'iteratons'" in r.stderr, r.stderr
    allowed = r.stderr.split("allowed here:")[1]
    assert "iterations" in allowed and "Extra inputs are not permitted" not in r.stderr
    _no_traceback(r)


def test_a_rotated_photo_says_which_turn_finds_the_face(tmp_path, astronaut):
    """dlib's detector finds upright faces only (the default auto detector's MediaPipe finds this one)."""
    photo = tmp_path / "sideways.png"
    photo.write_bytes(png_bytes(np.ascontiguousarray(np.rot90(astronaut, -1))))   # turned clockwise
    r = headforge("generate", str(photo), "--out", str(tmp_path / "out"), "--no-progress", "--detector", "dlib",
                  timeout=300)
    assert r.returncode == 1 and "no face found" in r.stderr, r.stderr
    assert "turned 90 degrees counter-clockwise" in r.stderr and "rotated" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


def test_eval_on_a_gaussians_output_folder(tmp_path, astronaut):
    """A Gaussians recipe's folder (export/head.ply + report.json, the layout `headforge fetch JOB_ID`
    writes) evaluates like a mesh one. The head comes from the analytic test prior: plumbing, not a result."""
    out = tmp_path / "gaussians"
    r = headforge("generate", "--recipe", "analytic_prior", "--option", "stages.optimise.iterations=5",
                  "--out", str(out), "--no-progress", timeout=300)
    assert r.returncode == 0, r.stderr
    assert (out / "export" / "head.ply").is_file() and not (out / "asset.glb").exists()
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(png_bytes(astronaut))
    r = headforge("eval", str(out), "--reference", str(photo), "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    metrics = json.loads(r.stdout)
    assert {"left_frontal", "left", "right_frontal", "right", "rear"} <= set(metrics["views"])
    assert 0 <= metrics["ssim"] <= 1 and np.isfinite(metrics["psnr_db"])
    empty = tmp_path / "empty"
    empty.mkdir()
    r = headforge("eval", str(empty), "--reference", str(photo), timeout=120)
    assert r.returncode == 1 and "no head asset" in r.stderr and "export/*.ply" in r.stderr, r.stderr
    _no_traceback(r)
