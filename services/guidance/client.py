"""The guidance service's one client interface, GuidanceClient, and its gRPC implementation.

    client = connect("127.0.0.1:50053", token=...)          # a `headforge serve guidance` process
    client = connect(INPROCESS, config_path="models/guidance/guidance.yaml")   # in this process
    r = client.distill(DistillRequest(images, Conditions(prompt="a portrait"), guidance_scale=7.5))
    image_grad = r.grad                                      # dL/dimages, shape of images

Both implementations take and return services.guidance.types dataclasses and raise HeadForgeError
subclasses. Importing this module loads neither torch nor diffusers: the in-process client
(services.guidance.service.InProcessGuidanceClient) is imported by connect() only when asked for.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

from headforge.v1 import guidance_pb2, guidance_pb2_grpc
from services.common.client import INPROCESS, GrpcTransport, RetryPolicy
from services.guidance import convert
from services.guidance.types import (CaptionRequest, CaptionResult, DenoiseRequest, DenoiseResult, DistillRequest, DistillResult, GenerateRequest,
                                     GenerateResult, GuidanceDescription, InpaintRequest, InpaintResult)

if TYPE_CHECKING:
    from services.guidance.config import GuidanceConfig


class GuidanceClient(Protocol):
    def distill(self, req: DistillRequest) -> DistillResult:
        """dLoss/dImages (score distillation) for images (N, 3, H, W) in [0, 1]."""

    def denoise(self, req: DenoiseRequest) -> DenoiseResult:
        """Images noised to `strength` in (0, 1] and denoised back (SDEdit)."""

    def inpaint(self, req: InpaintRequest) -> InpaintResult:
        """Images with the mask's 1-pixels regenerated, the others returned unchanged."""

    def generate(self, req: GenerateRequest) -> GenerateResult:
        """New images (N, C, H, W) float32 in [0, 1] from the conditions."""

    def caption(self, req: CaptionRequest) -> CaptionResult:
        """A text caption of req.image (uint8 (H, W, 3) or encoded bytes) by a captioner (BLIP-2, BLIP)."""

    def describe(self) -> GuidanceDescription:
        """The loaded backbones, the captioners and the service's limits."""

    def close(self) -> None: ...


class GrpcGuidanceClient:
    """GuidanceClient over gRPC. Retries UNAVAILABLE and a full queue (RESOURCE_EXHAUSTED, QUEUE_FULL) with
    backoff (see services.common.client); timeout_s is each call's deadline in seconds."""

    def __init__(self, target: str, *, token: str | None = None, timeout_s: float = 300.0,
                 retry: RetryPolicy | None = None):
        retry = retry or RetryPolicy()
        if "QUEUE_FULL" not in retry.retry_reasons:
            retry = replace(retry, retry_reasons=(*retry.retry_reasons, "QUEUE_FULL"))
        self.transport = GrpcTransport(target, token=token, timeout_s=timeout_s, retry=retry)
        self.stub = guidance_pb2_grpc.GuidanceServiceStub(self.transport.channel)

    def distill(self, req: DistillRequest) -> DistillResult:
        return convert.distill_result_from_proto(self.transport.call(self.stub.Distill, convert.distill_to_proto(req)))

    def denoise(self, req: DenoiseRequest) -> DenoiseResult:
        return convert.denoise_result_from_proto(self.transport.call(self.stub.Denoise, convert.denoise_to_proto(req)))

    def inpaint(self, req: InpaintRequest) -> InpaintResult:
        return convert.inpaint_result_from_proto(self.transport.call(self.stub.Inpaint, convert.inpaint_to_proto(req)))

    def generate(self, req: GenerateRequest) -> GenerateResult:
        return convert.generate_result_from_proto(
            self.transport.call(self.stub.Generate, convert.generate_to_proto(req)))

    def caption(self, req: CaptionRequest) -> CaptionResult:
        return convert.caption_result_from_proto(self.transport.call(self.stub.Caption, convert.caption_to_proto(req)))

    def describe(self) -> GuidanceDescription:
        return convert.describe_from_proto(
            self.transport.call(self.stub.Describe, guidance_pb2.GuidanceDescribeRequest()))

    def close(self) -> None:
        self.transport.close()


def connect(endpoint: str, *, token: str | None = None, retry: RetryPolicy | None = None,
            config_path: str | None = None, config: GuidanceConfig | None = None) -> GuidanceClient:
    """A GuidanceClient for `endpoint`: "HOST:PORT" -> GrpcGuidanceClient(endpoint, token=token, retry=retry);
    INPROCESS ("inprocess") -> a GuidanceService in this process built from `config`, else from the YAML at
    `config_path` (services.guidance.config.load_config), else GuidanceConfig() (the analytic prior).
    config and config_path describe the in-process service only; a gRPC server has its own, so they are
    not used for a HOST:PORT endpoint. ModelFilesError when the configured models cannot be loaded."""
    if config is not None and config_path is not None:
        raise ValueError("give config or config_path, not both")
    if endpoint != INPROCESS:
        return GrpcGuidanceClient(endpoint, token=token, retry=retry)
    from services.guidance.config import GuidanceConfig, load_config
    from services.guidance.service import GuidanceService, InProcessGuidanceClient

    if config is None:
        config = load_config(config_path) if config_path else GuidanceConfig()
    return InProcessGuidanceClient(GuidanceService(config))
