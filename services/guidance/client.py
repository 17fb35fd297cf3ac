"""The guidance service's one client interface, with an in-process and a gRPC implementation.

    client = InProcessGuidanceClient(GuidanceService(load_config("models/guidance.yaml")))
    client = GrpcGuidanceClient("127.0.0.1:50053")       # a `headforge serve guidance` process
    r = client.distill(DistillRequest(images, Conditions(prompt="a portrait"), guidance_scale=7.5))
    image_grad = r.grad                                   # dL/dimages, shape of images

Both take and return services.guidance.types dataclasses and raise HeadForgeError subclasses.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from headforge.v1 import guidance_pb2, guidance_pb2_grpc
from services.common import tensors
from services.common.client import GrpcTransport, RetryPolicy
from services.core.models import ModelRecord
from services.guidance import servicer as conv
from services.guidance.backbones.base import BackboneInfo, ControlSpec, LoraSpec
from services.guidance.service import GuidanceService
from services.guidance.types import (DenoiseRequest, DenoiseResult, DistillRequest, DistillResult, GenerateRequest,
                                     GenerateResult, GuidanceDescription, ImageDiagnostics, InpaintRequest,
                                     InpaintResult)


class InProcessGuidanceClient:
    """Plain function calls on a GuidanceService in this process: no serialisation."""

    def __init__(self, service: GuidanceService | None = None):
        self.service = service or GuidanceService()

    def distill(self, req: DistillRequest) -> DistillResult:
        return self.service.distill(req)

    def denoise(self, req: DenoiseRequest) -> DenoiseResult:
        return self.service.denoise(req)

    def inpaint(self, req: InpaintRequest) -> InpaintResult:
        return self.service.inpaint(req)

    def generate(self, req: GenerateRequest) -> GenerateResult:
        return self.service.generate(req)

    def describe(self) -> GuidanceDescription:
        return self.service.describe()

    def close(self) -> None:
        pass


def _array(msg) -> np.ndarray | None:
    return np.array(tensors.from_proto(msg, "response")) if msg.shape else None


class GrpcGuidanceClient:
    """The same interface over gRPC. Retries UNAVAILABLE and a full queue (RESOURCE_EXHAUSTED, QUEUE_FULL)
    with backoff (see services.common.client)."""

    def __init__(self, target: str, *, token: str | None = None, timeout_s: float = 300.0,
                 retry: RetryPolicy | None = None):
        retry = retry or RetryPolicy()
        if "QUEUE_FULL" not in retry.retry_reasons:
            retry = replace(retry, retry_reasons=(*retry.retry_reasons, "QUEUE_FULL"))
        self.transport = GrpcTransport(target, token=token, timeout_s=timeout_s, retry=retry)
        self.stub = guidance_pb2_grpc.GuidanceServiceStub(self.transport.channel)

    def distill(self, req: DistillRequest) -> DistillResult:
        r = self.transport.call(self.stub.Distill, conv.distill_to_proto(req))
        return DistillResult(grad=_array(r.grad), seed=r.seed, backbone=r.backbone, noise=_array(r.noise),
                             denoised=_array(r.denoised),
                             diagnostics=[ImageDiagnostics(d.timestep, d.t, d.weight, d.loss, d.grad_norm,
                                                           d.latent_grad_norm) for d in r.diagnostics])

    def denoise(self, req: DenoiseRequest) -> DenoiseResult:
        r = self.transport.call(self.stub.Denoise, conv.denoise_to_proto(req))
        return DenoiseResult(images=_array(r.images), start_timestep=r.start_timestep, seed=r.seed)

    def inpaint(self, req: InpaintRequest) -> InpaintResult:
        r = self.transport.call(self.stub.Inpaint, conv.inpaint_to_proto(req))
        return InpaintResult(images=_array(r.images), seed=r.seed)

    def generate(self, req: GenerateRequest) -> GenerateResult:
        r = self.transport.call(self.stub.Generate, conv.generate_to_proto(req))
        return GenerateResult(images=_array(r.images), output_kind=conv.OUTPUT_KINDS.get(r.output_kind, "rgb"),
                              seed=r.seed, png=[e.data for e in r.encoded])

    def describe(self) -> GuidanceDescription:
        d = self.transport.call(self.stub.Describe, guidance_pb2.GuidanceDescribeRequest())
        backbones = []
        for b in d.backbones:
            info = BackboneInfo(
                name=b.name, backend=b.backend, family=b.family, output_kind=conv.OUTPUT_KINDS.get(b.output_kind, "rgb"),
                native_resolution=b.native_resolution, latent_scale_factor=b.latent_scale_factor,
                latent_channels=b.latent_channels, num_train_timesteps=b.num_train_timesteps,
                prediction_type=b.prediction_type, variants=tuple(conv.VARIANTS[v] for v in b.variants),
                denoise=b.denoise, inpaint=b.inpaint, generate=b.generate,
                controls=tuple(ControlSpec(name, "") for name in b.controls),
                identity_adapters=tuple(b.identity_adapters), identity_embedding_dim=b.identity_embedding_dim,
                expression_adapter=b.expression_adapter,
                loras=tuple(LoraSpec(x.name, conv.OUTPUT_KINDS.get(x.output_kind, "rgb")) for x in b.loras),
                schedulers=tuple(b.schedulers), min_frames=b.min_frames, max_frames=b.max_frames,
                models=tuple(ModelRecord(m.role, m.backend, m.name, m.sha256) for m in b.models))
            backbones.append((info, b.is_default))
        return GuidanceDescription(backbones=backbones, max_batch_images=d.max_batch_images,
                                   max_queue_delay_ms=d.max_queue_delay_ms, max_queue_depth=d.max_queue_depth,
                                   queue_depth=d.queue_depth, max_image_pixels=d.max_image_pixels,
                                   max_message_bytes=d.max_message_bytes, cache_ttl_s=d.cache_ttl_s, device=d.device)

    def close(self) -> None:
        self.transport.close()
