"""gRPC render service: protos <-> RenderService. Errors are HeadForgeError, mapped by the runtime."""

from __future__ import annotations

import hashlib
import time

import grpc
import numpy as np
from google.protobuf import timestamp_pb2

from headforge.v1 import common_pb2, render_pb2, render_pb2_grpc
from services.common import tensors
from services.core.cameras import PinholeCamera
from services.common.errors import InvalidArgument, ResourceExhausted, require
from services.common.images import image_input_to_rgb8
from services.render.types import LrSchedule, OptimizerSpec
from services.render.service import RenderService
from services.render.types import GradientTerm, RegularizerTerm

SERVICE_NAME = render_pb2.DESCRIPTOR.services_by_name["RenderService"].full_name
DType = tensors.DType
KIND_NAMES = {render_pb2.SCENE_KIND_GAUSSIANS: "gaussians", render_pb2.SCENE_KIND_MESH: "mesh",
              render_pb2.SCENE_KIND_DMTET: "dmtet", render_pb2.SCENE_KIND_TRIPLANE: "triplane",
              render_pb2.SCENE_KIND_TRIGRID: "trigrid", render_pb2.SCENE_KIND_PYRAMID_TRIGRID: "pyramid_trigrid"}
KIND_ENUMS = {v: k for k, v in KIND_NAMES.items()}
FORMAT_NAMES = {render_pb2.ASSET_FORMAT_GLB: "glb", render_pb2.ASSET_FORMAT_OBJ_ZIP: "obj_zip",
                render_pb2.ASSET_FORMAT_PLY: "ply", render_pb2.ASSET_FORMAT_NPZ: "npz",
                render_pb2.ASSET_FORMAT_CHECKPOINT: "checkpoint"}
FORMAT_ENUMS = {v: k for k, v in FORMAT_NAMES.items()}
_INTERP = {0: "linear", 1: "linear", 2: "exponential", 3: "cosine"}


def _timestamp(seconds_from_now: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int((time.time() + seconds_from_now) * 1e9))
    return ts


def _tensor(msg: common_pb2.Tensor, field: str, ndim=None) -> np.ndarray | None:
    if not msg.data and not msg.shape:
        return None
    return np.array(tensors.from_proto(msg, field, ndim=ndim))


def init_from_proto(req: render_pb2.CreateSceneRequest) -> dict:
    """The kind-specific init as a plain dict named like the proto fields (tensors as numpy)."""
    which = req.WhichOneof("init")
    if which == "gaussians":
        g = req.gaussians
        s = g.strategy
        return {"num_points": g.num_points, "radius": g.radius, "points": _tensor(g.points, "gaussians.points", 2),
                "colors": _tensor(g.colors, "gaussians.colors", 2), "sh_degree": g.sh_degree, "opacity": g.opacity,
                "strategy": {"disabled": s.disabled, "densify_every": s.densify_every, "densify_from": s.densify_from,
                             "densify_until": s.densify_until, "grad_threshold": s.grad_threshold,
                             "percent_dense": s.percent_dense, "prune_opacity": s.prune_opacity,
                             "opacity_reset_every": s.opacity_reset_every, "max_gaussians": s.max_gaussians}}
    if which == "mesh":
        return _mesh_init(req.mesh, "mesh")
    if which == "dmtet":
        d = req.dmtet
        out = {"grid_resolution": d.grid_resolution, "extent": d.extent, "texture_size": d.texture_size}
        shape = d.WhichOneof("shape")
        if shape == "sphere_radius":
            out["sphere_radius"] = d.sphere_radius
        elif shape == "mesh":
            out["mesh"] = _mesh_init(d.mesh, "dmtet.mesh")
        elif shape == "mesh_asset":
            out["mesh_asset"] = d.mesh_asset
        return out
    if which == "field":
        f = req.field
        return {"resolution": f.resolution, "channels": f.channels, "depth": f.depth, "levels": list(f.levels),
                "box_size": f.box_size, "init_std": f.init_std}
    return {}


def _mesh_init(m: render_pb2.MeshInit, field: str) -> dict:
    return {"vertices": _tensor(m.vertices, f"{field}.vertices", 2), "faces": _tensor(m.faces, f"{field}.faces", 2),
            "uvs": _tensor(m.uvs, f"{field}.uvs", 2), "texture": _tensor(m.texture, f"{field}.texture", 3),
            "texture_size": m.texture_size}


def optimizer_from_proto(o: render_pb2.OptimizerConfig) -> OptimizerSpec:
    lrs, frozen = {}, set()
    for i, g in enumerate(o.groups):
        require(bool(g.name), f"optimizer.groups[{i}].name", "is empty")
        if g.frozen:
            frozen.add(g.name)
        if g.HasField("lr"):
            lr = g.lr
            require(all(np.isfinite([lr.start_value, lr.end_value])) and lr.start_value >= 0 and lr.end_value >= 0,
                    f"optimizer.groups[{i}].lr", "values must be finite and >= 0")
            lrs[g.name] = LrSchedule(lr.start_step, lr.start_value, lr.end_value, lr.end_step,
                                     _INTERP.get(lr.interpolation, "linear"))
    kind = "adan" if o.kind == render_pb2.OptimizerConfig.ADAN else "adam"
    require(len(o.betas) in (0, 2 if kind == "adam" else 3), "optimizer.betas",
            f"{kind} takes {2 if kind == 'adam' else 3} betas, got {len(o.betas)}")
    require(all(0 <= b < 1 for b in o.betas), "optimizer.betas", "must lie in [0, 1)")
    return OptimizerSpec(kind, lrs, frozen, tuple(o.betas), o.eps or 1e-8, o.weight_decay, o.max_grad_norm)


