"""The render service's one client interface, with an in-process and a gRPC implementation.

    client = InProcessRenderClient()               # embedded: calls RenderService directly
    client = GrpcRenderClient("127.0.0.1:50054")   # a `headforge serve render` process
    scene = client.create_scene("gaussians", {"num_points": 20000})
    out = client.render(scene.scene_id, cameras, ["rgb"], requires_grad=True)
    client.apply_gradients(scene.scene_id, [GradientTerm(out.step_handle, "rgb", dloss_drgb)])

Both return services.render.service dataclasses with numpy arrays and raise HeadForgeError subclasses.
"""

from __future__ import annotations

import hashlib

import numpy as np

from headforge.v1 import common_pb2, render_pb2, render_pb2_grpc
from services.common import tensors
from services.common.client import GrpcTransport, RetryPolicy
from services.common.errors import from_rpc_error
from services.render import servicer as conv
from services.render.types import OptimizerSpec
from services.render.service import RenderService
from services.render.types import BackProjection, GradientTerm, RegularizerTerm, RenderDescription, RenderResult, SceneInfo, StepResult


class InProcessRenderClient:
    """Plain function calls on a RenderService in this process: no serialisation."""

    def __init__(self, service: RenderService | None = None):
        self.service = service or RenderService()

    def create_scene(self, kind, init=None, **kw) -> SceneInfo:
        return self.service.create_scene(kind, init, **kw)

    def render(self, scene_id, cameras, outputs=("rgb", "alpha"), **kw) -> RenderResult:
        return self.service.render(scene_id, cameras, outputs, **kw)

    def apply_gradients(self, scene_id, terms, regularizers=(), accumulate=False) -> StepResult:
        return self.service.apply_gradients(scene_id, list(terms), list(regularizers), accumulate)

    def get_state(self, scene_id, exclude_optimizer=False) -> bytes:
        return self.service.get_state(scene_id, exclude_optimizer)

    def set_state(self, scene_id, checkpoint: bytes) -> SceneInfo:
        return self.service.set_state(scene_id, checkpoint)

    def export(self, scene_id, fmt: str, scale: float = 1.0, texture_size: int = 0) -> bytes:
        return self.service.export(scene_id, fmt, scale, texture_size)

    def close_scene(self, scene_id) -> None:
        self.service.close_scene(scene_id)

    def back_project(self, scene_id, image, camera, mask=None, min_cosine=0.2, write="none") -> BackProjection:
        return self.service.back_project(scene_id, image, camera, mask, min_cosine, write)

    def densify(self, scene_id, **kw):
        return self.service.densify(scene_id, **kw)

    def upload_asset(self, data: bytes, fmt: str) -> str:
        return self.service.upload_asset(data, fmt)

    def describe(self) -> RenderDescription:
        return self.service.describe()

    def close(self) -> None:
        pass


class GrpcRenderClient:
    """The same interface over gRPC."""

    def __init__(self, target: str, *, token: str | None = None, timeout_s: float = 120.0,
                 retry: RetryPolicy | None = None):
        self.transport = GrpcTransport(target, token=token, timeout_s=timeout_s, retry=retry)
        self.stub = render_pb2_grpc.RenderServiceStub(self.transport.channel)

    def create_scene(self, kind, init=None, *, asset=None, optimizer: OptimizerSpec | None = None,
                     options=None, seed=0, label="") -> SceneInfo:
        req = render_pb2.CreateSceneRequest(kind=conv.KIND_ENUMS[kind], options=options or {}, seed=seed,
                                            label=label)
        if asset is not None:
            data, fmt = asset
            req.asset.CopyFrom(render_pb2.AssetSource(data=data, format=conv.FORMAT_ENUMS.get(fmt, 0)))
        else:
            _init_to_proto(req, kind, init or {})
        if optimizer is not None:
            _optimizer_to_proto(req.optimizer, optimizer)
        r = self.transport.call(self.stub.CreateScene, req)
        return SceneInfo(r.scene_id, conv.KIND_NAMES[r.kind], r.backend, dict(r.param_counts), r.step,
                         r.memory_bytes, 0.0)

    def render(self, scene_id, cameras, outputs=("rgb", "alpha"), *, requires_grad=False, background=None,
               width=0, height=0, seed=0) -> RenderResult:
        req = render_pb2.RenderSceneRequest(scene_id=scene_id, cameras=[c.to_proto() for c in cameras],
                                            outputs=list(outputs), requires_grad=requires_grad, width=width,
                                            height=height, seed=seed)
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

    def export(self, scene_id, fmt: str, scale: float = 1.0, texture_size: int = 0) -> bytes:
        return self._collect(self.stub.Export, render_pb2.ExportSceneRequest(
            scene_id=scene_id, format=conv.FORMAT_ENUMS[fmt], scale=scale, texture_size=texture_size))

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

    def densify(self, scene_id, grad_threshold=0.0, prune_opacity=0.0, prune_max_scale=0.0, reset_opacity=0.0):
        return self.transport.call(self.stub.DensifyGaussians, render_pb2.DensifyGaussiansRequest(
            scene_id=scene_id, grad_threshold=grad_threshold, prune_opacity=prune_opacity,
            prune_max_scale=prune_max_scale, reset_opacity=reset_opacity))

    def upload_asset(self, data: bytes, fmt: str, chunk_bytes: int = 1 << 20) -> str:
        chunks = conv._chunks(data, fmt, chunk_bytes)
        try:
            r = self.stub.UploadAsset(chunks, timeout=self.transport.timeout_s, metadata=self.transport.metadata)
        except __import__("grpc").RpcError as err:
            raise from_rpc_error(err) from None
        return r.asset_id

    def describe(self):
        return self.transport.call(self.stub.Describe, render_pb2.RenderDescribeRequest())

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        self.transport.wait_ready(conv.SERVICE_NAME, timeout_s)

    def close(self) -> None:
        self.transport.close()


