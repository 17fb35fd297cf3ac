"""Model provenance (services/core/models.py): the tiny models `headforge models make-tiny` writes are
reported as random weights by the ordinary loaders, the analytic guidance backbone as a test prior, real
weights with no provenance; and the field survives every proto conversion (gRPC included)."""

from __future__ import annotations

import pytest

from services.core.models import RANDOM_WEIGHTS, RANDOM_WEIGHTS_MARKER, TEST_PRIOR, ModelRecord, folder_provenance


def test_marker_file_sets_the_folder_provenance(tmp_path):
    from services.core.models import mark_random_weights

    assert folder_provenance(tmp_path) == ""
    marker = mark_random_weights(tmp_path, "a test")
    assert marker.name == RANDOM_WEIGHTS_MARKER and "random" in marker.read_text()
    assert folder_provenance(tmp_path / "elsewhere", tmp_path) == RANDOM_WEIGHTS


def test_make_tiny_insightface_pack_is_random_weights_through_the_proto(tmp_path):
    """make-tiny's face part -> FaceService on the pack (the provenance is in each ONNX file's metadata):
    every record random_weights, also after the proto round trip a gRPC client sees."""
    from services.face.cli import write_tiny_models
    from services.face.config import FaceConfig
    from services.face.convert import describe_from_proto, describe_to_proto
    from services.face.service import FaceService

    write_tiny_models(tmp_path)
    pack = tmp_path / "insightface" / "buffalo_l"
    service = FaceService(FaceConfig(detector="insightface", recognizer="insightface", insightface_dir=str(pack)))
    models = service.describe().models
    assert {m.role for m in models} >= {"detector", "recognizer"}
    assert all(m.provenance == RANDOM_WEIGHTS for m in models), models
    again = describe_from_proto(describe_to_proto(service.describe())).models
    assert [m.provenance for m in again] == [m.provenance for m in models]


def test_dlib_models_have_no_provenance(face_service):
    models = face_service.describe().models
    assert models and all(m.provenance == "" for m in models), models


def test_tiny_generator_is_random_weights_through_the_proto(tmp_path):
    from services.inversion.convert import describe_from_proto, describe_to_proto
    from services.inversion.generators.checkpoint import load_generator
    from services.inversion.service import InversionService
    from services.inversion.tiny import write_tiny_generators
    from services.inversion.types import InversionConfig

    (folder,) = write_tiny_generators(tmp_path / "inversion", names=("tiny-triplane",), shape_prior=False)
    assert load_generator(folder).provenance == RANDOM_WEIGHTS
    service = InversionService(InversionConfig(generators={"tiny": str(folder)}, device="cpu", w_stats_samples=16))
    (info,) = service.describe().generators
    assert info.available and info.provenance == RANDOM_WEIGHTS
    (wire,) = describe_from_proto(describe_to_proto(service.describe())).generators
    assert wire.provenance == RANDOM_WEIGHTS and wire.sha256 == info.sha256


def test_tiny_diffusers_backbone_is_random_weights(tiny_guidance_yaml):
    """The tiny SD folder, ControlNets, FaceID adapter and LoRA as make-tiny writes them: every record the
    diffusers loader builds is random_weights."""
    from services.guidance.config import load_config
    from services.guidance.service import GuidanceService

    service = GuidanceService(load_config(tiny_guidance_yaml))
    records = [m for info, _ in service.describe().backbones for m in info.models]
    roles = {m.role for m in records}
    assert {"unet", "vae", "text_encoder"} <= roles and any(r.startswith("controlnet:") for r in roles)
    assert all(m.provenance == RANDOM_WEIGHTS for m in records), records


@pytest.fixture
def grpc_guidance(monkeypatch):
    from services.common.server import ServerConfig, start
    from services.guidance.client import GrpcGuidanceClient
    from services.guidance.config import GuidanceConfig
    from services.guidance.service import GuidanceService
    from services.guidance.servicer import register

    monkeypatch.delenv("HEADFORGE_TOKENS", raising=False)
    running = start("guidance", ServerConfig(port=0, grace_s=0, max_workers=2), register(GuidanceService(GuidanceConfig())))
    client = GrpcGuidanceClient(f"127.0.0.1:{running.port}", timeout_s=30)
    yield client
    client.close()
    running.stop()


def test_analytic_backbone_describe_over_grpc_is_a_test_prior(grpc_guidance):
    (info, is_default), = grpc_guidance.describe().backbones
    assert info.backend == "analytic" and is_default
    assert info.models == (ModelRecord("exemplars", "analytic", "builtin", "", TEST_PRIOR),)
