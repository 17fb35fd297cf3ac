"""gRPC inversion service: protos -> convert -> InversionService -> convert -> protos. Errors are
HeadForgeError, mapped by the runtime."""

from __future__ import annotations

import threading

import grpc

from headforge.v1 import inversion_pb2, inversion_pb2_grpc
from services.common.errors import require
from services.common.images import image_input_to_rgb8
from services.inversion import convert
from services.inversion.service import InversionService
from services.inversion.types import InvertResult


class InversionServicer(inversion_pb2_grpc.InversionServiceServicer):
    def __init__(self, service: InversionService):
        self.service = service

    def Describe(self, request, context):
        return convert.describe_to_proto(self.service.describe())

    def Invert(self, request, context):
        max_px = self.service.config.max_image_pixels
        image = image_input_to_rgb8(request.image, max_pixels=max_px, field="image")
        mask = None
        if request.mask.WhichOneof("source"):
            mask = image_input_to_rgb8(request.mask, max_pixels=max_px, field="mask")[..., 0]
        camera = convert.camera_from_proto(request.camera, "camera")
        require(camera is not None, "camera", "set camera, generator_camera or eg3d_label (Face.crop_camera / "
                                              "Face.eg3d_label)")
        cond = convert.camera_from_proto(request.conditioning_camera, "conditioning_camera")
        settings = convert.settings_from_proto(request.options)
        stop = threading.Event()
        context.add_callback(stop.set)  # client cancelled or deadline passed
        for ev in self.service.invert(image, camera, generator=request.generator, conditioning_camera=cond,
                                      mask=mask, settings=settings,
                                      cancelled=lambda: stop.is_set() or not context.is_active()):
            if isinstance(ev, InvertResult):
                yield inversion_pb2.InvertEvent(result=convert.result_to_proto(ev))
            else:
                yield convert.progress_to_proto(ev)

    def Render(self, request, context):
        dtype = convert.dtype_from_proto(request.dtype)
        source = convert.source_from_proto(request.source)
        cams = [convert.camera_from_proto(c, f"cameras[{i}]") for i, c in enumerate(request.cameras)]
        for i, c in enumerate(cams):
            require(c is not None, f"cameras[{i}]", "camera is unset")
        out = self.service.render(source, cams, list(request.outputs), neural_resolution=request.neural_resolution,
                                  conditioning_camera=convert.camera_from_proto(request.conditioning_camera,
                                                                                "conditioning_camera"))
        return convert.render_to_proto(out, dtype)

    def ExtractMesh(self, request, context):
        fmt = convert.MESH_FORMATS.get(request.format)
        require(fmt is not None, "format", "TENSORS, GLB or PLY")
        mesh, data = self.service.extract_mesh(convert.source_from_proto(request.source), request.resolution,
                                               request.density_threshold,
                                               largest_component_only=request.largest_component_only,
                                               max_faces=request.max_faces, vertex_colors=request.vertex_colors, fmt=fmt)
        return convert.mesh_to_proto(mesh, data, fmt)

    def ExportField(self, request, context):
        dtype = convert.dtype_from_proto(request.dtype)
        limit = self.service.config.max_message_bytes // 2
        require(0 <= request.chunk_bytes <= limit, "chunk_bytes", f"must be 0..{limit}")
        data = self.service.export_field(convert.source_from_proto(request.source), dtype)
        yield from convert.field_chunks(data, request.chunk_bytes)

    def CloseSession(self, request, context):
        self.service.close_session(request.session_id)
        return inversion_pb2.CloseInversionSessionResponse()


def register(service: InversionService):
    """A register callback for services.common.server.start() / serve_forever()."""
    def _register(server: grpc.Server) -> list[str]:
        inversion_pb2_grpc.add_InversionServiceServicer_to_server(InversionServicer(service), server)
        return [convert.SERVICE_NAME]
    return _register
