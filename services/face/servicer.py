"""gRPC face service: protos in, FaceService, protos out. Errors are raised as HeadForgeError and
mapped to status codes by the server runtime."""

from __future__ import annotations

import grpc

from headforge.v1 import face_pb2, face_pb2_grpc
from services.common import tensors
from services.common.errors import InvalidArgument
from services.common.images import image_input_to_rgb8
from services.face import convert
from services.face.service import FaceService

DType = tensors.DType


class FaceServicer(face_pb2_grpc.FaceServiceServicer):
    def __init__(self, service: FaceService):
        self.service = service
        self.max_pixels = service.config.max_image_pixels

    def Analyze(self, request: face_pb2.AnalyzeRequest, context) -> face_pb2.AnalyzeResponse:
        image = image_input_to_rgb8(request.image, max_pixels=self.max_pixels, field="image")
        result = self.service.analyze(image, convert.options_from_proto(request.options))
        return convert.analyze_to_proto(result)

    def Compare(self, request: face_pb2.CompareRequest, context) -> face_pb2.CompareResponse:
        sides = []
        for name in ("a", "b"):
            side = getattr(request, name)
            which = side.WhichOneof("source")
            if which == "image":
                value = image_input_to_rgb8(side.image, max_pixels=self.max_pixels, field=f"{name}.image")
            elif which == "embedding":
                value = tensors.from_proto(side.embedding, f"{name}.embedding", dtypes=[DType.FLOAT32], ndim=1,
                                           max_elements=4096)
            else:
                raise InvalidArgument(name, "give an image or an embedding")
            sides.append((value, side.face_index, side.embedding_norm))
        (a, ia, na), (b, ib, nb) = sides
        r = self.service.compare(a, b, face_index_a=ia, face_index_b=ib, norm_a=na, norm_b=nb)
        return face_pb2.CompareResponse(cosine_similarity=r.cosine_similarity, distance=r.distance,
                                        threshold=r.threshold, same_person=r.same_person, metric=r.metric)

    def IdentityLoss(self, request: face_pb2.IdentityLossRequest, context) -> face_pb2.IdentityLossResponse:
        images = tensors.from_proto(request.images, "images", dtypes=[DType.FLOAT32, DType.FLOAT16], ndim=4,
                                    max_elements=3 * self.max_pixels * 4)
        reference = tensors.from_proto(request.reference_embedding, "reference_embedding",
                                       dtypes=[DType.FLOAT32], ndim=(1, 2), max_elements=1 << 20)
        landmarks = [[(p.x, p.y) for p in lm.points] for lm in request.landmarks] or None
        r = self.service.identity_loss(images.astype("float32"), reference, landmarks)
        return face_pb2.IdentityLossResponse(loss=tensors.to_proto(r.loss), grad=tensors.to_proto(r.grad),
                                             face_found=r.face_found)

    def Describe(self, request, context) -> face_pb2.DescribeResponse:
        return convert.describe_to_proto(self.service.describe())


def register(service: FaceService):
    """A register callback for services.common.server.start()."""
    def _register(server: grpc.Server) -> list[str]:
        face_pb2_grpc.add_FaceServiceServicer_to_server(FaceServicer(service), server)
        return [convert.SERVICE_NAME]
    return _register
