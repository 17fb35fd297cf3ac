"""IdentityLoss over gRPC: a `headforge serve face --insightface-dir` process with the tiny pack
(random weights in the real buffalo_l layout: the numbers test plumbing, not face recognition)."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.process import ServiceProcess
from services.face.backends.tiny_insightface import write_tiny_pack
from services.face.client import GrpcFaceClient
from services.face.config import FaceConfig
from services.face.service import InProcessFaceClient
from tests.unit.test_insightface_backend import FACE_5, square_image, texture_image, to_chw


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory):
    return write_tiny_pack(tmp_path_factory.mktemp("models") / "buffalo_l")


@pytest.fixture(scope="module")
def clients(pack_dir, tmp_path_factory):
    server = ServiceProcess(["face", "--port", "0", "--insightface-dir", str(pack_dir)],
                            tmp_path_factory.mktemp("logs") / "face-insightface.log")
    remote = GrpcFaceClient(server.address)
    remote.wait_ready()
    local = InProcessFaceClient(config=FaceConfig(detector="insightface", recognizer="insightface",
                                                  insightface_dir=str(pack_dir)))
    yield local, remote
    remote.close()
    server.stop()


def test_identity_loss_same_over_both_transports(clients):
    local, remote = clients
    assert remote.describe().identity_loss_available and remote.describe().embedding_dim == 512
    ref = remote.analyze(square_image()).faces[0].embedding
    images = np.stack([to_chw(square_image()), to_chw(texture_image()), np.zeros((3, 240, 320), np.float32)])
    want = local.identity_loss(images, ref, [None, FACE_5, None])
    got = remote.identity_loss(images, ref, [None, FACE_5, None])
    assert got.face_found == want.face_found == [True, True, False]
    np.testing.assert_allclose(got.loss, want.loss, atol=1e-6)
    np.testing.assert_allclose(got.grad, want.grad, atol=1e-6)
    assert got.loss[0] < 1e-4, "the reference came from the same image"
    assert got.grad[1].any() and not got.grad[2].any()


def test_identity_loss_bad_inputs_over_grpc(clients):
    from services.common.errors import InvalidArgument

    _, remote = clients
    good = np.zeros((1, 3, 64, 64), np.float32)
    for images, ref, field in [
        (np.zeros((1, 3, 16, 16), np.float32), np.ones(512), "images.shape"),
        (np.full((1, 3, 64, 64), np.nan, np.float32), np.ones(512), "images"),
        (good, np.ones(128), "reference_embedding.shape"),
        (good, np.zeros(512), "reference_embedding"),
    ]:
        with pytest.raises(InvalidArgument) as info:
            remote.identity_loss(images, ref)
        assert info.value.violations[0].field == field
