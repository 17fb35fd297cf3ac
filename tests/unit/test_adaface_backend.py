"""The AdaFace recogniser on the tiny ONNX (random weights in the export's format: plumbing, not recognition),
in-process and over gRPC."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from services.common.errors import FailedPrecondition
from services.face.backends.adaface import AdaFaceRecognizer
from services.face.backends.tiny_adaface import write_tiny_adaface
from services.face.config import FaceConfig


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    return write_tiny_adaface(tmp_path_factory.mktemp("adaface"))


@pytest.fixture(scope="module")
def service(onnx_path):
    from services.face.service import FaceService

    return FaceService(FaceConfig(detector="dlib", recognizer="adaface", adaface_onnx=str(onnx_path)))


def test_tiny_onnx_loads_and_embeds(onnx_path, astronaut):
    rec = AdaFaceRecognizer(onnx_path)
    assert rec.embedding_dim == 512 and rec.metric == "cosine_distance" and rec.threshold == 0.7
    lm5 = np.array([[190.0, 110.0], [230.0, 108.0], [212.0, 135.0], [195.0, 158.0], [228.0, 157.0]])
    a = rec.embed(astronaut, None, lm5)
    assert a.shape == (512,) and a.dtype == np.float32 and np.isfinite(a).all()
    assert abs(np.linalg.norm(a) - 1.0) < 1e-4, "AdaFace's first output is L2-normalised"
    np.testing.assert_array_equal(a, rec.embed(astronaut, None, lm5))
    assert not np.allclose(a, rec.embed(astronaut, None, lm5 + 15.0)), "the crop follows the landmarks"
    record = rec.models()[0]
    assert (record.role, record.backend, record.provenance) == ("recognizer", "adaface", "random_weights")
    assert record.license.startswith("MIT")


def test_same_image_twice_is_cosine_one(service, astronaut):
    face = service.analyze(astronaut).faces[0]
    assert face.embedding.shape == (512,) and abs(np.linalg.norm(face.embedding) - 1) < 1e-5
    r = service.compare(astronaut, astronaut)
    assert r.cosine_similarity == pytest.approx(1.0, abs=1e-6) and r.same_person and r.metric == "cosine_distance"


def test_describe_says_adaface(service):
    d = service.describe()
    assert (d.identity_backend, d.embedding_dim, d.metric, d.same_person_threshold) == ("adaface", 512,
                                                                                        "cosine_distance", 0.7)
    assert not d.identity_loss_available
    licences = {m.backend: m.license for m in d.models}
    assert licences["adaface"].startswith("MIT") and licences["dlib"]


def test_config_errors(tmp_path):
    with pytest.raises(ValidationError, match="adaface_onnx is required"):
        FaceConfig(recognizer="adaface")
    with pytest.raises(ValidationError, match="is not a file"):
        FaceConfig(recognizer="adaface", adaface_onnx=str(tmp_path / "missing.onnx"))
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")
    with pytest.raises(FailedPrecondition, match="not a readable ONNX"):
        AdaFaceRecognizer(tmp_path / "broken.onnx")


def test_compare_and_describe_over_grpc(onnx_path, astronaut, hopper, tmp_path):
    from services.common.process import ServiceProcess
    from services.face.client import GrpcFaceClient

    server = ServiceProcess(["face", "--port", "0", "--detector", "dlib", "--adaface-onnx", str(onnx_path)],
                            tmp_path / "face-adaface.log")
    client = GrpcFaceClient(server.address, timeout_s=60)
    try:
        client.wait_ready()
        d = client.describe()
        assert (d.identity_backend, d.embedding_dim) == ("adaface", 512)
        assert {m.backend: m.license for m in d.models}["adaface"].startswith("MIT")
        same = client.compare(astronaut, astronaut)
        assert same.cosine_similarity == pytest.approx(1.0, abs=1e-6) and same.same_person
        other = client.compare(astronaut, hopper)
        assert other.metric == "cosine_distance" and other.threshold == pytest.approx(0.7)   # float32 on the wire
        assert -1.0 <= other.cosine_similarity < 1.0
    finally:
        client.close()
        server.stop()
