"""The 3DDFA-V2 backend on tiny folders in the real file formats (random weights: the numbers test the
plumbing and the geometry conventions, not face alignment)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from pydantic import ValidationError

from services.common.errors import FailedPrecondition
from services.face.backends import tddfa
from services.face.backends.tiny_tddfa import tiny_bfm, tiny_param_stats, write_tiny_tddfa
from services.face.config import FaceConfig

BOX = (100.0, 90.0, 200.0, 210.0)   # x0, y0, x1, y1 of a face box in a 300x320 image


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_tddfa(tmp_path_factory.mktemp("tddfa_v2"))


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (300, 320, 3), dtype=np.uint8)


def test_tiny_folder_loads_and_predicts_deterministically(tiny_dir):
    model = tddfa.Tddfa(tiny_dir, trust_pickles=True)
    a, b = model.predict(image(), BOX), model.predict(image(), BOX)
    assert a.landmarks_image.shape == (68, 3) and a.shape_model.shape == (68, 3)
    assert np.isfinite(a.landmarks_image).all()
    np.testing.assert_array_equal(a.landmarks_image, b.landmarks_image)
    np.testing.assert_allclose(a.rotation @ a.rotation.T, np.eye(3), atol=1e-2)   # P2sRt: nearly orthonormal
    # the tiny model's mean pose puts the face over the box
    x, y = a.landmarks_image[:, 0], a.landmarks_image[:, 1]
    assert BOX[0] - 20 < x.min() < x.max() < BOX[2] + 20 and BOX[1] - 20 < y.min() < y.max() < BOX[3] + 20
    records = model.models()
    assert [r.role for r in records] == ["landmarks_3d", "landmarks_3d_bfm"]
    assert all(r.provenance == "random_weights" for r in records)
    assert "MIT" in records[0].license and "academic" in records[1].license


def test_pickles_refused_unless_trusted(tiny_dir):
    with pytest.raises(FailedPrecondition, match="trust_pickles"):
        tddfa.Tddfa(tiny_dir)
    with pytest.raises(ValidationError, match="--trust-pickles"):
        FaceConfig(landmarks_3d="tddfa_v2", tddfa_dir=str(tiny_dir))
    assert FaceConfig(landmarks_3d="tddfa_v2", tddfa_dir=str(tiny_dir), trust_pickles=True).tddfa_dir


def test_unpickler_admits_only_arrays(tmp_path):
    import pickle

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"mean": np.zeros(62), "x": shutil.rmtree}))
    with pytest.raises(pickle.UnpicklingError, match="refusing shutil.rmtree"):
        tddfa.read_pickle(path)


def test_npz_conversion_round_trips(tiny_dir, tmp_path):
    folder = shutil.copytree(tiny_dir, tmp_path / "copy")
    assert tddfa.main(["convert", str(folder)]) == 2, "converting without --trust-pickles is refused"
    assert tddfa.main(["convert", str(folder), "--trust-pickles"]) == 0
    for stem, want in ((tddfa.PARAM_STEM, tiny_param_stats()), (tddfa.BFM_STEM, tiny_bfm())):
        got = tddfa.read_arrays(folder / "configs" / f"{stem}.npz")
        assert sorted(got) == sorted(want)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
            assert got[key].dtype == want[key].dtype
    for pkl in (folder / "configs").glob("*.pkl"):
        pkl.unlink()
    model = tddfa.Tddfa(folder)   # npz only: no trust needed
    want = tddfa.Tddfa(tiny_dir, trust_pickles=True).predict(image(), BOX).landmarks_image
    np.testing.assert_array_equal(model.predict(image(), BOX).landmarks_image, want)
    assert FaceConfig(landmarks_3d="tddfa_v2", tddfa_dir=str(folder)).landmarks_3d == "tddfa_v2"


def _rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    y, p, r = np.radians([yaw_deg, pitch_deg, roll_deg])
    Ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    Rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return Ry @ Rx @ Rz


def test_known_rotation_gives_the_analytic_landmarks(tmp_path):
    """A net whose output is a constant we choose (zero weights, that bias): the backend must return
    R @ (u + W a) + t mapped to the image exactly as 3DDFA_V2's similar_transform does."""
    R, s, t = _rotation(25.0, -10.0, 5.0), 0.5, np.array([58.0, 66.0, 3.0])
    a_shp, a_exp = np.linspace(-0.5, 0.5, 40), np.linspace(0.3, -0.3, 10)
    params = np.r_[np.c_[s * R, t].reshape(-1), a_shp, a_exp]
    stats = tiny_param_stats()
    folder = write_tiny_tddfa(tmp_path / "known", constant_output=(params - stats["mean"]) / stats["std"])
    got = tddfa.Tddfa(folder, trust_pickles=True).predict(image(3), BOX)

    bfm = tiny_bfm()
    kp = bfm["keypoints"].reshape(68, 3)                      # x, y, z indices of each landmark
    u, W_shp, W_exp = bfm["u"][:, 0], bfm["w_shp"], bfm["w_exp"]
    model = (u[kp] + W_shp[kp] @ a_shp + W_exp[kp] @ a_exp)  # (68, 3)
    crop = model @ (s * R).T + t                              # crop frame, y up
    sx, sy, ex, ey = tddfa.roi_box_from_bbox(BOX)
    side = int(((BOX[2] - BOX[0]) + (BOX[3] - BOX[1])) / 2 * 1.58)
    assert np.isclose(ex - sx, side) and np.isclose((sy + ey) / 2, (BOX[1] + BOX[3]) / 2 + 0.14 * 110.0)
    k = side / 120.0
    want = np.c_[(crop[:, 0] - 1) * k + sx, (120.0 - crop[:, 1]) * k + sy, (crop[:, 2] - 1) * k]
    want[:, 2] -= want[:, 2].min()
    np.testing.assert_allclose(got.landmarks_image, want, rtol=0, atol=2e-3)
    np.testing.assert_allclose(got.rotation, R, atol=1e-5)
    np.testing.assert_allclose(got.scale, s, rtol=1e-5)
    np.testing.assert_allclose(got.shape_model, model, atol=1e-3)