def cameras_from_proto(cams, field: str = "cameras") -> list[PinholeCamera]:
    require(len(cams) > 0, field, "at least one camera is needed")
    return [PinholeCamera.from_proto(c, f"{field}[{i}]") for i, c in enumerate(cams)]


def _chunks(data: bytes, fmt: str, chunk_bytes: int):
    digest = hashlib.sha256(data).hexdigest()
    size = chunk_bytes or (1 << 20)
    for offset in range(0, max(len(data), 1), size):
        chunk = render_pb2.AssetChunk(offset=offset, data=data[offset:offset + size])
        if offset == 0:
            chunk.total_size, chunk.sha256, chunk.format = len(data), digest, FORMAT_ENUMS.get(fmt, 0)
        yield chunk


class RenderServicer(render_pb2_grpc.RenderServiceServicer):
    def __init__(self, service: RenderService):
        self.service = service

    def _asset(self, src: render_pb2.AssetSource, field: str) -> tuple[bytes, str]:
        which = src.WhichOneof("source")
        if which == "asset_id":
            data, fmt = self.service.asset_bytes(src.asset_id)
        elif which == "data":
            data, fmt = src.data, ""
        else:
            raise InvalidArgument(field, "give data or asset_id")
        fmt = FORMAT_NAMES.get(src.format, fmt) or _sniff(data)
        return data, fmt

    def CreateScene(self, request, context):
        kind = KIND_NAMES.get(request.kind)
        require(kind is not None, "kind", "set a scene kind")
        asset = self._asset(request.asset, "asset") if request.WhichOneof("init") == "asset" else None
        info = self.service.create_scene(kind, init_from_proto(request), asset=asset,
                                         optimizer=optimizer_from_proto(request.optimizer),
                                         options=dict(request.options), seed=request.seed, label=request.label)
        return render_pb2.CreateSceneResponse(scene_id=info.scene_id, kind=request.kind, backend=info.backend,
                                              param_counts=info.param_counts, step=info.step,
                                              memory_bytes=info.memory_bytes, expires_at=_timestamp(info.expires_in_s))

    def Render(self, request, context):
        which = request.WhichOneof("background")
        background = None
        if which == "color":
            background = np.array([request.color.r, request.color.g, request.color.b], np.float32)
        elif which == "random_color":
            background = "random" if request.random_color else None
        elif which == "image":
            background = _tensor(request.image, "image", (3, 4))
        require(request.dtype in (0, DType.FLOAT32, DType.FLOAT16), "dtype", "FLOAT32 or FLOAT16")
        r = self.service.render(request.scene_id, cameras_from_proto(request.cameras), list(request.outputs),
                                requires_grad=request.requires_grad, background=background,
                                width=request.width, height=request.height, seed=request.seed)
        half = request.dtype == DType.FLOAT16
        out = {k: tensors.to_proto(v.astype(np.float16) if half and v.dtype == np.float32 else v)
               for k, v in r.outputs.items()}
        resp = render_pb2.RenderSceneResponse(outputs=out, step_handle=r.step_handle, step=r.step)
        if r.step_handle:
            resp.step_handle_expires_at.CopyFrom(_timestamp(r.handle_expires_in_s))
        return resp

    def ApplyGradients(self, request, context):
        terms = [GradientTerm(t.step_handle, t.output,
                              np.array(tensors.from_proto(t.grad, f"terms[{i}].grad", dtypes=[DType.FLOAT32, DType.FLOAT16])).astype(np.float32),
                              t.weight, t.name) for i, t in enumerate(request.terms)]
        regs = [RegularizerTerm(r.name, r.weight, dict(r.params)) for r in request.regularizers]
        r = self.service.apply_gradients(request.scene_id, terms, regs, request.accumulate)
        return render_pb2.ApplyGradientsResponse(step=r.step, skipped=r.skipped, learning_rates=r.learning_rates,
                                                 grad_norms=r.grad_norms, term_grad_norms=r.term_grad_norms,
                                                 regularizer_values=r.regularizer_values,
                                                 num_gaussians=r.num_gaussians, densified=r.densified,
                                                 pruned=r.pruned)

    def GetState(self, request, context):
        data = self.service.get_state(request.scene_id, request.exclude_optimizer)
        yield from _chunks(data, "checkpoint", 0)

    def SetState(self, request, context):
        data, _ = self._asset(request.checkpoint, "checkpoint")
        info = self.service.set_state(request.scene_id, data)
        return render_pb2.SetSceneStateResponse(step=info.step, memory_bytes=info.memory_bytes)

    def Export(self, request, context):
        fmt = FORMAT_NAMES.get(request.format)
        require(fmt is not None and fmt != "checkpoint", "format", "choose GLB, OBJ_ZIP, PLY or NPZ")
        require(0 <= request.chunk_bytes <= self.service.max_message_bytes // 2, "chunk_bytes",
                f"must be 0..{self.service.max_message_bytes // 2}")
        data = self.service.export(request.scene_id, fmt, request.scale, request.texture_size)
        yield from _chunks(data, fmt, request.chunk_bytes)

    def CloseScene(self, request, context):
        self.service.close_scene(request.scene_id)
        return render_pb2.CloseSceneResponse()

    def UploadAsset(self, request_iterator, context):
        parts, expected, digest, fmt = [], None, "", ""
        received = 0
        for i, chunk in enumerate(request_iterator):
            if i == 0:
                require(chunk.offset == 0, "chunks[0].offset", "the first chunk starts at offset 0")
                expected, digest, fmt = chunk.total_size, chunk.sha256, FORMAT_NAMES.get(chunk.format, "")
                if expected > self.service.limits.max_asset_bytes:  # refuse before receiving it all
                    raise ResourceExhausted(f"asset of {expected} bytes exceeds {self.service.limits.max_asset_bytes}",
                                            reason="ASSET_TOO_LARGE")
            require(chunk.offset == received, f"chunks[{i}].offset", f"expected {received}, got {chunk.offset}")
            parts.append(chunk.data)
            received += len(chunk.data)
            require(expected is None or received <= expected, f"chunks[{i}]", "more bytes than total_size")
        data = b"".join(parts)
        require(expected is not None, "chunks", "no chunk received")
        require(received == expected, "total_size", f"declared {expected}, received {received}")
        asset_id = self.service.upload_asset(data, fmt or _sniff(data), digest)
        return render_pb2.UploadAssetResponse(asset_id=asset_id, size=len(data),
                                              sha256=hashlib.sha256(data).hexdigest(),
                                              format=FORMAT_ENUMS.get(fmt or _sniff(data), 0),
                                              expires_at=_timestamp(self.service.limits.asset_ttl_s))

    def BackProjectTexture(self, request, context):
        image = image_input_to_rgb8(request.image, max_pixels=self.service.limits.max_render_pixels, field="image")
        mask = None
        if request.mask.WhichOneof("source"):
            mask = image_input_to_rgb8(request.mask, max_pixels=self.service.limits.max_render_pixels, field="mask")
            mask = mask[..., 0] > 127
        camera = PinholeCamera.from_proto(request.camera, "camera")
        write = {0: "none", 1: "none", 2: "visible", 3: "unseen"}[request.write]
        r = self.service.back_project(request.scene_id, image, camera, mask, request.min_cosine or 0.2, write)
        return render_pb2.BackProjectTextureResponse(texture=tensors.to_proto(r.texture),
                                                     visibility=tensors.to_proto(r.visibility),
                                                     texels_written=r.texels_written)

    def DensifyGaussians(self, request, context):
        r = self.service.densify(request.scene_id, request.grad_threshold, request.prune_opacity,
                                 request.prune_max_scale, request.reset_opacity)
        return render_pb2.DensifyGaussiansResponse(num_gaussians=r.num_gaussians, densified=r.densified,
                                                   pruned=r.pruned)

    def Describe(self, request, context):
        d = self.service.describe()
        resp = render_pb2.RenderDescribeResponse(
            dmtet_resolutions=d.dmtet_resolutions, device=d.device, scene_idle_ttl_s=int(d.limits.scene_idle_ttl_s),
            step_handle_ttl_s=int(d.limits.step_handle_ttl_s),
            max_pending_steps_per_scene=d.limits.max_pending_steps_per_scene,
            max_scenes_per_tenant=d.limits.max_scenes_per_tenant, max_scene_bytes=d.limits.max_scene_bytes,
            max_tenant_bytes=d.limits.max_tenant_bytes, max_render_pixels=d.limits.max_render_pixels,
            max_gaussians=d.limits.max_gaussians, max_asset_bytes=d.limits.max_asset_bytes,
            asset_ttl_s=int(d.limits.asset_ttl_s), max_message_bytes=d.max_message_bytes)
        for k in d.kinds:
            resp.kinds.add(kind=KIND_ENUMS[k.kind], backends=k.backends, default_learning_rates=k.default_lrs,
                           outputs=k.outputs, regularizers=k.regularizers,
                           export_formats=[FORMAT_ENUMS[f] for f in k.export_formats], options=k.options)
        return resp


def _sniff(data: bytes) -> str:
    if data[:4] == b"glTF":
        return "glb"
    if data[:4] == b"PK\x03\x04":
        return "npz" if b".npy" in data[:2048] else "obj_zip"
    if data[:3] == b"ply":
        return "ply"
    return "checkpoint"


def register(service: RenderService):
    def _register(server: grpc.Server) -> list[str]:
        render_pb2_grpc.add_RenderServiceServicer_to_server(RenderServicer(service), server)
        return [SERVICE_NAME]
    return _register
