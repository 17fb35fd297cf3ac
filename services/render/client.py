"""The render service's client interface (RenderClient), its gRPC implementation, and connect().

    client = connect("inprocess")                  # InProcessRenderClient (service.py): RenderService here
    client = connect("127.0.0.1:50054")            # GrpcRenderClient: a `headforge serve render` process
    scene = client.create_scene("gaussians", {"num_points": 20000})
    out = client.render(scene.scene_id, cameras, ["rgb"], requires_grad=True)
    client.apply_gradients(scene.scene_id, [GradientTerm(out.step_handle, "rgb", dloss_drgb)])

Both return services.render.types dataclasses with numpy arrays and raise HeadForgeError subclasses.
Importing this module loads neither torch nor the representations (the in-process client is imported
inside connect()).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Protocol

import numpy as np

from headforge.v1 import common_pb2, render_pb2, render_pb2_grpc
from services.common import tensors
from services.common.client import INPROCESS, GrpcTransport, RetryPolicy
from services.common.errors import from_rpc_error
from services.render import convert
from services.render.types import (BackProjection, DensifyResult, GradientCosineResult, GradientTerm, OptimizerSpec,
                                   RegularizerTerm, RenderDescription,
                                   RenderResult, SceneInfo, StepResult)

if TYPE_CHECKING:
    from services.render.types import RenderLimits


class RenderClient(Protocol):
    def create_scene(self, kind: str, init: dict | None = None, *, asset: tuple[bytes, str] | None = None,
                     optimizer: OptimizerSpec | None = None, options: dict[str, str] | None = None, seed: int = 0,
                     label: str = "") -> SceneInfo:
        """kind: a registered scene kind (describe().kinds); init: the kind's init fields, or asset=(bytes, fmt)."""

    def render(self, scene_id: str, cameras, outputs=("rgb", "alpha"), *, requires_grad: bool = False,
               background=None, width: int = 0, height: int = 0, seed: int = 0, shading: str = "",
               light_direction=None, environment=None, expression: int = 0) -> RenderResult:
        """cameras: PinholeCamera list; outputs (N, C, H, W) float32; requires_grad keeps a step handle.
        shading "", "unlit", "diffuse" (light_direction (3,)), "pbr" or "pbr_diffuse" (environment: types.EnvironmentMap).
        expression: index into the scene's expression codes (kind dmtet_expression; 0 elsewhere)."""

    def apply_gradients(self, scene_id: str, terms: list[GradientTerm], regularizers: list[RegularizerTerm] = (),
                        accumulate: bool = False) -> StepResult:
        """terms: dL/d(output) images for step handles of this scene; one optimiser step unless accumulate."""

    def gradient_cosine(self, scene_id: str, reference: list[GradientTerm],
                        candidates: list[list[GradientTerm]]) -> GradientCosineResult:
        """Cosine of each candidate set's parameter gradient with the reference set's, without stepping or
        changing anything (render.proto GradientCosine)."""

    def get_state(self, scene_id: str, exclude_optimizer: bool = False) -> bytes: ...

    def set_state(self, scene_id: str, checkpoint: bytes) -> SceneInfo: ...

    def export(self, scene_id: str, fmt: str, scale: float = 1.0, texture_size: int = 0,
               expression: int = 0) -> bytes:
        """fmt: glb, obj_zip, ply or npz (per kind: describe()); expression as for render."""

    def close_scene(self, scene_id: str) -> None: ...

    def back_project(self, scene_id: str, image, camera, mask=None, min_cosine: float = 0.2,
                     write: str = "none") -> BackProjection:
        """image uint8 (H, W, 3) or float (3, H, W) in [0, 1]; write: none, visible or unseen texels."""

    def densify(self, scene_id: str, grad_threshold: float = 0.0, prune_opacity: float = 0.0,
                prune_max_scale: float = 0.0, reset_opacity: float = 0.0) -> DensifyResult:
        """One explicit densification pass on a Gaussian scene (FAILED_PRECONDITION for other kinds)."""

    def upload_asset(self, data: bytes, fmt: str) -> str: ...

    def describe(self) -> RenderDescription: ...

    def close(self) -> None: ...


