"""The inversion service's client interface (InversionClient), its gRPC implementation, and connect().

    client = connect("inprocess", models_dir="models")   # InProcessInversionClient (service.py), this process
    client = connect("127.0.0.1:50053", token=TOKEN)     # GrpcInversionClient: a `headforge serve inversion`
    result = client.invert(face.aligned_crop, GanCamera.generator(face.crop_camera),
                           settings=InvertSettings(steps=300, pti=True), on_progress=print)
    images = client.render(result.session_id, [camera], ["rgb", "depth"])
    mesh = client.extract_mesh(result.session_id, resolution=256)
    npz = client.export_field(result.session_id)   # -> RenderService CreateScene(kind, asset npz)

Sources are a session id (str) or a Latent(w, generator). Cameras are GanCamera or PinholeCamera
(world units). Both implementations return services.inversion.types dataclasses with numpy arrays and
raise HeadForgeError subclasses. Importing this module loads no torch (the in-process client is
imported inside connect()).
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import grpc
import numpy as np

from headforge.v1 import inversion_pb2, inversion_pb2_grpc
from services.common.client import INPROCESS, GrpcTransport, RetryPolicy
from services.common.errors import from_rpc_error
from services.common.images import to_image_input
from services.inversion import convert
from services.inversion.types import (Cancelled, Description, InversionConfig, InvertResult, InvertSettings,
                                      MeshOutput, ProgressCallback)


class InversionClient(Protocol):
    def describe(self) -> Description:
        """The configured generators (availability, kind, crop style), limits, device and LPIPS model."""

    def invert(self, image: np.ndarray, camera, *, generator: str = "", conditioning_camera=None, mask=None,
               settings: InvertSettings | None = None, on_progress: ProgressCallback | None = None,
               cancelled: Callable[[], bool] = lambda: False) -> InvertResult:
        """image (S, S, 3) uint8 square aligned crop; camera GanCamera or world PinholeCamera; mask (S, S)
        uint8 0/255 or float in [0, 1]. Progress events go to on_progress; cancelled() True stops the
        inversion (Cancelled) and creates no session."""

    def render(self, source, cameras: Sequence, outputs: Sequence[str] = ("rgb",), *, neural_resolution: int = 0,
               conditioning_camera=None, dtype: str = "float32") -> dict[str, np.ndarray]:
        """Images by output name ("rgb" (N, 3, S, S) in [0, 1], "depth" (N, 1, r, r) world units, ...)."""

    def extract_mesh(self, source, resolution: int = 0, density_threshold: float = 0.0, *,
                     largest_component_only: bool = False, max_faces: int = 0, vertex_colors: bool = False,
                     fmt: str = "tensors") -> MeshOutput:
        """Marching cubes on a resolution^3 grid (0 = 256); fmt "tensors", "glb" or "ply"."""

    def export_field(self, source, dtype: str = "float32") -> bytes:
        """The field NPZ for RenderService CreateScene (kind = the generator's kind)."""

    def close_session(self, session_id: str) -> None: ...

    def close(self) -> None: ...


class GrpcInversionClient:
    """The InversionClient interface over gRPC, with deadlines and retries on UNAVAILABLE."""

    def __init__(self, target: str, *, token: str | None = None, timeout_s: float = 600.0,
                 retry: RetryPolicy | None = None, max_message_bytes: int = 64 * 1024 * 1024):
        self.transport = GrpcTransport(target, token=token, timeout_s=timeout_s, retry=retry,
                                       max_message_bytes=max_message_bytes)
        self.stub = inversion_pb2_grpc.InversionServiceStub(self.transport.channel)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        self.transport.wait_ready(convert.SERVICE_NAME, timeout_s)

    def describe(self) -> Description:
        r = self.transport.call(self.stub.Describe, inversion_pb2.InversionDescribeRequest())
        return convert.describe_from_proto(r)

    def _stream(self, method, request):
        yield from self._iterate(method(request, timeout=self.transport.timeout_s, metadata=self.transport.metadata))

    @staticmethod
    def _iterate(call):
        try:
            yield from call
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def invert(self, image: np.ndarray, camera, *, generator: str = "", conditioning_camera=None, mask=None,
               settings: InvertSettings | None = None, on_progress: ProgressCallback | None = None,
               cancelled: Callable[[], bool] = lambda: False) -> InvertResult:
        """cancelled: polled at every progress event; True cancels the call (the server stops at its next
        step and creates no session) and raises Cancelled."""
        req = inversion_pb2.InvertRequest(generator=generator, image=to_image_input(np.asarray(image)),
                                          camera=convert.camera_to_proto(camera),
                                          options=convert.settings_to_proto(settings or InvertSettings()))
        if conditioning_camera is not None:
            req.conditioning_camera.CopyFrom(convert.camera_to_proto(conditioning_camera))
        if mask is not None:
            req.mask.CopyFrom(convert.mask_to_proto(mask))
        result = None
        call = self.stub.Invert(req, timeout=self.transport.timeout_s, metadata=self.transport.metadata)
        for ev in self._iterate(call):
            if cancelled():
                call.cancel()
                raise Cancelled("inversion cancelled by the caller", reason="CANCELLED")
            if ev.HasField("result"):
                result = convert.result_from_proto(ev.result)
            elif on_progress is not None:
                on_progress(convert.progress_from_proto(ev))
        return result

    def render(self, source, cameras, outputs=("rgb",), *, neural_resolution: int = 0, conditioning_camera=None,
               dtype: str = "float32") -> dict[str, np.ndarray]:
        req = inversion_pb2.InversionRenderRequest(source=convert.source_to_proto(source),
                                                   cameras=[convert.camera_to_proto(c) for c in cameras],
                                                   outputs=list(outputs), neural_resolution=neural_resolution,
                                                   dtype=convert.dtype_to_proto(dtype))
        if conditioning_camera is not None:
            req.conditioning_camera.CopyFrom(convert.camera_to_proto(conditioning_camera))
        return convert.render_from_proto(self.transport.call(self.stub.Render, req))

    def extract_mesh(self, source, resolution: int = 0, density_threshold: float = 0.0, *,
                     largest_component_only: bool = False, max_faces: int = 0, vertex_colors: bool = False,
                     fmt: str = "tensors") -> MeshOutput:
        req = inversion_pb2.ExtractMeshRequest(source=convert.source_to_proto(source), resolution=resolution,
                                               density_threshold=density_threshold,
                                               largest_component_only=largest_component_only, max_faces=max_faces,
                                               vertex_colors=vertex_colors, format=convert.MESH_FORMAT_ENUMS[fmt])
        return convert.mesh_from_proto(self.transport.call(self.stub.ExtractMesh, req), fmt)

    def export_field(self, source, dtype: str = "float32", chunk_bytes: int = 0) -> bytes:
        req = inversion_pb2.ExportFieldRequest(source=convert.source_to_proto(source), chunk_bytes=chunk_bytes,
                                               dtype=convert.dtype_to_proto(dtype))
        return convert.field_from_chunks(list(self._stream(self.stub.ExportField, req)))

    def close_session(self, session_id: str) -> None:
        self.transport.call(self.stub.CloseSession, inversion_pb2.CloseInversionSessionRequest(session_id=session_id))

    def close(self) -> None:
        self.transport.close()


def connect(endpoint: str, *, token: str | None = None, retry: RetryPolicy | None = None, **options) -> InversionClient:
    """endpoint "inprocess" (services.common.client.INPROCESS): an InProcessInversionClient on a new
    InversionService configured by options: `config` (an InversionConfig), or `models_dir` (every
    generator under DIR/inversion/<name>) and/or InversionConfig's fields (generators,
    default_generator, device, limits, ...). "HOST:PORT": a GrpcInversionClient with token and retry;
    options are ignored there (the server has its own configuration; for a deadline other than 600 s
    build GrpcInversionClient directly)."""
    if endpoint != INPROCESS:
        return GrpcInversionClient(endpoint, token=token, retry=retry)
    from services.inversion.service import InProcessInversionClient, InversionService

    config = options.pop("config", None)
    if config is not None and options:
        raise TypeError(f"connect(): give config or InversionConfig fields, not both ({sorted(options)})")
    if config is None:
        models_dir = options.pop("models_dir", None)
        config = (InversionConfig.from_models_dir(models_dir, **options) if models_dir is not None
                  else InversionConfig(**options))
    return InProcessInversionClient(InversionService(config))
