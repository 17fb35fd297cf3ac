"""The face service's client interface (FaceClient), its gRPC implementation, and connect().

    client = connect("inprocess")                   # InProcessFaceClient (service.py): FaceService here
    client = connect("127.0.0.1:50051")             # GrpcFaceClient: a `headforge serve face` process
    faces = client.analyze(open("me.jpg", "rb").read()).faces

Both return services.face.types objects and raise services.common.errors.HeadForgeError subclasses.
Importing this module loads neither torch nor the backends (the in-process client is imported inside
connect()).
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from headforge.v1 import common_pb2, face_pb2, face_pb2_grpc
from services.common import tensors
from services.common.client import INPROCESS, GrpcTransport, RetryPolicy
from services.common.images import to_image_input
from services.face import convert
from services.face.config import FaceConfig
from services.face.types import AnalyzeOptions, AnalyzeResult, CompareResult, Description, IdentityLossResult


class FaceClient(Protocol):
    def analyze(self, image, options: AnalyzeOptions | None = None) -> AnalyzeResult:
        """image: encoded bytes, a file path, uint8 (H, W, 3) or float (3, H, W) in [0, 1]."""

    def compare(self, a, b, *, face_index_a: int = 0, face_index_b: int = 0,
                norm_a: float = 0.0, norm_b: float = 0.0) -> CompareResult:
        """Each side: an image (as for analyze) or a (D,) embedding from analyze."""

    def identity_loss(self, images, reference, landmarks=None) -> IdentityLossResult:
        """images float (N, 3, H, W) in [0, 1]; reference (D,) or (N, D); landmarks None or N x (5, 2)."""

    def describe(self) -> Description: ...

    def close(self) -> None: ...


class GrpcFaceClient:
    """The FaceClient interface over gRPC, with deadlines and retries on UNAVAILABLE."""

    def __init__(self, target: str, *, token: str | None = None, timeout_s: float = 60.0,
                 retry: RetryPolicy | None = None):
        self.transport = GrpcTransport(target, token=token, timeout_s=timeout_s, retry=retry)
        self.stub = face_pb2_grpc.FaceServiceStub(self.transport.channel)

    def analyze(self, image, options=None):
        request = face_pb2.AnalyzeRequest(image=to_image_input(image),
                                          options=convert.options_to_proto(options or AnalyzeOptions()))
        return convert.analyze_from_proto(self.transport.call(self.stub.Analyze, request))

    def compare(self, a, b, *, face_index_a=0, face_index_b=0, norm_a=0.0, norm_b=0.0):
        request = face_pb2.CompareRequest(a=_side(a, face_index_a, norm_a), b=_side(b, face_index_b, norm_b))
        r = self.transport.call(self.stub.Compare, request)
        return CompareResult(r.cosine_similarity, r.distance, r.threshold, r.same_person, r.metric)

    def identity_loss(self, images, reference, landmarks=None):
        request = face_pb2.IdentityLossRequest(
            images=tensors.to_proto(_numpy(images).astype(np.float32)),
            reference_embedding=tensors.to_proto(_numpy(reference).astype(np.float32)))
        for lm in landmarks or []:
            points = [] if lm is None else [common_pb2.Point2(x=float(x), y=float(y)) for x, y in np.asarray(lm)]
            request.landmarks.add(points=points)
        r = self.transport.call(self.stub.IdentityLoss, request)
        return IdentityLossResult(np.array(tensors.from_proto(r.loss, "loss")),
                                  np.array(tensors.from_proto(r.grad, "grad")), list(r.face_found))

    def describe(self):
        return convert.describe_from_proto(self.transport.call(self.stub.Describe, face_pb2.DescribeRequest()))

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        self.transport.wait_ready(convert.SERVICE_NAME, timeout_s)

    def close(self) -> None:
        self.transport.close()


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def _side(value, face_index: int, norm: float) -> face_pb2.CompareRequest.Side:
    if not isinstance(value, (bytes, bytearray, memoryview, str)) and not hasattr(value, "__fspath__"):
        arr = _numpy(value)
        if arr.ndim == 1:
            return face_pb2.CompareRequest.Side(embedding=tensors.to_proto(arr.astype(np.float32)),
                                                embedding_norm=norm)
    return face_pb2.CompareRequest.Side(image=to_image_input(value), face_index=face_index)


def connect(endpoint: str, *, token: str | None = None, retry: RetryPolicy | None = None,
            config: FaceConfig | None = None) -> FaceClient:
    """endpoint "inprocess" (services.common.client.INPROCESS): an InProcessFaceClient on a new
    FaceService built from config (default FaceConfig(): the dlib backends). "HOST:PORT": a GrpcFaceClient
    with token and retry; config is ignored there (the server has its own)."""
    if endpoint != INPROCESS:
        return GrpcFaceClient(endpoint, token=token, retry=retry)
    from services.face.service import InProcessFaceClient

    return InProcessFaceClient(config=config)