def _t(a) -> common_pb2.Tensor:
    return tensors.to_proto(np.asarray(a))


def _init_to_proto(req: render_pb2.CreateSceneRequest, kind: str, init: dict) -> None:
    def mesh(msg: render_pb2.MeshInit, m: dict) -> None:
        for name in ("vertices", "uvs", "texture"):
            if m.get(name) is not None:
                getattr(msg, name).CopyFrom(_t(np.asarray(m[name], np.float32)))
        if m.get("faces") is not None:
            msg.faces.CopyFrom(_t(np.asarray(m["faces"], np.int32)))
        msg.texture_size = int(m.get("texture_size", 0))

    if kind == "gaussians":
        g = req.gaussians
        g.num_points, g.radius = int(init.get("num_points", 0)), float(init.get("radius", 0))
        g.sh_degree, g.opacity = int(init.get("sh_degree", 0)), float(init.get("opacity", 0))
        for name in ("points", "colors"):
            if init.get(name) is not None:
                getattr(g, name).CopyFrom(_t(np.asarray(init[name], np.float32)))
        for key, value in (init.get("strategy") or {}).items():
            setattr(g.strategy, key, value)
    elif kind == "mesh":
        mesh(req.mesh, init)
    elif kind == "dmtet":
        d = req.dmtet
        d.grid_resolution, d.extent = int(init.get("grid_resolution", 0)), float(init.get("extent", 0))
        d.texture_size = int(init.get("texture_size", 0))
        if "sphere_radius" in init:
            d.sphere_radius = float(init["sphere_radius"])
        elif "mesh" in init:
            mesh(d.mesh, init["mesh"])
    else:
        f = req.field
        f.resolution, f.channels, f.depth = (int(init.get(k, 0)) for k in ("resolution", "channels", "depth"))
        f.levels.extend(int(v) for v in init.get("levels", []))
        f.box_size, f.init_std = float(init.get("box_size", 0)), float(init.get("init_std", 0))


def _optimizer_to_proto(msg: render_pb2.OptimizerConfig, spec: OptimizerSpec) -> None:
    msg.kind = render_pb2.OptimizerConfig.ADAN if spec.kind == "adan" else render_pb2.OptimizerConfig.ADAM
    interp = {"linear": 1, "exponential": 2, "cosine": 3}
    for name in sorted(set(spec.lrs) | spec.frozen):
        g = msg.groups.add(name=name, frozen=name in spec.frozen)
        if name in spec.lrs:
            s = spec.lrs[name]
            g.lr.CopyFrom(render_pb2.LrSchedule(start_step=s.start_step, start_value=s.start_value,
                                                end_value=s.end_value, end_step=s.end_step,
                                                interpolation=interp[s.interpolation]))
    msg.betas.extend(spec.betas)
    msg.eps, msg.weight_decay, msg.max_grad_norm = spec.eps, spec.weight_decay, spec.max_grad_norm
