"""The guidance service as a real process on loopback: same results as in-process, errors with the right
gRPC status, per-tenant cache keys, and requests from concurrent callers batched together (visible in the
service's Prometheus metrics)."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import yaml

from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.process import ROOT, ServiceProcess
from services.guidance.client import GrpcGuidanceClient
from services.guidance.config import load_config
from services.guidance.service import GuidanceService, InProcessGuidanceClient
from services.guidance.types import (Conditions, ControlInput, DenoiseRequest, DistillRequest, GenerateRequest, InpaintRequest,
                                     TimestepSchedule)
from tests.integration.test_server_runtime import free_port, sample, scrape

X = np.random.default_rng(0).uniform(0, 1, (2, 3, 32, 32)).astype(np.float32)


@pytest.fixture(scope="module")
def config_path(tmp_path_factory):
    """`headforge models make-tiny DIR`, then a model repository with the analytic prior (default) and the
    tiny SD1.5-layout backbone it wrote."""
    d = tmp_path_factory.mktemp("models")
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "models", "make-tiny", str(d)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "headforge serve guidance --config" in done.stdout
    tiny = yaml.safe_load((d / "guidance" / "guidance.yaml").read_text())["backbones"]
    path = d / "guidance" / "both.yaml"
    path.write_text(yaml.safe_dump({
        "backbones": [{"name": "analytic", "backend": "analytic", "default": True}, *tiny],
        "batching": {"max_batch_images": 16, "max_queue_delay_ms": 400, "max_queue_depth": 32}}))
    return path


@pytest.fixture(scope="module")
def server(config_path, tmp_path_factory):
    logs = tmp_path_factory.mktemp("guidance-logs")
    tokens = logs / "tokens.yaml"
    tokens.write_text("tokens: {tok-a: tenant-a, tok-b: tenant-b}\n")
    metrics_port = free_port()
    proc = ServiceProcess(["guidance", "--port", "0", "--config", str(config_path), "--tokens-file", str(tokens),
                           "--metrics-port", str(metrics_port), "--device", "cpu"], logs / "guidance.log")
    proc.metrics_port = metrics_port
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def local(config_path):
    svc = GuidanceService(load_config(config_path, device="cpu"))
    yield InProcessGuidanceClient(svc)
    svc.close()


@pytest.fixture
def client_a(server):
    c = GrpcGuidanceClient(server.address, token="tok-a")
    yield c
    c.close()


def test_describe(client_a):
    d = client_a.describe()
    (info, is_default), (sd, sd_default) = d.backbones
    assert is_default and info.name == "analytic" and info.backend == "analytic"
    assert info.latent_scale_factor == 1 and info.latent_channels == 3 and info.num_train_timesteps == 1000
    assert not sd_default and sd.name == "sd15-tiny" and sd.backend == "diffusers" and sd.native_resolution == 64
    assert sd.variants == ("sds", "isd") and sd.identity_embedding_dim == 512
    assert [c.name for c in sd.controls] == ["landmarks", "normal"] and sd.loras[0].output_kind == "normal"
    assert {m.role for m in sd.models} >= {"unet", "vae", "text_encoder"} and all(len(m.sha256) == 16 for m in sd.models)
    assert d.max_batch_images == 16 and d.max_queue_delay_ms == 400 and d.device == "cpu"


def test_isd_over_grpc_equals_in_process(client_a, local):
    """Identity embedding, landmark points (drawn by the server) and a LoRA travel over the wire."""
    rng = np.random.default_rng(1)
    identity = rng.normal(size=(3, 512)).astype(np.float32)    # K = 3 photos, averaged by the server
    points = np.stack([np.linspace(12, 52, 68), 30 + 10 * np.cos(np.linspace(0, 6, 68))], 1).astype(np.float32)
    req = DistillRequest(images=rng.uniform(0, 1, (2, 3, 64, 64)).astype(np.float32), variant="isd", seed=4,
                         guidance_scale=7.5, grad_dtype="float16",
                         conditions=Conditions(backbone="sd15-tiny", prompt="a photo of a face",
                                               identity_embedding=identity, identity_scale=0.8,
                                               controls=[ControlInput(kind="landmarks", landmarks=points)],
                                               loras=[("normal", 0.5)]))
    remote, mine = client_a.distill(req), local.distill(req)
    assert remote.grad.dtype == np.float16 and remote.backbone == "sd15-tiny"
    np.testing.assert_allclose(remote.grad.astype(np.float32), mine.grad.astype(np.float32), rtol=1e-3, atol=1e-4)


def test_identity_and_expression_adapters_over_grpc(client_a, local):
    """Both adapters in one call over the wire (expression text + expression_scale, identity + identity_scale):
    Describe says the backbone has the expression adapter; the gradient equals in-process and differs from the
    identity-only one."""
    (_, _), (sd, _) = client_a.describe().backbones
    assert sd.expression_adapter and "expression_adapter:expression" in {m.role for m in sd.models}
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 1, (2, 3, 64, 64)).astype(np.float32)
    identity = rng.normal(size=512).astype(np.float32)

    def req(**expression):
        return DistillRequest(images=images, seed=6, guidance_scale=7.5, conditions=Conditions(
            backbone="sd15-tiny", prompt="a photo of a face", identity_embedding=identity, identity_scale=0.8,
            **expression))

    both = req(expression="smiling", expression_scale=1.5)
    remote, mine = client_a.distill(both), local.distill(both)
    np.testing.assert_allclose(remote.grad, mine.grad, rtol=1e-4, atol=1e-5 * float(np.abs(mine.grad).max()))
    assert not np.allclose(remote.grad, client_a.distill(req()).grad)


def test_grpc_results_equal_in_process(client_a, local):
    req = DistillRequest(images=X, conditions=Conditions(prompt="red disc"), guidance_scale=7.5, seed=42,
                         timesteps=TimestepSchedule(t_min=0.2, t_max=0.6), return_noise=True, return_denoised=True)
    remote, mine = client_a.distill(req), local.distill(req)
    np.testing.assert_allclose(remote.grad, mine.grad, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(remote.noise, mine.noise)
    np.testing.assert_allclose(remote.denoised, mine.denoised, atol=1e-6)
    assert [vars(d) == pytest.approx(vars(e)) for d, e in zip(remote.diagnostics, mine.diagnostics)] == [True, True]
    assert remote.seed == 42 and remote.backbone == "analytic"
    # caller-supplied noise (multi-view noise resampling) is used as given
    again = client_a.distill(DistillRequest(images=X, conditions=Conditions(prompt="red disc"), guidance_scale=7.5,
                                            seed=7, noise=remote.noise, timesteps=TimestepSchedule(t=[0.3])))
    same = local.distill(DistillRequest(images=X, conditions=Conditions(prompt="red disc"), guidance_scale=7.5,
                                        seed=99, noise=remote.noise, timesteps=TimestepSchedule(t=[0.3])))
    np.testing.assert_allclose(again.grad, same.grad, rtol=1e-6, atol=1e-8)

    d = DenoiseRequest(images=X, strength=0.5, num_steps=4, seed=3)
    np.testing.assert_allclose(client_a.denoise(d).images, local.denoise(d).images, atol=1e-6)
    mask = np.zeros((1, 32, 32), np.uint8)
    mask[:, 8:24, 8:24] = 255
    i = InpaintRequest(images=X, mask=mask, num_steps=4, seed=3)
    got = client_a.inpaint(i).images
    np.testing.assert_allclose(got, local.inpaint(i).images, atol=1e-6)
    np.testing.assert_array_equal(got[:, :, :8], X[:, :, :8])
    g = client_a.generate(GenerateRequest(num_images=2, num_steps=4, seed=5, encode_png=True))
    assert g.images.shape == (2, 3, 32, 32) and len(g.png) == 2 and g.png[0][:4] == b"\x89PNG"


def test_errors_over_the_wire(client_a):
    with pytest.raises(InvalidArgument) as e:
        client_a.distill(DistillRequest(images=X * 5))
    assert e.value.violations[0].field == "images"
    with pytest.raises(InvalidArgument):
        client_a.distill(DistillRequest(images=X, conditions=Conditions(backbone="sd15")))
    with pytest.raises(FailedPrecondition):
        client_a.distill(DistillRequest(images=X, variant="image_conditioned"))
    nan = X.copy()
    nan[0, 0, 0, 0] = np.inf
    with pytest.raises(InvalidArgument):
        client_a.distill(DistillRequest(images=nan))


def test_cache_keys_are_scoped_to_the_tenant(server, client_a):
    client_a.distill(DistillRequest(images=X, conditions=Conditions(prompt="blue square", text_cache_key="subject-1")))
    assert client_a.distill(DistillRequest(images=X, conditions=Conditions(text_cache_key="subject-1"))).grad.shape == X.shape
    b = GrpcGuidanceClient(server.address, token="tok-b")
    with pytest.raises(NotFound) as e:
        b.distill(DistillRequest(images=X, conditions=Conditions(text_cache_key="subject-1")))
    assert e.value.reason == "CONDITIONS_CACHE_MISS"
    b.close()


def test_concurrent_callers_are_batched(server):
    before = scrape(server.metrics_port)
    clients = [GrpcGuidanceClient(server.address, token="tok-a" if i % 2 else "tok-b") for i in range(4)]
    reqs = [DistillRequest(images=X[:1], conditions=Conditions(prompt=p), seed=i + 1, guidance_scale=7.5)
            for i, p in enumerate(["red disc", "blue square", "", "red disc"])]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda cr: cr[0].distill(cr[1]), zip(clients, reqs)))
    assert all(r.grad.shape == (1, 3, 32, 32) for r in results)
    after = scrape(server.metrics_port)
    batches = sample(after, "headforge_batch_requests_count", service="guidance") - \
        sample(before, "headforge_batch_requests_count", service="guidance")
    requests = sample(after, "headforge_batch_requests_sum", service="guidance") - \
        sample(before, "headforge_batch_requests_sum", service="guidance")
    assert requests == 4 and batches < 4, (batches, requests)
    for c in clients:
        c.close()
