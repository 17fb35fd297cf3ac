"""The CosFace recogniser (the generic ONNX recogniser with CosFace's spec) on the tiny ONNX in the layout of
InsightFace's glint360k_cosface_r100 (random weights: plumbing, not recognition), in-process and over gRPC;
a file in another layout is refused saying what was expected."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from services.common.errors import FailedPrecondition
from services.face.backends.cosface import SPEC, CosFaceRecognizer
from services.face.backends.tiny_cosface import write_tiny_cosface
from services.face.config import FaceConfig

LM5 = np.array([[190.0, 110.0], [230.0, 108.0], [212.0, 135.0], [195.0, 158.0], [228.0, 157.0]])


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return write_tiny_cosface(tmp_path_factory.mktemp("cosface"))


@pytest.fixture(scope="module")
def service(onnx_path):
    from services.face.service import FaceService

    return FaceService(FaceConfig(detector="dlib", recognizer="cosface", cosface_onnx=str(onnx_path)))


def test_tiny_onnx_loads_and_embeds_with_cosface_preprocessing(onnx_path, astronaut):
    rec = CosFaceRecognizer(onnx_path)
    assert (rec.name, rec.embedding_dim, rec.metric, rec.threshold) == ("cosface", 512, "cosine_distance", 0.7)
    assert not rec.differentiable
    a = rec.embed(astronaut, None, LM5)
    assert a.shape == (512,) and a.dtype == np.float32 and np.isfinite(a).all() and np.linalg.norm(a) > 0
    np.testing.assert_array_equal(a, rec.embed(astronaut, None, LM5))
    assert not np.allclose(a, rec.embed(astronaut, None, LM5 + 15.0)), "the crop follows the landmarks"
    # the input is the RGB crop as (x - 127.5) / 127.5 (arcface_torch's inference.py), not BGR
    crop = rec.crop(astronaut, LM5)
    x = rec.input_tensor(crop)
    assert x.shape == (1, 3, 112, 112) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, 0], (crop[..., 0].astype(np.float32) - 127.5) / 127.5)
    assert x.min() >= -1.0 and x.max() <= 1.0
    bgr = rec._session.run(None, {"data": np.ascontiguousarray(x[:, ::-1])})[0][0]
    assert not np.allclose(a, bgr), "the colour order reaches the model"
    record = rec.models()[0]
    assert (record.role, record.backend, record.name, record.provenance) == (
        "recognizer", "cosface", "glint360k_cosface_r100.onnx", "random_weights")
    assert record.license.startswith("non-commercial research") and SPEC.threshold_source.startswith("ours")


def test_analyze_gives_a_unit_512_vector_and_the_same_photo_is_cosine_one(service, astronaut, hopper):
    face = service.analyze(astronaut).faces[0]
    assert face.embedding.shape == (512,) and face.embedding.dtype == np.float32
    assert abs(np.linalg.norm(face.embedding) - 1) < 1e-5 and face.embedding_norm > 0
    r = service.compare(astronaut, astronaut)
    assert r.cosine_similarity == pytest.approx(1.0, abs=1e-6) and r.same_person and r.metric == "cosine_distance"
    other = service.compare(astronaut, hopper)
    assert -1.0 <= other.cosine_similarity < 1.0


def test_describe_says_cosface(service):
    d = service.describe()
    assert (d.identity_backend, d.embedding_dim, d.metric, d.same_person_threshold) == ("cosface", 512,
                                                                                        "cosine_distance", 0.7)
    assert not d.identity_loss_available
    licences = {m.backend: m.license for m in d.models}
    assert licences["cosface"].startswith("non-commercial research") and licences["dlib"]


@pytest.mark.parametrize("layout, got", [({"embedding_dim": 128}, "128"), ({"input_size": 224}, "224")])
def test_a_wrong_layout_is_refused_naming_what_was_expected(tmp_path, layout, got):
    path = write_tiny_cosface(tmp_path, **layout)
    with pytest.raises(FailedPrecondition) as err:
        CosFaceRecognizer(path)
    assert err.value.reason == "MODELS_MISSING"
    message = err.value.message
    assert "not a CosFace recogniser in the expected layout" in message and got in message
    assert "(N, 3, 112, 112) input and (N, 512) first output" in message and "glint360k_cosface_r100" in message


def test_config_errors(tmp_path):
    with pytest.raises(ValidationError, match="cosface_onnx is required"):
        FaceConfig(recognizer="cosface")
    with pytest.raises(ValidationError, match="is not a file"):
        FaceConfig(recognizer="cosface", cosface_onnx=str(tmp_path / "missing.onnx"))
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    with pytest.raises(FailedPrecondition, match="not a readable ONNX"):
        CosFaceRecognizer(tmp_path / "broken.onnx")
    with pytest.raises(FailedPrecondition, match="does not exist"):
        CosFaceRecognizer(tmp_path / "missing.onnx")


def test_cli_flag_selects_cosface(onnx_path):
    import argparse

    from services.face.cli import add_backend_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_backend_arguments(parser)
    config = config_from_args(parser.parse_args(["--detector", "dlib", "--cosface-onnx", str(onnx_path)]))
    assert (config.recognizer, config.cosface_onnx) == ("cosface", str(onnx_path))


def test_compare_and_describe_over_grpc(onnx_path, astronaut, hopper, tmp_path):
    from services.common.process import ServiceProcess
    from services.face.client import GrpcFaceClient

    server = ServiceProcess(["face", "--port", "0", "--detector", "dlib", "--cosface-onnx", str(onnx_path)],
                            tmp_path / "face-cosface.log")
    client = GrpcFaceClient(server.address, timeout_s=60)
    try:
        client.wait_ready()
        d = client.describe()
        assert (d.identity_backend, d.embedding_dim) == ("cosface", 512)
        assert {m.backend: m.license for m in d.models}["cosface"].startswith("non-commercial research")
        same = client.compare(astronaut, astronaut)
        assert same.cosine_similarity == pytest.approx(1.0, abs=1e-6) and same.same_person
        other = client.compare(astronaut, hopper)
        assert other.metric == "cosine_distance" and other.threshold == pytest.approx(0.7)   # float32 on the wire
        assert -1.0 <= other.cosine_similarity < 1.0
    finally:
        client.close()
        server.stop()
