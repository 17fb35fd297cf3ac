"""Caption: the tiny BLIP-2 and BLIP folders (random weights, the real save_pretrained layout) reload with
from_pretrained and caption a picture deterministically, in process and over gRPC on loopback; Describe lists
the captioners; each bad request gets its status code."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.images import encode_png
from services.common.server import ServerConfig, start
from services.core.models import RANDOM_WEIGHTS
from services.guidance.client import GrpcGuidanceClient
from services.guidance.config import CaptionerConfig, GuidanceConfig, load_config
from services.guidance.service import GuidanceService, InProcessGuidanceClient
from services.guidance.servicer import register
from services.guidance.types import CaptionRequest

PICTURE = (np.random.default_rng(0).uniform(0, 1, (48, 40, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def caption_yaml(tiny_guidance_yaml):
    """The tiny set's captioners beside the analytic prior (no diffusion weights load: fast)."""
    tiny = yaml.safe_load(tiny_guidance_yaml.read_text())
    path = tiny_guidance_yaml.parent / "captions.yaml"
    path.write_text(yaml.safe_dump({"backbones": [{"name": "analytic", "backend": "analytic"}],
                                    "captioners": tiny["captioners"]}))
    return path


@pytest.fixture(scope="module")
def service(caption_yaml):
    svc = GuidanceService(load_config(caption_yaml, device="cpu"))
    yield svc
    svc.close()


@pytest.fixture(scope="module", params=["inprocess", "grpc"])
def client(request, service):
    if request.param == "inprocess":
        yield InProcessGuidanceClient(service)
        return
    server = start("guidance", ServerConfig(port=0, grace_s=0), register(service))
    c = GrpcGuidanceClient(f"127.0.0.1:{server.port}", timeout_s=60)
    yield c
    c.close()
    server.stop()


def test_the_tiny_folders_are_the_real_layout_and_reload_with_from_pretrained(tiny_guidance_yaml):
    from transformers import (AutoProcessor, Blip2ForConditionalGeneration, Blip2Processor,
                              BlipForConditionalGeneration, BlipProcessor)

    root = tiny_guidance_yaml.parent
    for folder, model_cls, processor_cls in (("blip2-tiny", Blip2ForConditionalGeneration, Blip2Processor),
                                             ("blip-tiny", BlipForConditionalGeneration, BlipProcessor)):
        names = {p.name for p in (root / folder).iterdir()}
        assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
                "HEADFORGE_RANDOM_WEIGHTS"} <= names
        assert isinstance(AutoProcessor.from_pretrained(root / folder), processor_cls)
        assert isinstance(model_cls.from_pretrained(root / folder), model_cls)
    default = yaml.safe_load(tiny_guidance_yaml.read_text())["captioners"][0]
    assert default == {"name": "blip2-tiny", "kind": "blip2", "path": "blip2-tiny", "default": True}


def test_describe_lists_the_captioners(client):
    captioners = client.describe().captioners
    assert [(c.name, c.kind, c.is_default) for c in captioners] == [("blip2-tiny", "blip2", True),
                                                                     ("blip-tiny", "blip", False)]
    assert all(c.model.provenance == RANDOM_WEIGHTS and c.model.role == "captioner" for c in captioners)


@pytest.mark.parametrize("captioner", ["", "blip2-tiny", "blip-tiny"])
def test_each_captioner_captions_deterministically(client, captioner):
    req = CaptionRequest(image=PICTURE, captioner=captioner, prompt="a photo of", max_new_tokens=6)
    first, second = client.caption(req), client.caption(req)
    assert first.caption == second.caption and first.caption.startswith("a photo of")
    assert first.captioner == (captioner or "blip2-tiny")
    assert first.model.provenance == RANDOM_WEIGHTS and first.model.sha256   # hashed once loaded
    encoded = client.caption(CaptionRequest(image=encode_png(PICTURE), captioner=captioner, prompt="a photo of",
                                            max_new_tokens=6))
    assert encoded.caption == first.caption


@pytest.mark.parametrize("req, field", [
    (CaptionRequest(image=b"not a picture"), "image"),
    (CaptionRequest(image=b""), "image"),
    (CaptionRequest(image=PICTURE, max_new_tokens=129), "max_new_tokens"),
    (CaptionRequest(image=PICTURE, max_new_tokens=-1), "max_new_tokens"),
    (CaptionRequest(image=PICTURE, captioner="blip3"), "captioner"),
])
def test_bad_requests_are_invalid_arguments(client, req, field):
    with pytest.raises(InvalidArgument) as e:
        client.caption(req)
    assert e.value.code.name == "INVALID_ARGUMENT" and e.value.field.startswith(field)
    if field == "captioner":
        assert e.value.reason == "UNKNOWN_CAPTIONER"


def test_no_captioner_configured_is_a_failed_precondition():
    svc = GuidanceService(GuidanceConfig(device="cpu"))
    server = start("guidance", ServerConfig(port=0, grace_s=0), register(svc))
    grpc_client = GrpcGuidanceClient(f"127.0.0.1:{server.port}", timeout_s=30)
    try:
        for c in (InProcessGuidanceClient(svc), grpc_client):
            assert c.describe().captioners == []
            with pytest.raises(FailedPrecondition) as e:
                c.caption(CaptionRequest(image=PICTURE))
            assert e.value.reason == "NO_CAPTIONER" and e.value.code.name == "FAILED_PRECONDITION"
    finally:
        grpc_client.close()
        server.stop()
        svc.close()


def test_the_config_refuses_duplicate_names_two_defaults_and_missing_folders(tmp_path):
    entry = {"name": "a", "kind": "blip2", "path": "x"}
    with pytest.raises(ValueError, match="unique"):
        GuidanceConfig(captioners=[entry, entry])
    with pytest.raises(ValueError, match="default"):
        GuidanceConfig(captioners=[{**entry, "default": True}, {**entry, "name": "b", "default": True}])
    with pytest.raises(ValueError):
        GuidanceConfig(captioners=[{**entry, "kind": "llava"}])
    with pytest.raises(FailedPrecondition, match="no blip2 model folder"):
        GuidanceService(GuidanceConfig(device="cpu", base_dir=str(tmp_path), captioners=[CaptionerConfig(**entry)]))
