"""gRPC render service: protos <-> RenderService. Errors are HeadForgeError, mapped by the runtime."""

from __future__ import annotations

import hashlib

import grpc
import numpy as np

from headforge.v1 import render_pb2, render_pb2_grpc
from services.common import tensors
from services.common.errors import InvalidArgument, ResourceExhausted, require
from services.common.images import image_input_to_rgb8
from services.core.cameras import PinholeCamera
from services.render import convert
from services.render.service import RenderService
from services.render.types import GradientTerm, RegularizerTerm


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
        fmt = convert.asset_format(src.format, f"{field}.format") or fmt or convert.sniff_format(data)
        return data, fmt

    def CreateScene(self, request, context):
        kind = convert.KIND_NAMES.get(request.kind)
        require(kind is not None, "kind", "set a scene kind")
        asset = self._asset(request.asset, "asset") if request.WhichOneof("init") == "asset" else None
        init = convert.init_from_proto(request)
        if "mesh_asset" in init:  # an uploaded id or inline bytes -> (bytes, format), as the service takes it
            init["mesh_asset"] = self._asset(init["mesh_asset"], "dmtet.mesh_asset")
        info = self.service.create_scene(kind, init, asset=asset,
                                         optimizer=convert.optimizer_from_proto(request.optimizer),
                                         options=dict(request.options), seed=request.seed, label=request.label)
        return render_pb2.CreateSceneResponse(scene_id=info.scene_id, kind=request.kind, backend=info.backend,
                                              param_counts=info.param_counts, step=info.step,
                                              memory_bytes=info.memory_bytes, expires_at=convert.timestamp(info.expires_in_s))

    def Render(self, request, context):
        which = request.WhichOneof("background")
        background = None
        if which == "color":
            background = np.array([request.color.r, request.color.g, request.color.b], np.float32)
        elif which == "random_color":
            background = "random" if request.random_color else None
        elif which == "image":
            background = convert.optional_tensor(request.image, "image", (3, 4))
        require(request.dtype in (0, tensors.DType.FLOAT32, tensors.DType.FLOAT16), "dtype", "FLOAT32 or FLOAT16")
        r = self.service.render(request.scene_id, convert.cameras_from_proto(request.cameras), list(request.outputs),
                                requires_grad=request.requires_grad, background=background,
                                width=request.width, height=request.height, seed=request.seed,
                                shading=request.shading,
                                light_direction=([request.light_direction.x, request.light_direction.y,
                                                  request.light_direction.z]
                                                 if request.HasField("light_direction") else None),
                                environment=convert.environment_from_proto(request.environment),
                                expression=request.expression)
        half = request.dtype == tensors.DType.FLOAT16
        out = {k: tensors.to_proto(v.astype(np.float16) if half and v.dtype == np.float32 else v)
               for k, v in r.outputs.items()}
        resp = render_pb2.RenderSceneResponse(outputs=out, step_handle=r.step_handle, step=r.step)
        if r.step_handle:
            resp.step_handle_expires_at.CopyFrom(convert.timestamp(r.handle_expires_in_s))
        return resp

    def ApplyGradients(self, request, context):
        terms = [GradientTerm(t.step_handle, t.output,
                              np.array(tensors.from_proto(t.grad, f"terms[{i}].grad", dtypes=[tensors.DType.FLOAT32, tensors.DType.FLOAT16])).astype(np.float32),
                              t.weight, t.name) for i, t in enumerate(request.terms)]
        regs = [RegularizerTerm(r.name, r.weight, dict(r.params)) for r in request.regularizers]
        r = self.service.apply_gradients(request.scene_id, terms, regs, request.accumulate)
        return render_pb2.ApplyGradientsResponse(step=r.step, skipped=r.skipped, learning_rates=r.learning_rates,
                                                 grad_norms=r.grad_norms, term_grad_norms=r.term_grad_norms,
                                                 regularizer_values=r.regularizer_values,
                                                 num_gaussians=r.num_gaussians, densified=r.densified,
                                                 pruned=r.pruned)

    def GradientCosine(self, request, context):
        reference = convert.gradient_terms_from_proto(request.reference.terms, "reference.terms")
        candidates = [convert.gradient_terms_from_proto(c.terms, f"candidates[{k}].terms")
                      for k, c in enumerate(request.candidates)]
        r = self.service.gradient_cosine(request.scene_id, reference, candidates)
        return render_pb2.GradientCosineResponse(cosines=r.cosines, reference_norm=r.reference_norm,
                                                 candidate_norms=r.candidate_norms, step=r.step)

    def GetState(self, request, context):
        data = self.service.get_state(request.scene_id, request.exclude_optimizer)
        yield from convert.chunks(data, "checkpoint", 0)

    def SetState(self, request, context):
        data, _ = self._asset(request.checkpoint, "checkpoint")
        info = self.service.set_state(request.scene_id, data)
        return render_pb2.SetSceneStateResponse(step=info.step, memory_bytes=info.memory_bytes)

    def Export(self, request, context):
        fmt = convert.FORMAT_NAMES.get(request.format)
        require(fmt is not None and fmt != "checkpoint", "format", "choose GLB, OBJ_ZIP, PLY or NPZ")
        require(0 <= request.chunk_bytes <= self.service.max_message_bytes // 2, "chunk_bytes",
                f"must be 0..{self.service.max_message_bytes // 2}")
        data = self.service.export(request.scene_id, fmt, request.scale, request.texture_size,
                                   expression=request.expression)
        yield from convert.chunks(data, fmt, request.chunk_bytes)

    def CloseScene(self, request, context):
        self.service.close_scene(request.scene_id)
        return render_pb2.CloseSceneResponse()

    def UploadAsset(self, request_iterator, context):
        parts, expected, digest, fmt = [], None, "", ""
        received = 0
        for i, chunk in enumerate(request_iterator):
            if i == 0:
                require(chunk.offset == 0, "chunks[0].offset", "the first chunk starts at offset 0")
                expected, digest, fmt = chunk.total_size, chunk.sha256, convert.asset_format(chunk.format, "chunks[0].format")
                if expected > self.service.limits.max_asset_bytes:  # refuse before receiving it all
                    raise ResourceExhausted(f"asset of {expected} bytes exceeds {self.service.limits.max_asset_bytes}",
                                            reason="ASSET_TOO_LARGE")
                self.service.reserve_upload(expected)
            else:  # a later chunk repeats the first one's format or leaves it unset
                later = convert.asset_format(chunk.format, f"chunks[{i}].format")
                require(later in ("", fmt), f"chunks[{i}].format", "differs from the first chunk's")
            require(chunk.offset == received, f"chunks[{i}].offset", f"expected {received}, got {chunk.offset}")
            parts.append(chunk.data)
            received += len(chunk.data)
            require(expected is None or received <= expected, f"chunks[{i}]", "more bytes than total_size")
        data = b"".join(parts)
        require(expected is not None, "chunks", "no chunk received")
        require(received == expected, "total_size", f"declared {expected}, received {received}")
        asset_id = self.service.upload_asset(data, fmt or convert.sniff_format(data), digest)
        return render_pb2.UploadAssetResponse(asset_id=asset_id, size=len(data),
                                              sha256=hashlib.sha256(data).hexdigest(),
                                              format=convert.FORMAT_ENUMS.get(fmt or convert.sniff_format(data), 0),
                                              expires_at=convert.timestamp(self.service.limits.asset_ttl_s))

    def BackProjectTexture(self, request, context):
        image = image_input_to_rgb8(request.image, max_pixels=self.service.limits.max_render_pixels, field="image")
        mask = None
        if request.mask.WhichOneof("source"):
            mask = image_input_to_rgb8(request.mask, max_pixels=self.service.limits.max_render_pixels, field="mask")
            mask = mask[..., 0] > 127
        camera = PinholeCamera.from_proto(request.camera, "camera")
        write = convert.enum_value(request.write, convert.WRITE_MODES, "write")
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
        return convert.describe_to_proto(self.service.describe())


def register(service: RenderService):
    def _register(server: grpc.Server) -> list[str]:
        render_pb2_grpc.add_RenderServiceServicer_to_server(RenderServicer(service), server)
        return [convert.SERVICE_NAME]
    return _register
