"""The guidance service with `backend: triton`: the tiny SD folder's UNet served over Triton's gRPC protocol,
text encoder and VAE local. Distill through it equals Distill through the diffusers backbone of the same
folder. Runs against Triton's protocol stand-in (tests/guidance/test_triton_unet.py: a gRPC server in this
process speaking GRPCInferenceService, not Triton) always, and against a real tritonserver when
HEADFORGE_TRITON_VENV names an environment that has one (see services/guidance/triton_server.py)."""

from __future__ import annotations

from concurrent import futures

import grpc
import numpy as np
import pytest
import yaml
from tritonclient.grpc import service_pb2_grpc

from services.guidance.backbones.base import ModelFilesError
from services.guidance.config import load_config
from services.guidance.service import GuidanceService
from services.guidance.types import Conditions, DenoiseRequest, DistillRequest
from tests.guidance.test_triton_unet import StandInTriton


@pytest.fixture(scope="module")
def standin_url(tiny_guidance_yaml):
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(tiny_guidance_yaml.parent / "sd15-tiny" / "unet").eval()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(StandInTriton(unet, max_batch_size=16), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def _config(tiny_guidance_yaml, url, tmp_path):
    path = tmp_path / "triton.yaml"
    path.write_text(yaml.safe_dump({"backbones": [
        {"name": "sd15-triton", "backend": "triton", "path": str(tiny_guidance_yaml.parent / "sd15-tiny"),
         "triton_url": url, "default": True},
        {"name": "sd15-local", "backend": "diffusers", "path": str(tiny_guidance_yaml.parent / "sd15-tiny")}],
        "batching": {"max_queue_delay_ms": 0}}))
    return load_config(path, device="cpu")


def test_triton_backbone_equals_the_local_unet(tiny_guidance_yaml, standin_url, tmp_path):
    svc = GuidanceService(_config(tiny_guidance_yaml, standin_url, tmp_path))
    info = svc.backbones["sd15-triton"].info
    assert info.backend == "triton" and info.native_resolution == 64 and info.variants == ("sds",)
    assert svc.describe().backbones[0][0].models[0].backend == "triton"
    x = np.random.default_rng(0).uniform(0, 1, (3, 3, 64, 64)).astype(np.float32)
    remote = svc.distill(DistillRequest(images=x, seed=5, guidance_scale=7.5,
                                        conditions=Conditions(backbone="sd15-triton", prompt="a head")))
    local = svc.distill(DistillRequest(images=x, seed=5, guidance_scale=7.5,
                                       conditions=Conditions(backbone="sd15-local", prompt="a head")))
    # the same float32 UNet on another thread: its reductions round differently on some CPUs (seen: up to
    # 2e-6 of the largest value, at 5 of 36,864 pixels); a real difference in the two paths is O(1)
    np.testing.assert_allclose(remote.grad, local.grad, rtol=1e-4, atol=1e-5 * float(np.abs(local.grad).max()))
    d = svc.denoise(DenoiseRequest(images=x[:1], strength=0.5, num_steps=2, seed=1,
                                   conditions=Conditions(backbone="sd15-triton")))
    assert d.images.shape == (1, 3, 64, 64)
    svc.close()


def test_triton_entries_cannot_have_adapters(tiny_guidance_yaml, standin_url, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"backbones": [{
        "name": "t", "backend": "triton", "path": str(tiny_guidance_yaml.parent / "sd15-tiny"), "triton_url": standin_url,
        "loras": [{"name": "normal", "path": str(tiny_guidance_yaml.parent / "lora-normal-tiny")}]}]}))
    with pytest.raises(ModelFilesError, match="loras are not available with backend: triton"):
        GuidanceService(load_config(path, device="cpu"))
    path.write_text(yaml.safe_dump({"backbones": [{
        "name": "t", "backend": "triton", "path": str(tiny_guidance_yaml.parent / "sd15-tiny"),
        "triton_url": "127.0.0.1:1"}]}))
    from services.common.errors import Unavailable

    with pytest.raises(Unavailable):
        GuidanceService(load_config(path, device="cpu"))


def test_real_triton_backbone(tiny_guidance_yaml, tmp_path):
    """The same comparison against a real tritonserver (python backend) when one is installed."""
    from services.guidance.triton_repo import write_triton_repository
    from services.common.process import free_port
    from services.guidance.triton_server import find_tritonserver, start_tritonserver

    install = find_tritonserver()
    if install is None:
        pytest.skip("no Triton server installed (set HEADFORGE_TRITON_VENV; see services/guidance/triton_server.py)")
    write_triton_repository(tiny_guidance_yaml.parent / "sd15-tiny" / "unet", tmp_path / "repo", max_batch_size=8,
                            instance_kind="KIND_CPU", torch_num_threads=1)
    server = start_tritonserver(install, tmp_path / "repo", free_port(), free_port(), work_dir=tmp_path,
                                ready_timeout_s=240)
    try:
        svc = GuidanceService(_config(tiny_guidance_yaml, server.grpc_url, tmp_path))
        x = np.random.default_rng(1).uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
        got = [svc.distill(DistillRequest(images=x, seed=3, guidance_scale=7.5,
                                          conditions=Conditions(backbone=b, prompt="a head"))).grad
               for b in ("sd15-triton", "sd15-local")]
        np.testing.assert_allclose(got[0], got[1], rtol=1e-4, atol=1e-6 * float(np.abs(got[1]).max()))
        svc.close()
    finally:
        server.stop()