def test_known_rotation_reaches_the_service_pose(tmp_path, astronaut):
    """The service's yaw/pitch/roll come from 3DDFA-V2's R (a frontal R: a near-frontal pose; a turned R:
    the same turn), and landmarks_3d_68 are the BFM shape in head units."""
    from services.face.service import FaceService

    stats = tiny_param_stats()
    poses = {}
    for yaw in (0.0, 30.0):
        params = stats["mean"].copy()
        params[:12] = np.c_[0.5 * _rotation(yaw, 0.0, 0.0), [60.0, 70.0, 0.0]].reshape(-1)
        folder = write_tiny_tddfa(tmp_path / f"yaw{yaw:g}", constant_output=(params - stats["mean"]) / stats["std"])
        service = FaceService(FaceConfig(detector="dlib", landmarks_3d="tddfa_v2", tddfa_dir=str(folder),
                                         trust_pickles=True))
        face = service.analyze(astronaut).faces[0]
        poses[yaw] = face.pose
        assert face.landmarks_3d_68.shape == (68, 3) and np.isfinite(face.landmarks_3d_68).all()
        width = np.ptp(face.landmarks_3d_68[:, 0])
        assert 0.8 < width < 2.0, "head units: a face about 14 cm wide"
        assert "tddfa_v2" in {m.backend for m in service.describe().models}
    # the astronaut is off-centre, so the ray correction adds a few degrees; the 30 degree turn stays
    assert abs(poses[0.0].yaw) < 8 and abs(poses[30.0].yaw - poses[0.0].yaw - 30.0) < 1.0


@pytest.mark.parametrize("breakage", ["no_dir", "no_onnx", "no_bfm"])
def test_bad_folder_is_a_config_error(tiny_dir, tmp_path, breakage):
    folder = tmp_path / "bad"
    if breakage != "no_dir":
        shutil.copytree(tiny_dir, folder)
        (folder / ("weights/mb1_120x120.onnx" if breakage == "no_onnx" else "configs/bfm_noneck_v3.pkl")).unlink()
    with pytest.raises(ValidationError, match="mb1_120x120.onnx|bfm_noneck_v3|does not exist"):
        FaceConfig(landmarks_3d="tddfa_v2", tddfa_dir=str(folder), trust_pickles=True)
    with pytest.raises(ValidationError, match="tddfa_dir is required"):
        FaceConfig(landmarks_3d="tddfa_v2")


def test_cli_flags_build_the_config(tiny_dir):
    import argparse

    from services.face.cli import add_serve_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--tddfa-dir", str(tiny_dir), "--trust-pickles"]))
    assert cfg.landmarks_3d == "tddfa_v2" and cfg.trust_pickles
    assert config_from_args(parser.parse_args([])).landmarks_3d == "project"
