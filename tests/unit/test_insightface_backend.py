"""The InsightFace backend on the tiny pack: identification, errors, detection, embeddings, IdentityLoss."""

from __future__ import annotations

import hashlib
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from services.common.errors import FailedPrecondition
from services.face.backends.insightface import InsightFacePack, _ModelFile, similarity_transform
from services.face.backends.tiny_insightface import write_tiny_pack
from services.face.config import FaceConfig
from services.core.landmarks import ARCFACE_112

SQUARE = (160, 96, 16)        # x0, y0, side of the bright square in the 240x320 test image
SQUARE_CENTRE = (168.0, 104.0)
# the tiny detector's box: a 64 px square of the 640 px letterbox (scale 2) centred on the square
SQUARE_BOX = (152.0, 88.0, 184.0, 120.0)
FACE_5 = np.array([[140.0, 100.0], [180.0, 98.0], [161.0, 122.0], [145.0, 145.0], [177.0, 144.0]])


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory):
    return write_tiny_pack(tmp_path_factory.mktemp("buffalo_l"), seed=0)


@pytest.fixture(scope="module")
def pack(pack_dir):
    return InsightFacePack.load(pack_dir)


@pytest.fixture(scope="module")
def service(pack_dir):
    from services.face.service import FaceService

    return FaceService(FaceConfig(detector="insightface", recognizer="insightface", insightface_dir=str(pack_dir)))


def square_image(h: int = 240, w: int = 320, x0: int = SQUARE[0], y0: int = SQUARE[1]) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[y0:y0 + SQUARE[2], x0:x0 + SQUARE[2]] = 255
    return img


def texture_image(seed: int = 1) -> np.ndarray:
    """Smooth random RGB texture, values well inside 0..255 (room for finite differences)."""
    import cv2

    small = np.random.default_rng(seed).uniform(64, 192, (30, 40, 3)).astype(np.float32)
    return cv2.resize(small, (320, 240), interpolation=cv2.INTER_CUBIC).clip(64, 192).astype(np.uint8)


def to_chw(img: np.ndarray) -> np.ndarray:
    return img.transpose(2, 0, 1).astype(np.float32) / 255.0


# pack loading -----------------------------------------------------------------------------------------
def test_write_tiny_pack_is_small_and_deterministic(pack_dir, tmp_path):
    names = sorted(p.name for p in pack_dir.iterdir())
    assert names == sorted(["det_10g.onnx", "1k3d68.onnx", "2d106det.onnx", "genderage.onnx", "w600k_r50.onnx"])
    assert sum(p.stat().st_size for p in pack_dir.iterdir()) < 500_000
    again = write_tiny_pack(tmp_path / "again", seed=0)
    assert all((again / n).read_bytes() == (pack_dir / n).read_bytes() for n in names)


def test_pack_identifies_roles_and_is_cached(pack, pack_dir):
    assert {r: f.path.name for r, f in pack.files.items()} == {
        "detector": "det_10g.onnx", "landmarks_68": "1k3d68.onnx", "recognizer": "w600k_r50.onnx"}
    assert InsightFacePack.load(str(pack_dir) + "/.") is pack
    rec = pack.recognizer()
    assert (rec.name, rec.embedding_dim, rec.metric, rec.threshold, rec.differentiable) == \
        ("insightface", 512, "cosine_distance", 0.7, True)
    assert pack.detector() is pack.detector() and pack.recognizer() is rec


def test_roles_found_by_signature_with_file_names_as_tie_break(pack_dir, tmp_path):
    copies = [("det_10g.onnx", "a.onnx"), ("1k3d68.onnx", "b.onnx"), ("2d106det.onnx", "c.onnx"),
              ("genderage.onnx", "d.onnx"), ("w600k_r50.onnx", "aaa.onnx"), ("w600k_r50.onnx", "glintr100.onnx")]
    for src, dst in copies:
        shutil.copy(pack_dir / src, tmp_path / dst)
    files = InsightFacePack.load(tmp_path).files
    assert {r: f.path.name for r, f in files.items()} == {
        "detector": "a.onnx", "landmarks_68": "b.onnx", "recognizer": "glintr100.onnx"}


def test_missing_recognizer_is_a_failed_precondition_naming_it(pack_dir, tmp_path):
    for name in ("det_10g.onnx", "1k3d68.onnx", "2d106det.onnx", "genderage.onnx"):
        shutil.copy(pack_dir / name, tmp_path / name)
    pack = InsightFacePack.load(tmp_path)
    assert pack.detector().name == "insightface"   # the detector half still works
    with pytest.raises(FailedPrecondition) as info:
        pack.recognizer()
    msg = info.value.message
    for part in (str(tmp_path.resolve()), "recognizer", "w600k_r50.onnx", "glintr100.onnx", "buffalo_l", "antelopev2"):
        assert part in msg
    assert info.value.reason == "MODELS_MISSING"
    from services.face.service import FaceService

    with pytest.raises(FailedPrecondition, match="w600k_r50.onnx"):
        FaceService(FaceConfig(detector="insightface", recognizer="insightface", insightface_dir=str(tmp_path)))


