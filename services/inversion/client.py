"""The inversion service's one client interface, with an in-process and a gRPC implementation.

    client = InProcessInversionClient(InversionService(InversionConfig.from_models_dir("models")))
    client = GrpcInversionClient("127.0.0.1:50053")      # a `headforge serve inversion` process
    result = client.invert(face.aligned_crop, GanCamera.generator(face.crop_camera),
                           settings=InvertSettings(steps=300, pti=True), on_progress=print)
    images = client.render(result.session_id, [camera], ["rgb", "depth"])
    mesh = client.extract_mesh(result.session_id, resolution=256)
    npz = client.export_field(result.session_id)   # -> RenderService CreateScene(kind, asset npz)

Sources are a session id (str) or a Latent(w, generator). Cameras are GanCamera or PinholeCamera
(world units). Both implementations return services.inversion dataclasses with numpy arrays and raise
HeadForgeError subclasses. invert_portrait() chains face analysis and inversion (a photo without a
face fails with InvalidArgument reason NO_FACE).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import grpc
import numpy as np

from headforge.v1 import inversion_pb2, inversion_pb2_grpc
from services.common import tensors
from services.common.client import GrpcTransport, RetryPolicy
from services.common.errors import InvalidArgument, from_rpc_error
from services.common.images import decode_png, to_image_input
from services.inversion import servicer as conv
from services.inversion.invert import Cancelled, InvertSettings, ProgressEvent
from services.inversion.mesh import MeshResult
from services.inversion.service import Description, GanCamera, InversionService, InvertResult
from services.inversion.service import Latent  # noqa: F401 (re-exported: sources are str | Latent)

ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class MeshOutput:
    mesh: MeshResult | None    # TENSORS
    data: bytes                # GLB / PLY file
    num_vertices: int
    num_faces: int


class InProcessInversionClient:
    """Plain calls on an InversionService in this process (no serialisation)."""

    def __init__(self, service: InversionService):
        self.service = service

    def describe(self) -> Description:
        return self.service.describe()

    def invert(self, image: np.ndarray, camera, *, generator: str = "", conditioning_camera=None, mask=None,
               settings: InvertSettings | None = None, on_progress: ProgressCallback | None = None,
               cancelled=lambda: False) -> InvertResult:
        """cancelled: polled every step; True stops the inversion (Cancelled) and creates no session."""
        result = None
        for ev in self.service.invert(np.asarray(image), _gan(camera), generator=generator,
                                      conditioning_camera=None if conditioning_camera is None else _gan(conditioning_camera),
                                      mask=mask, settings=settings, cancelled=cancelled):
            if isinstance(ev, InvertResult):
                result = ev
            elif on_progress is not None:
                on_progress(ev)
        return result

    def render(self, source, cameras, outputs=("rgb",), *, neural_resolution: int = 0, conditioning_camera=None,
               dtype: str = "float32") -> dict[str, np.ndarray]:
        out = self.service.render(source, [_gan(c) for c in cameras], outputs, neural_resolution=neural_resolution,
                                  conditioning_camera=None if conditioning_camera is None else _gan(conditioning_camera))
        return {k: v.astype(np.float16) if dtype == "float16" else v for k, v in out.items()}

    def extract_mesh(self, source, resolution: int = 0, density_threshold: float = 0.0, *,
                     largest_component_only: bool = False, max_faces: int = 0, vertex_colors: bool = False,
                     fmt: str = "tensors") -> MeshOutput:
        mesh, data = self.service.extract_mesh(source, resolution, density_threshold,
                                               largest_component_only=largest_component_only, max_faces=max_faces,
                                               vertex_colors=vertex_colors, fmt=fmt)
        return MeshOutput(mesh if fmt == "tensors" else None, data, len(mesh.vertices), len(mesh.faces))

    def export_field(self, source, dtype: str = "float32") -> bytes:
        return self.service.export_field(source, dtype)

    def close_session(self, session_id: str) -> None:
        self.service.close_session(session_id)

    def close(self) -> None:
        pass


class GrpcInversionClient:
    """The same interface over gRPC."""

    def __init__(self, target: str, *, token: str | None = None, timeout_s: float = 600.0,
                 retry: RetryPolicy | None = None, max_message_bytes: int = 64 * 1024 * 1024):
        self.transport = GrpcTransport(target, token=token, timeout_s=timeout_s, retry=retry,
                                       max_message_bytes=max_message_bytes)
        self.stub = inversion_pb2_grpc.InversionServiceStub(self.transport.channel)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        self.transport.wait_ready(conv.SERVICE_NAME, timeout_s)

    def describe(self) -> Description:
        r = self.transport.call(self.stub.Describe, inversion_pb2.InversionDescribeRequest())
        return _describe_from_proto(r)

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
               cancelled=lambda: False) -> InvertResult:
        """cancelled: polled at every progress event; True cancels the call (the server stops at its next
        step and creates no session) and raises Cancelled."""
        req = inversion_pb2.InvertRequest(generator=generator, image=to_image_input(np.asarray(image)),
                                          camera=conv.camera_to_proto(camera),
                                          options=conv.settings_to_proto(settings or InvertSettings()))
        if conditioning_camera is not None:
            req.conditioning_camera.CopyFrom(conv.camera_to_proto(conditioning_camera))
        if mask is not None:
            m = np.asarray(mask)
            if m.dtype != np.uint8:
                m = (np.clip(m, 0, 1) * 255 + 0.5).astype(np.uint8)
            req.mask.CopyFrom(to_image_input(np.repeat(m[..., None], 3, axis=2) if m.ndim == 2 else m))
        result = None
        call = self.stub.Invert(req, timeout=self.transport.timeout_s, metadata=self.transport.metadata)
        for ev in self._iterate(call):
            if cancelled():
                call.cancel()
                raise Cancelled("inversion cancelled by the caller", reason="CANCELLED")
            if ev.HasField("result"):
                result = _result_from_proto(ev.result)
            elif on_progress is not None:
                p = ev.progress
                preview = decode_png(ev.preview.data) if ev.preview.data else None
                on_progress(ProgressEvent(p.stage, p.step, p.total_steps, dict(p.scalars), p.elapsed_s, preview))
        return result

    def render(self, source, cameras, outputs=("rgb",), *, neural_resolution: int = 0, conditioning_camera=None,
               dtype: str = "float32") -> dict[str, np.ndarray]:
        req = inversion_pb2.InversionRenderRequest(source=conv.source_to_proto(source),
                                                   cameras=[conv.camera_to_proto(c) for c in cameras],
                                                   outputs=list(outputs), neural_resolution=neural_resolution,
                                                   dtype=tensors.DType.FLOAT16 if dtype == "float16" else 0)
        if conditioning_camera is not None:
            req.conditioning_camera.CopyFrom(conv.camera_to_proto(conditioning_camera))
        r = self.transport.call(self.stub.Render, req)
        return {k: np.array(tensors.from_proto(v, k)) for k, v in r.outputs.items()}

    def extract_mesh(self, source, resolution: int = 0, density_threshold: float = 0.0, *,
                     largest_component_only: bool = False, max_faces: int = 0, vertex_colors: bool = False,
                     fmt: str = "tensors") -> MeshOutput:
        req = inversion_pb2.ExtractMeshRequest(source=conv.source_to_proto(source), resolution=resolution,
                                               density_threshold=density_threshold,
                                               largest_component_only=largest_component_only, max_faces=max_faces,
                                               vertex_colors=vertex_colors, format=conv.MESH_FORMAT_ENUMS[fmt])
        r = self.transport.call(self.stub.ExtractMesh, req)
        mesh = None
        if fmt == "tensors":
            colors = np.array(tensors.from_proto(r.vertex_colors, "vertex_colors")) if r.vertex_colors.data else None
            mesh = MeshResult(np.array(tensors.from_proto(r.vertices, "vertices")),
                              np.array(tensors.from_proto(r.faces, "faces")),
                              np.array(tensors.from_proto(r.vertex_normals, "vertex_normals")), colors)
        return MeshOutput(mesh, r.data, r.num_vertices, r.num_faces)

    def export_field(self, source, dtype: str = "float32", chunk_bytes: int = 0) -> bytes:
        req = inversion_pb2.ExportFieldRequest(source=conv.source_to_proto(source), chunk_bytes=chunk_bytes,
                                               dtype=tensors.DType.FLOAT16 if dtype == "float16" else 0)
        parts = list(self._stream(self.stub.ExportField, req))
        data = b"".join(c.data for c in parts)
        if parts and parts[0].sha256 and hashlib.sha256(data).hexdigest() != parts[0].sha256:
            raise IOError("download corrupted: sha256 mismatch")
        return data

    def close_session(self, session_id: str) -> None:
        self.transport.call(self.stub.CloseSession, inversion_pb2.CloseInversionSessionRequest(session_id=session_id))

    def close(self) -> None:
        self.transport.close()


def _gan(c) -> GanCamera:
    return c if isinstance(c, GanCamera) else GanCamera.world(c)


def _result_from_proto(r: inversion_pb2.InvertResult) -> InvertResult:
    return InvertResult(r.session_id, max(0.0, r.expires_at.ToSeconds() - __import__("time").time()),
                        np.array(tensors.from_proto(r.latent, "latent")), conv.metrics_from_proto(r.latent_metrics),
                        conv.metrics_from_proto(r.pti_metrics) if r.HasField("pti_metrics") else None,
                        decode_png(r.reconstruction.data), r.generator, r.session_bytes)


def _describe_from_proto(r: inversion_pb2.InversionDescribeResponse) -> Description:
    from services.inversion.service import GeneratorInfo
    from services.inversion.sessions import InversionLimits

    gens = []
    lpips_name = ""
    for g in r.generators:
        sha = next((m.sha256 for m in g.models if m.role == "generator"), "")
        path = next((m.name for m in g.models if m.role == "generator"), "")
        lpips_name = next((m.name for m in g.models if m.role == "lpips"), lpips_name)
        gens.append(GeneratorInfo(g.name, g.is_default, conv.KIND_NAMES.get(g.kind, ""), g.weights_format,
                                  g.available, g.unavailable_reason, path, sha, None,
                                  {v: k for k, v in conv.CROP_ENUMS.items()}.get(g.crop_style, "")))
    limits = InversionLimits(session_idle_ttl_s=r.session_idle_ttl_s or 1, max_sessions_per_tenant=r.max_sessions_per_tenant or 1,
                             max_tenant_bytes=r.max_tenant_bytes or 1, max_session_bytes=r.max_session_bytes or 1)
    return Description(gens, limits, r.max_message_bytes, r.device, lpips_name, "")


def invert_portrait(face_client, inversion_client, photo, *, generator: str = "", settings: InvertSettings | None = None,
                    use_mask: bool = True, on_progress: ProgressCallback | None = None) -> InvertResult:
    """Face analysis (the generator's crop style, its output size) then inversion of the largest face.
    InvalidArgument reason NO_FACE when the photo has no face."""
    from services.face.types import AnalyzeOptions

    desc = inversion_client.describe()
    info = next((g for g in desc.generators if (g.name == generator) or (not generator and g.is_default)), None)
    style = (info.crop_style if info is not None else "") or "head"
    result = face_client.analyze(photo, AnalyzeOptions(max_faces=1, crop_style=style, skip_embedding=True,
                                                       skip_masks=not use_mask))
    if not result.faces:
        raise InvalidArgument("image", "no face found in the photo; inversion needs one face", reason="NO_FACE")
    face = result.faces[0]
    return inversion_client.invert(face.aligned_crop, GanCamera.generator(face.crop_camera), generator=generator,
                                   mask=face.crop_head_mask if use_mask else None, settings=settings,
                                   on_progress=on_progress)