class GrpcRenderClient:
    """The RenderClient interface over gRPC, with deadlines and retries on UNAVAILABLE."""

    def __init__(self, target: str, *, token: str | None = None, timeout_s: float = 120.0,
                 retry: RetryPolicy | None = None):
        self.transport = GrpcTransport(target, token=token, timeout_s=timeout_s, retry=retry)
        self.stub = render_pb2_grpc.RenderServiceStub(self.transport.channel)

    def create_scene(self, kind, init=None, *, asset=None, optimizer: OptimizerSpec | None = None,
                     options=None, seed=0, label="") -> SceneInfo:
        req = render_pb2.CreateSceneRequest(kind=convert.KIND_ENUMS[kind], options=options or {}, seed=seed,
                                            label=label)
        if asset is not None:
            data, fmt = asset
            req.asset.CopyFrom(render_pb2.AssetSource(data=data, format=convert.FORMAT_ENUMS.get(fmt, 0)))
        else:
            convert.init_to_proto(req, kind, init or {})
        if optimizer is not None:
            convert.optimizer_to_proto(req.optimizer, optimizer)
        r = self.transport.call(self.stub.CreateScene, req)
        return SceneInfo(r.scene_id, convert.KIND_NAMES[r.kind], r.backend, dict(r.param_counts), r.step,
                         r.memory_bytes, 0.0)

    def render(self, scene_id, cameras, outputs=("rgb", "alpha"), *, requires_grad=False, background=None,
               width=0, height=0, seed=0, shading="", light_direction=None, environment=None,
               expression=0) -> RenderResult:
        req = render_pb2.RenderSceneRequest(scene_id=scene_id, cameras=[c.to_proto() for c in cameras],
                                            outputs=list(outputs), requires_grad=requires_grad, width=width,
                                            height=height, seed=seed, shading=shading, expression=expression)
        if light_direction is not None:
            x, y, z = (float(v) for v in np.asarray(light_direction, np.float32).reshape(3))
            req.light_direction.CopyFrom(common_pb2.Point3(x=x, y=y, z=z))
        if environment is not None:
            req.environment.CopyFrom(convert.environment_to_proto(environment))
        if isinstance(background, str) and background == "random":
            req.random_color = True
        elif background is not None:
            bg = np.asarray(background, np.float32)
            if bg.shape == (3,):
                req.color.CopyFrom(render_pb2.Color3(r=float(bg[0]), g=float(bg[1]), b=float(bg[2])))
            else:
                req.image.CopyFrom(tensors.to_proto(bg))
        r = self.transport.call(self.stub.Render, req)
        outs = {k: np.array(tensors.from_proto(v, k)) for k, v in r.outputs.items()}
        return RenderResult(outs, r.step_handle, r.step)

    def apply_gradients(self, scene_id, terms: list[GradientTerm], regularizers: list[RegularizerTerm] = (),
                        accumulate=False) -> StepResult:
        req = render_pb2.ApplyGradientsRequest(scene_id=scene_id, accumulate=accumulate)
        for t in terms:
            g = t.grad.detach().cpu().numpy() if hasattr(t.grad, "detach") else np.asarray(t.grad)
            req.terms.add(step_handle=t.step_handle, output=t.output, grad=tensors.to_proto(g.astype(np.float32)),
                          weight=t.weight, name=t.name)
        for reg in regularizers:
            req.regularizers.add(name=reg.name, weight=reg.weight, params=reg.params)
        r = self.transport.call(self.stub.ApplyGradients, req)
        return StepResult(r.step, r.skipped, dict(r.learning_rates), dict(r.grad_norms), dict(r.term_grad_norms),
                          dict(r.regularizer_values), r.num_gaussians, r.densified, r.pruned)

    def gradient_cosine(self, scene_id, reference: list[GradientTerm],
                        candidates: list[list[GradientTerm]]) -> GradientCosineResult:
        req = render_pb2.GradientCosineRequest(scene_id=scene_id)
        convert.gradient_terms_to_proto(req.reference.terms, reference)
        for c in candidates:
            convert.gradient_terms_to_proto(req.candidates.add().terms, c)
        r = self.transport.call(self.stub.GradientCosine, req)
        return GradientCosineResult(list(r.cosines), r.reference_norm, list(r.candidate_norms), r.step)

    def _collect(self, stream_method, request) -> bytes:
        import grpc

        try:
            chunks = list(stream_method(request, timeout=self.transport.timeout_s, metadata=self.transport.metadata))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        data = b"".join(c.data for c in chunks)
        if chunks and chunks[0].sha256 and hashlib.sha256(data).hexdigest() != chunks[0].sha256:
            raise IOError("download corrupted: sha256 mismatch")
        return data

    def get_state(self, scene_id, exclude_optimizer=False) -> bytes:
        return self._collect(self.stub.GetState, render_pb2.GetSceneStateRequest(
            scene_id=scene_id, exclude_optimizer=exclude_optimizer))

    def set_state(self, scene_id, checkpoint: bytes) -> SceneInfo:
        req = render_pb2.SetSceneStateRequest(scene_id=scene_id, checkpoint=render_pb2.AssetSource(
            data=checkpoint, format=render_pb2.ASSET_FORMAT_CHECKPOINT))
        r = self.transport.call(self.stub.SetState, req)
        return SceneInfo(scene_id, "", "", {}, r.step, r.memory_bytes, 0.0)

    def export(self, scene_id, fmt: str, scale: float = 1.0, texture_size: int = 0, expression: int = 0) -> bytes:
        return self._collect(self.stub.Export, render_pb2.ExportSceneRequest(
            scene_id=scene_id, format=convert.FORMAT_ENUMS[fmt], scale=scale, texture_size=texture_size,
            expression=expression))

    def close_scene(self, scene_id) -> None:
        self.transport.call(self.stub.CloseScene, render_pb2.CloseSceneRequest(scene_id=scene_id))

    def back_project(self, scene_id, image, camera, mask=None, min_cosine=0.2, write="none") -> BackProjection:
        from services.common.images import to_image_input

        img = np.asarray(image)
        if img.dtype != np.uint8:  # float (3, H, W) in [0, 1] travels as pixels
            req_image = common_pb2.ImageInput(pixels=tensors.to_proto(img.astype(np.float32)))
        else:
            req_image = to_image_input(img)
        req = render_pb2.BackProjectTextureRequest(scene_id=scene_id, image=req_image, camera=camera.to_proto(),
                                                   min_cosine=min_cosine,
                                                   write={"none": 1, "visible": 2, "unseen": 3}[write])
        if mask is not None:
            m = (np.asarray(mask) > 0).astype(np.uint8) * 255
            req.mask.CopyFrom(to_image_input(np.repeat(m[..., None], 3, axis=2)))
        r = self.transport.call(self.stub.BackProjectTexture, req)
        return BackProjection(np.array(tensors.from_proto(r.texture, "texture")),
                              np.array(tensors.from_proto(r.visibility, "visibility")), r.texels_written)

    def densify(self, scene_id, grad_threshold=0.0, prune_opacity=0.0, prune_max_scale=0.0,
                reset_opacity=0.0) -> DensifyResult:
        return convert.densify_from_proto(self.transport.call(self.stub.DensifyGaussians, render_pb2.DensifyGaussiansRequest(
            scene_id=scene_id, grad_threshold=grad_threshold, prune_opacity=prune_opacity,
            prune_max_scale=prune_max_scale, reset_opacity=reset_opacity)))

    def upload_asset(self, data: bytes, fmt: str, chunk_bytes: int = 1 << 20) -> str:
        chunks = convert.chunks(data, fmt, chunk_bytes)
        try:
            r = self.stub.UploadAsset(chunks, timeout=self.transport.timeout_s, metadata=self.transport.metadata)
        except __import__("grpc").RpcError as err:
            raise from_rpc_error(err) from None
        return r.asset_id

    def describe(self) -> RenderDescription:
        return convert.describe_from_proto(self.transport.call(self.stub.Describe, render_pb2.RenderDescribeRequest()))

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        self.transport.wait_ready(convert.SERVICE_NAME, timeout_s)

    def close(self) -> None:
        self.transport.close()


def connect(endpoint: str, *, token: str | None = None, retry: RetryPolicy | None = None,
            limits: "RenderLimits | None" = None) -> RenderClient:
    """endpoint "inprocess" (services.common.client.INPROCESS): an InProcessRenderClient on a new
    RenderService with limits (default RenderLimits()). "HOST:PORT": a GrpcRenderClient with token and
    retry; limits are ignored there (the server has its own)."""
    if endpoint != INPROCESS:
        return GrpcRenderClient(endpoint, token=token, retry=retry)
    from services.render.service import InProcessRenderClient, RenderService

    return InProcessRenderClient(RenderService(limits) if limits is not None else None)