def test_unreadable_file_and_missing_folder(pack_dir, tmp_path):
    (tmp_path / "w600k_r50.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(FailedPrecondition, match="w600k_r50.onnx is not a readable ONNX model"):
        InsightFacePack.load(tmp_path).recognizer()
    with pytest.raises(FailedPrecondition, match="does not exist"):
        InsightFacePack.load(tmp_path / "nowhere")


def test_input_normalisation_rule():
    def rule(nodes, bn_data):
        return _ModelFile(None, [], [], nodes).has_input_normalisation(bn_data)

    assert rule(["Sub_0", "Mul_1", "Conv_2"], False)                 # mxnet-style graph: feed raw pixels
    assert rule(["_minus0", "_mul0"], False)
    assert not rule(["Conv_0", "BatchNormalization_1", "PRelu_2"], False)  # w600k_r50-style: (x - 127.5) / 127.5
    assert rule(["bn_data", "conv0"], True) and not rule(["bn_data", "conv0"], False)


def test_model_records_carry_sha256(pack, pack_dir):
    records = pack.detector().models() + pack.recognizer().models()
    assert [(m.role, m.name) for m in records] == [
        ("detector", "det_10g.onnx"), ("landmarks_68", "1k3d68.onnx"), ("recognizer", "w600k_r50.onnx")]
    for m in records:
        assert m.backend == "insightface"
        assert m.sha256 == hashlib.sha256((pack_dir / m.name).read_bytes()).hexdigest()[:16]


# detection and landmarks -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(240, 320), (320, 240)])   # letterbox fills width, then height
def test_detector_finds_the_bright_square(pack, shape):
    det = pack.detector()
    dets = det.detect(square_image(*shape), upsample=1)
    assert len(dets) == 1
    d = dets[0]
    x, y = SQUARE_CENTRE
    assert d.box[0] < x < d.box[2] and d.box[1] < y < d.box[3]
    np.testing.assert_allclose(d.box, SQUARE_BOX, atol=1.0)
    assert 0.5 <= d.score <= 1.0 and det.default_min_score == 0.5
    assert d.landmarks_5.shape == (5, 2)
    assert (d.landmarks_5 > d.box[:2]).all() and (d.landmarks_5 < d.box[2:]).all()
    lm = det.landmarks_68(square_image(*shape), d)
    assert lm.shape == (68, 2) and np.isfinite(lm).all()
    margin = 0.75 * (d.box[2] - d.box[0])   # the landmark crop spans 1.5x the box
    assert (lm > d.box[:2] - margin).all() and (lm < d.box[2:] + margin).all()


def test_detector_black_image_and_two_squares(pack):
    det = pack.detector()
    assert det.detect(np.zeros((240, 320, 3), np.uint8), 0) == []
    img = square_image() | square_image(x0=64, y0=32)
    centres = sorted(((d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2) for d in det.detect(img, 0))
    np.testing.assert_allclose(centres, [(72, 40), SQUARE_CENTRE], atol=1.0)


def test_detector_is_thread_safe(pack):
    det, img = pack.detector(), square_image()
    with ThreadPoolExecutor(4) as pool:
        boxes = list(pool.map(lambda _: det.detect(img, 0)[0].box, range(8)))
    assert all(np.array_equal(b, boxes[0]) for b in boxes)


# embeddings --------------------------------------------------------------------------------------------
def test_similarity_transform_recovers_a_known_one():
    angle, scale, t = 0.3, 1.7, np.array([5.0, -3.0])
    R = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    M = similarity_transform(FACE_5, FACE_5 @ R.T + t)
    np.testing.assert_allclose(M, np.concatenate([R, t[:, None]], 1), atol=1e-9)


def test_embed_and_embed_torch_agree(pack):
    rec = pack.recognizer()
    img = texture_image()
    raw = rec.embed(img, None, FACE_5)
    assert raw.shape == (512,) and raw.dtype == np.float32
    x = torch.from_numpy(np.stack([to_chw(img), to_chw(square_image())]))
    lms = np.stack([FACE_5, FACE_5 + 10])
    emb = rec.embed_torch(x, torch.as_tensor(lms, dtype=torch.float32)).detach().numpy()
    assert emb.shape == (2, 512)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert float(np.dot(raw / np.linalg.norm(raw), emb[0])) > 0.999
    raw2 = rec.embed(square_image(), None, FACE_5 + 10)
    assert float(np.dot(raw2 / np.linalg.norm(raw2), emb[1])) > 0.999


def test_aligned_crop_puts_landmarks_on_the_arcface_template(pack):
    rec = pack.recognizer()
    M = rec.align(FACE_5)
    mapped = FACE_5 @ M[:, :2].T + M[:, 2]
    assert np.abs(mapped - ARCFACE_112).max() < 6.0   # a similarity fit of a roughly frontal layout


# IdentityLoss --------------------------------------------------------------------------------------------
def test_identity_loss_per_image(service, pack):
    rec = pack.recognizer()
    ref = np.random.default_rng(3).normal(size=512).astype(np.float32)
    images = np.stack([to_chw(square_image()), np.zeros((3, 240, 320), np.float32), to_chw(texture_image())])
    out = service.identity_loss(images, ref, landmarks=[None, None, FACE_5])
    assert out.face_found == [True, False, True]
    assert out.loss.shape == (3,) and out.grad.shape == images.shape
    assert out.loss[1] == 0 and not out.grad[1].any()          # nothing detected: no loss, no gradient
    assert out.grad[0].any() and out.grad[2].any()
    lm_square = pack.detector().detect(square_image(), 0)[0].landmarks_5
    emb = rec.embed_torch(torch.from_numpy(images[[0, 2]]), torch.as_tensor(np.stack([lm_square, FACE_5]),
                                                                             dtype=torch.float32))
    want = 1 - (emb * torch.from_numpy(ref / np.linalg.norm(ref))).sum(1)
    np.testing.assert_allclose(out.loss[[0, 2]], want.detach().numpy(), atol=1e-5)
    assert ((out.loss[[0, 2]] >= 0) & (out.loss[[0, 2]] <= 2)).all()


def test_identity_loss_gradient_matches_finite_differences(service, pack):
    """The service's d loss / d image against a central difference along a random direction.

    The difference runs in float64 on the same torch path (embed_torch with a float64 copy of the
    OnnxModule): in float32 the loss is too coarse, and PRelu kinks make large steps inexact. The service
    computes in float32, where rounding can put a pre-activation within ~1e-5 of zero on the other side of
    its kink, so its gradient is compared with the float64 one by an aggregate measure.
    """
    rec = pack.recognizer()
    rng = np.random.default_rng(5)
    ref = rng.normal(size=512)
    img = to_chw(texture_image(seed=2))[None]
    out = service.identity_loss(img, ref.astype(np.float32), landmarks=[FACE_5])
    ref_t = torch.from_numpy(ref / np.linalg.norm(ref))
    lm = torch.from_numpy(FACE_5[None])

    def loss64(x: np.ndarray | torch.Tensor) -> torch.Tensor:
        emb = rec.embed_torch(torch.as_tensor(x), lm)
        return 1 - (emb[0] * ref_t).sum()

    x64 = torch.from_numpy(img.astype(np.float64)).requires_grad_(True)
    loss = loss64(x64)
    loss.backward()
    grad64 = x64.grad.numpy()
    direction = rng.normal(size=img.shape)
    eps = 1e-6
    x = img.astype(np.float64)
    numeric = float(loss64(x + eps * direction) - loss64(x - eps * direction)) / (2 * eps)
    analytic = float((grad64 * direction).sum())
    assert abs(numeric) > 1e-3
    assert abs(analytic - numeric) / abs(numeric) < 1e-2

    assert abs(float(loss.detach()) - out.loss[0]) < 1e-5
    g32 = out.grad[0].astype(np.float64).ravel()
    assert np.linalg.norm(g32 - grad64.ravel()) / np.linalg.norm(grad64) < 0.05
    assert float(g32 @ grad64.ravel()) / (np.linalg.norm(g32) * np.linalg.norm(grad64)) > 0.999


def test_analyze_and_compare_on_the_tiny_pack(service):
    result = service.analyze(square_image())
    assert len(result.faces) == 1
    face = result.faces[0]
    np.testing.assert_allclose(face.box, SQUARE_BOX, atol=1.0)
    assert face.embedding.shape == (512,) and abs(np.linalg.norm(face.embedding) - 1) < 1e-5
    assert [m.name for m in result.models] == ["det_10g.onnx", "1k3d68.onnx", "w600k_r50.onnx"]
    same = service.compare(square_image(), face.embedding)
    assert same.same_person and same.metric == "cosine_distance" and same.distance < 1e-3


def test_backend_names_come_from_the_registries():
    """FaceConfig, the factory and the --detector / --recognizer choices all read one registry per role;
    an unknown name fails naming the field."""
    import argparse

    from pydantic import ValidationError

    from services.common.errors import InvalidArgument
    from services.face.backends import DETECTORS, RECOGNIZERS, load_detector
    from services.face.cli import add_backend_arguments

    assert DETECTORS.names() == ["auto", "dlib", "insightface", "mediapipe"]   # mediapipe detects; dlib recognises
    assert RECOGNIZERS.names() == ["adaface", "cosface", "dlib", "insightface"]
    for field in ("detector", "recognizer"):
        with pytest.raises(ValidationError) as info:
            FaceConfig(**{field: "nonesuch"})
        assert info.value.errors()[0]["loc"] == (field,) and "nonesuch" in str(info.value)
    with pytest.raises(InvalidArgument) as err:
        load_detector(FaceConfig.model_construct(detector="nonesuch"))
    assert err.value.field == "detector"
    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    choices = {a.dest: a.choices for a in parser._actions if a.dest in ("detector", "recognizer")}
    assert choices == {"detector": DETECTORS.names(), "recognizer": RECOGNIZERS.names()}


def test_face_client_import_loads_no_backend():
    import subprocess
    import sys

    from services.common.process import ROOT

    code = ("import sys, services.face.client, services.face.cli; "
            "print(*(m in sys.modules for m in ('torch', 'diffusers', 'cv2', 'dlib', 'onnxruntime')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"] * 5
