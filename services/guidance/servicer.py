"""gRPC guidance service: protos -> convert -> GuidanceService -> convert -> protos. Errors are HeadForgeError,
mapped to gRPC statuses by the server runtime (services.common.interceptor)."""

from __future__ import annotations

import grpc

from headforge.v1 import guidance_pb2, guidance_pb2_grpc
from services.common import tensors
from services.guidance import convert
from services.guidance.service import GuidanceService

SERVICE_NAME = guidance_pb2.DESCRIPTOR.services_by_name["GuidanceService"].full_name


class GuidanceServicer(guidance_pb2_grpc.GuidanceServiceServicer):
    def __init__(self, service: GuidanceService):
        self.service = service

    def Distill(self, request, context):
        return convert.distill_result_to_proto(self.service.distill(convert.distill_from_proto(request, context)))

    def Denoise(self, request, context):
        return convert.denoise_result_to_proto(self.service.denoise(convert.denoise_from_proto(request, context)))

    def Inpaint(self, request, context):
        r = self.service.inpaint(convert.inpaint_from_proto(request, context))
        return convert.inpaint_result_to_proto(r, float16=request.images.dtype == tensors.DType.FLOAT16)

    def Generate(self, request, context):
        return convert.generate_result_to_proto(self.service.generate(convert.generate_from_proto(request, context)))

    def Caption(self, request, context):
        return convert.caption_result_to_proto(self.service.caption(convert.caption_from_proto(request, context)))

    def Describe(self, request, context):
        return convert.describe_to_proto(self.service.describe())


def register(service: GuidanceService):
    """server -> [SERVICE_NAME] after adding the servicer (services.common.server.start's `register`)."""
    def _register(server: grpc.Server) -> list[str]:
        guidance_pb2_grpc.add_GuidanceServiceServicer_to_server(GuidanceServicer(service), server)
        return [SERVICE_NAME]
    return _register
