"""Guidance messages <-> services.guidance.types, both ways, in one place: the servicer reads requests and writes
responses with it, the gRPC client writes requests and reads responses. Proto enums map to the plain names of
types.py (_CONTROL_KINDS, _VARIANTS, _OUTPUT_KINDS, weightings, samplings)."""

from __future__ import annotations

import time

import numpy as np

from headforge.v1 import common_pb2, guidance_pb2
from services.common import tensors
from services.common.errors import InvalidArgument, require
from services.common.images import image_input_to_rgb8, to_image_input
from services.core.cameras import PinholeCamera
from services.core.models import ModelRecord
from services.guidance.types import (BackboneInfo, CaptionerInfo, CaptionRequest, CaptionResult, Conditions, ControlInput, ControlSpec, DenoiseRequest,
                                     DenoiseResult, DistillRequest, DistillResult, GenerateRequest, GenerateResult,
                                     GuidanceDescription, ImageDiagnostics, InpaintRequest, InpaintResult, LoraSpec,
                                     QueueOptions, ReferenceView, TimestepSchedule)

DType = tensors.DType
FLOATS = (DType.FLOAT32, DType.FLOAT16)
G = guidance_pb2

# proto enum value -> the plain name types.py uses (several values may share one name)
_CONTROL_KINDS = {G.ControlInput.KIND_UNSPECIFIED: "", G.ControlInput.LANDMARKS: "landmarks",
                  G.ControlInput.CANNY: "canny", G.ControlInput.NORMAL: "normal", G.ControlInput.DEPTH: "depth"}
_VARIANTS = {G.DISTILL_VARIANT_UNSPECIFIED: "sds", G.DISTILL_VARIANT_SDS: "sds", G.DISTILL_VARIANT_ISD: "isd",
             G.DISTILL_VARIANT_IMAGE_CONDITIONED: "image_conditioned", G.DISTILL_VARIANT_VIDEO: "video"}
_WEIGHTINGS = {G.SDS_WEIGHTING_UNSPECIFIED: "sds", G.SDS_WEIGHTING_SDS: "sds", G.SDS_WEIGHTING_UNIFORM: "uniform",
               G.SDS_WEIGHTING_SQRT: "sqrt", G.SDS_WEIGHTING_FANTASIA: "fantasia"}
_SAMPLINGS = {G.TimestepSchedule.SAMPLING_UNSPECIFIED: "uniform", G.TimestepSchedule.UNIFORM: "uniform",
              G.TimestepSchedule.LINEAR_DECAY: "linear_decay"}
_OUTPUT_KINDS = {G.GUIDANCE_OUTPUT_KIND_RGB: "rgb", G.GUIDANCE_OUTPUT_KIND_NORMAL: "normal",
                 G.GUIDANCE_OUTPUT_KIND_DEPTH: "depth", G.GUIDANCE_OUTPUT_KIND_ALBEDO: "albedo"}


def _inverse(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        out.setdefault(v, k)
    return out


_GRAD_DTYPES = {0: "float32", DType.FLOAT32: "float32", DType.FLOAT16: "float16"}


def _enum(value: int, names: dict, field: str) -> str:
    if value not in names:  # proto3 enums are open: any int32 arrives
        raise InvalidArgument(field, f"unknown enum value {value}")
    return names[value]


def _tensor(msg: common_pb2.Tensor, field: str, *, dtypes=None, ndim=None) -> np.ndarray | None:
    if not msg.data and not msg.shape and not msg.dtype:
        return None
    return np.array(tensors.from_proto(msg, field, dtypes=dtypes, ndim=ndim))


def _deadline(queue: G.QueueOptions, context) -> QueueOptions:
    deadline = None
    if queue.HasField("deadline"):
        try:
            deadline = queue.deadline.ToNanoseconds() / 1e9
        except ValueError as e:  # seconds or nanos outside a Timestamp's range
            raise InvalidArgument("queue.deadline", str(e)) from None
    remaining = context.time_remaining() if context is not None else None
    if remaining is not None and remaining < 1e8:  # grpc reports a huge number when there is no deadline
        rpc_deadline = time.time() + remaining
        deadline = rpc_deadline if deadline is None else min(deadline, rpc_deadline)
    return QueueOptions(priority=queue.priority, deadline=deadline)


def _queue_to_proto(q: QueueOptions) -> G.QueueOptions:
    msg = G.QueueOptions(priority=q.priority)
    if q.deadline is not None:
        msg.deadline.FromNanoseconds(int(q.deadline * 1e9))
    return msg


def _cameras(cams, field: str) -> list[PinholeCamera]:
    return [PinholeCamera.from_proto(c, f"{field}[{i}]") for i, c in enumerate(cams)]


# -- conditions -------------------------------------------------------------------------------------------
def conditions_from_proto(c: G.Conditions, field: str = "conditions") -> Conditions:
    controls = []
    for i, ctrl in enumerate(c.controls):
        f = f"{field}.controls[{i}]"
        landmarks = None
        if ctrl.landmarks:
            require(len({len(s.points) for s in ctrl.landmarks}) == 1, f"{f}.landmarks",
                    "every landmark set needs the same number of points")
            landmarks = np.array([[[p.x, p.y] for p in s.points] for s in ctrl.landmarks], dtype=np.float32)
            landmarks = landmarks[0] if len(ctrl.landmarks) == 1 else landmarks
        controls.append(ControlInput(kind=_enum(ctrl.kind, _CONTROL_KINDS, f"{f}.kind"), name=ctrl.name,
                                     image=_tensor(ctrl.image, f"{f}.image", dtypes=(*FLOATS, DType.UINT8), ndim=(3, 4)),
                                     landmarks=landmarks, scale=ctrl.scale))
    return Conditions(backbone=c.backbone, prompt=c.prompt, negative_prompt=c.negative_prompt,
                      view_dependent_prompt=c.view_dependent_prompt,
                      identity_embedding=_tensor(c.identity_embedding, f"{field}.identity_embedding", dtypes=FLOATS,
                                                 ndim=(1, 2)),
                      identity_scale=c.identity_scale, identity_adapter=c.identity_adapter, expression=c.expression,
                      expression_scale=c.expression_scale, controls=controls,
                      loras=[(s.name, s.scale) for s in c.loras], text_cache_key=c.text_cache_key,
                      identity_cache_key=c.identity_cache_key)


def conditions_to_proto(c: Conditions) -> G.Conditions:
    msg = G.Conditions(backbone=c.backbone, prompt=c.prompt, negative_prompt=c.negative_prompt,
                       view_dependent_prompt=c.view_dependent_prompt, identity_scale=c.identity_scale,
                       identity_adapter=c.identity_adapter, expression=c.expression,
                       expression_scale=c.expression_scale, text_cache_key=c.text_cache_key,
                       identity_cache_key=c.identity_cache_key)
    if c.identity_embedding is not None:
        msg.identity_embedding.CopyFrom(tensors.to_proto(np.asarray(c.identity_embedding, np.float32)))
    kinds = _inverse(_CONTROL_KINDS)
    for ctrl in c.controls:
        m = msg.controls.add(kind=kinds[ctrl.kind], name=ctrl.name, scale=ctrl.scale)
        if ctrl.image is not None:
            m.image.CopyFrom(tensors.to_proto(ctrl.image))
        if ctrl.landmarks is not None:
            for pts in np.asarray(ctrl.landmarks).reshape(-1, *np.asarray(ctrl.landmarks).shape[-2:]):
                m.landmarks.add().points.extend([common_pb2.Point2(x=float(x), y=float(y)) for x, y in pts])
    for name, scale in c.loras:
        msg.loras.add(name=name, scale=scale)
    return msg


# -- requests ---------------------------------------------------------------------------------------------
def _images(msg: common_pb2.Tensor, field: str = "images") -> np.ndarray:
    a = _tensor(msg, field, dtypes=FLOATS, ndim=4)
    if a is None:
        raise InvalidArgument(field, "images are required")
    return a


def distill_from_proto(r: G.DistillRequest, context=None) -> DistillRequest:
    t = r.timesteps
    return DistillRequest(
        images=_images(r.images), conditions=conditions_from_proto(r.conditions), cameras=_cameras(r.cameras, "cameras"),
        variant=_enum(r.variant, _VARIANTS, "variant"), reference=_reference(r),
        guidance_scale=r.guidance_scale,
        timesteps=TimestepSchedule(t_min=t.t_min, t_max=t.t_max, t_min_end=t.t_min_end, t_max_end=t.t_max_end,
                                   training_fraction=t.training_fraction,
                                   sampling=_enum(t.sampling, _SAMPLINGS, "timesteps.sampling"), shared=t.shared,
                                   t=list(t.t)),
        weighting=_enum(r.weighting, _WEIGHTINGS, "weighting"),
        noise=_tensor(r.noise, "noise", dtypes=FLOATS, ndim=4), seed=r.seed, resolution=r.resolution,
        grad_clip=r.grad_clip, grad_dtype=_enum(r.grad_dtype, _GRAD_DTYPES, "grad_dtype"),
        return_noise=r.return_noise, return_denoised=r.return_denoised, queue=_deadline(r.queue, context),
        background=_background(r))


def _background(r) -> np.ndarray | None:
    return _tensor(r.background, "background", dtypes=FLOATS, ndim=(1, 2))


def _background_to_proto(msg, background: np.ndarray | None):
    if background is not None:
        msg.background.CopyFrom(tensors.to_proto(np.asarray(background, np.float32)))
    return msg


MAX_REFERENCE_PIXELS = 4096 * 4096


def _reference(r: G.DistillRequest) -> ReferenceView | None:
    if not r.HasField("reference"):
        return None
    if not r.reference.HasField("camera"):
        raise InvalidArgument("reference.camera", "a reference view needs its camera")
    image = image_input_to_rgb8(r.reference.image, max_pixels=MAX_REFERENCE_PIXELS, field="reference.image")
    return ReferenceView(image=image, camera=PinholeCamera.from_proto(r.reference.camera, "reference.camera"))


def distill_to_proto(r: DistillRequest) -> G.DistillRequest:
    t = r.timesteps
    msg = G.DistillRequest(
        images=tensors.to_proto(r.images), cameras=[c.to_proto() for c in r.cameras],
        conditions=conditions_to_proto(r.conditions), variant=_inverse(_VARIANTS)[r.variant],
        guidance_scale=r.guidance_scale,
        timesteps=G.TimestepSchedule(t_min=t.t_min, t_max=t.t_max, t_min_end=t.t_min_end, t_max_end=t.t_max_end,
                                     training_fraction=t.training_fraction, sampling=_inverse(_SAMPLINGS)[t.sampling],
                                     shared=t.shared, t=t.t),
        weighting=_inverse(_WEIGHTINGS)[r.weighting], seed=r.seed, resolution=r.resolution, grad_clip=r.grad_clip,
        grad_dtype=DType.FLOAT16 if r.grad_dtype == "float16" else DType.FLOAT32, return_noise=r.return_noise,
        return_denoised=r.return_denoised, queue=_queue_to_proto(r.queue))
    if r.noise is not None:
        msg.noise.CopyFrom(tensors.to_proto(np.asarray(r.noise, np.float32)))
    if r.reference is not None:
        msg.reference.image.CopyFrom(to_image_input(r.reference.image))
        msg.reference.camera.CopyFrom(r.reference.camera.to_proto())
    return _background_to_proto(msg, r.background)


def denoise_from_proto(r: G.DenoiseRequest, context=None) -> DenoiseRequest:
    return DenoiseRequest(images=_images(r.images), strength=r.strength, conditions=conditions_from_proto(r.conditions),
                          cameras=_cameras(r.cameras, "cameras"), num_steps=r.num_steps,
                          guidance_scale=r.guidance_scale, scheduler=r.scheduler,
                          noise=_tensor(r.noise, "noise", dtypes=FLOATS, ndim=4), seed=r.seed,
                          resolution=r.resolution, queue=_deadline(r.queue, context), background=_background(r))


def denoise_to_proto(r: DenoiseRequest) -> G.DenoiseRequest:
    msg = G.DenoiseRequest(images=tensors.to_proto(r.images), cameras=[c.to_proto() for c in r.cameras],
                           conditions=conditions_to_proto(r.conditions), strength=r.strength, num_steps=r.num_steps,
                           guidance_scale=r.guidance_scale, scheduler=r.scheduler, seed=r.seed,
                           resolution=r.resolution, queue=_queue_to_proto(r.queue))
    if r.noise is not None:
        msg.noise.CopyFrom(tensors.to_proto(np.asarray(r.noise, np.float32)))
    return _background_to_proto(msg, r.background)


def inpaint_from_proto(r: G.InpaintRequest, context=None) -> InpaintRequest:
    mask = _tensor(r.mask, "mask", dtypes=(*FLOATS, DType.UINT8), ndim=(3, 4))
    if mask is None:
        raise InvalidArgument("mask", "a mask is required")
    return InpaintRequest(images=_images(r.images), mask=mask, conditions=conditions_from_proto(r.conditions),
                          cameras=_cameras(r.cameras, "cameras"), strength=r.strength, num_steps=r.num_steps,
                          guidance_scale=r.guidance_scale, scheduler=r.scheduler, seed=r.seed,
                          resolution=r.resolution, queue=_deadline(r.queue, context), background=_background(r))


def inpaint_to_proto(r: InpaintRequest) -> G.InpaintRequest:
    return _background_to_proto(G.InpaintRequest(images=tensors.to_proto(r.images), mask=tensors.to_proto(r.mask),
                            cameras=[c.to_proto() for c in r.cameras], conditions=conditions_to_proto(r.conditions),
                            strength=r.strength, num_steps=r.num_steps, guidance_scale=r.guidance_scale,
                            scheduler=r.scheduler, seed=r.seed, resolution=r.resolution,
                            queue=_queue_to_proto(r.queue)), r.background)


def generate_from_proto(r: G.GenerateRequest, context=None) -> GenerateRequest:
    return GenerateRequest(conditions=conditions_from_proto(r.conditions), num_images=r.num_images, width=r.width,
                           height=r.height, num_steps=r.num_steps, guidance_scale=r.guidance_scale,
                           scheduler=r.scheduler, seed=r.seed, encode_png=r.encode_png,
                           queue=_deadline(r.queue, context), cameras=_cameras(r.cameras, "cameras"))


def generate_to_proto(r: GenerateRequest) -> G.GenerateRequest:
    return G.GenerateRequest(conditions=conditions_to_proto(r.conditions), num_images=r.num_images, width=r.width,
                             height=r.height, num_steps=r.num_steps, guidance_scale=r.guidance_scale,
                             scheduler=r.scheduler, seed=r.seed, encode_png=r.encode_png,
                             queue=_queue_to_proto(r.queue), cameras=[c.to_proto() for c in r.cameras])


# -- responses --------------------------------------------------------------------------------------------
def describe_to_proto(d: GuidanceDescription) -> G.GuidanceDescribeResponse:
    kinds = _inverse(_OUTPUT_KINDS)
    variants = {v: k for k, v in _VARIANTS.items() if k != G.DISTILL_VARIANT_UNSPECIFIED}
    control_kinds = _inverse(_CONTROL_KINDS)
    msg = G.GuidanceDescribeResponse(max_batch_images=d.max_batch_images, max_queue_delay_ms=d.max_queue_delay_ms,
                                     max_queue_depth=d.max_queue_depth, queue_depth=d.queue_depth,
                                     max_image_pixels=d.max_image_pixels, max_message_bytes=d.max_message_bytes,
                                     cache_ttl_s=d.cache_ttl_s, device=d.device)
    for info, is_default in d.backbones:
        b = msg.backbones.add(
            name=info.name, is_default=is_default, backend=info.backend, family=info.family,
            output_kind=kinds.get(info.output_kind, 0), native_resolution=info.native_resolution,
            latent_scale_factor=info.latent_scale_factor, latent_channels=info.latent_channels,
            num_train_timesteps=info.num_train_timesteps, prediction_type=info.prediction_type,
            variants=[variants[v] for v in info.variants], denoise=info.denoise, inpaint=info.inpaint,
            generate=info.generate, controls=[c.name for c in info.controls],
            control_kinds=sorted({control_kinds[c.kind] for c in info.controls if c.kind}),
            control_kind_of=[control_kinds.get(c.kind, 0) for c in info.controls],
            depth_convention=info.depth_convention,
            identity_adapters=list(info.identity_adapters), identity_embedding_dim=info.identity_embedding_dim,
            expression_adapter=info.expression_adapter, schedulers=list(info.schedulers),
            min_frames=info.min_frames, max_frames=info.max_frames)
        for m in info.models:
            b.models.add(role=m.role, backend=m.backend, name=m.name, sha256=m.sha256, provenance=m.provenance,
                         license=m.license)
        for lora in info.loras:
            b.loras.add(name=lora.name, output_kind=kinds.get(lora.output_kind, 0))
    for c in d.captioners:
        msg.captioners.add(name=c.name, is_default=c.is_default, kind=c.kind, model=_model_to_proto(c.model))
    return msg


def _model_to_proto(m: ModelRecord) -> common_pb2.ModelInfo:
    return common_pb2.ModelInfo(role=m.role, backend=m.backend, name=m.name, sha256=m.sha256, provenance=m.provenance)


def _model_from_proto(m: common_pb2.ModelInfo) -> ModelRecord:
    return ModelRecord(m.role, m.backend, m.name, m.sha256, m.provenance)


# -- Caption ----------------------------------------------------------------------------------------------
MAX_CAPTION_IMAGE_PIXELS = 4096 * 4096   # decoding bound on the wire; the service applies max_image_pixels


def caption_from_proto(r: G.CaptionRequest, context=None) -> CaptionRequest:
    """InvalidArgument (IMAGE_EMPTY / IMAGE_UNDECODABLE ...) for a missing or bad picture."""
    image = image_input_to_rgb8(r.image, max_pixels=MAX_CAPTION_IMAGE_PIXELS, field="image")
    return CaptionRequest(image=image, captioner=r.captioner, prompt=r.prompt, max_new_tokens=r.max_new_tokens)


def caption_to_proto(r: CaptionRequest) -> G.CaptionRequest:
    return G.CaptionRequest(captioner=r.captioner, image=to_image_input(r.image), prompt=r.prompt,
                            max_new_tokens=r.max_new_tokens)


def caption_result_to_proto(r: CaptionResult) -> G.CaptionResponse:
    return G.CaptionResponse(caption=r.caption, captioner=r.captioner, model=_model_to_proto(r.model))


def caption_result_from_proto(r: G.CaptionResponse) -> CaptionResult:
    return CaptionResult(caption=r.caption, captioner=r.captioner, model=_model_from_proto(r.model))


def describe_from_proto(d: G.GuidanceDescribeResponse) -> GuidanceDescription:
    backbones = []
    for b in d.backbones:
        info = BackboneInfo(
            name=b.name, backend=b.backend, family=b.family, output_kind=_OUTPUT_KINDS.get(b.output_kind, "rgb"),
            native_resolution=b.native_resolution, latent_scale_factor=b.latent_scale_factor,
            latent_channels=b.latent_channels, num_train_timesteps=b.num_train_timesteps,
            prediction_type=b.prediction_type, variants=tuple(_VARIANTS[v] for v in b.variants),
            denoise=b.denoise, inpaint=b.inpaint, generate=b.generate,
            controls=tuple(ControlSpec(name, _CONTROL_KINDS.get(kind, "")) for name, kind in
                           zip(b.controls, list(b.control_kind_of) or [0] * len(b.controls))),
            depth_convention=b.depth_convention or "inverse_depth",
            identity_adapters=tuple(b.identity_adapters), identity_embedding_dim=b.identity_embedding_dim,
            expression_adapter=b.expression_adapter,
            loras=tuple(LoraSpec(x.name, _OUTPUT_KINDS.get(x.output_kind, "rgb")) for x in b.loras),
            schedulers=tuple(b.schedulers), min_frames=b.min_frames, max_frames=b.max_frames,
            models=tuple(ModelRecord(m.role, m.backend, m.name, m.sha256, m.provenance, m.license) for m in b.models))
        backbones.append((info, b.is_default))
    return GuidanceDescription(backbones=backbones, max_batch_images=d.max_batch_images,
                               max_queue_delay_ms=d.max_queue_delay_ms, max_queue_depth=d.max_queue_depth,
                               queue_depth=d.queue_depth, max_image_pixels=d.max_image_pixels,
                               max_message_bytes=d.max_message_bytes, cache_ttl_s=d.cache_ttl_s, device=d.device,
                               captioners=[CaptionerInfo(c.name, c.kind, c.is_default, _model_from_proto(c.model))
                                           for c in d.captioners])


def _array(msg: common_pb2.Tensor) -> np.ndarray | None:
    """A response tensor as a writable array; None when the field is unset."""
    return np.array(tensors.from_proto(msg, "response")) if msg.shape else None


def distill_result_to_proto(r: DistillResult) -> G.DistillResponse:
    msg = G.DistillResponse(grad=tensors.to_proto(r.grad), seed=r.seed, backbone=r.backbone)
    for d in r.diagnostics:
        msg.diagnostics.add(timestep=d.timestep, t=d.t, weight=d.weight, loss=d.loss, grad_norm=d.grad_norm,
                            latent_grad_norm=d.latent_grad_norm)
    if r.noise is not None:
        msg.noise.CopyFrom(tensors.to_proto(r.noise))
    if r.denoised is not None:
        msg.denoised.CopyFrom(tensors.to_proto(r.denoised))
    return msg


def distill_result_from_proto(r: G.DistillResponse) -> DistillResult:
    return DistillResult(grad=_array(r.grad), seed=r.seed, backbone=r.backbone, noise=_array(r.noise),
                         denoised=_array(r.denoised),
                         diagnostics=[ImageDiagnostics(d.timestep, d.t, d.weight, d.loss, d.grad_norm,
                                                       d.latent_grad_norm) for d in r.diagnostics])


def denoise_result_to_proto(r: DenoiseResult) -> G.DenoiseResponse:
    return G.DenoiseResponse(images=tensors.to_proto(r.images), start_timestep=r.start_timestep, seed=r.seed)


def denoise_result_from_proto(r: G.DenoiseResponse) -> DenoiseResult:
    return DenoiseResult(images=_array(r.images), start_timestep=r.start_timestep, seed=r.seed)


def inpaint_result_to_proto(r: InpaintResult, float16: bool = False) -> G.InpaintResponse:
    """float16: send the images as FLOAT16 (the request's images were)."""
    images = r.images.astype(np.float16) if float16 else r.images
    return G.InpaintResponse(images=tensors.to_proto(images), seed=r.seed)


def inpaint_result_from_proto(r: G.InpaintResponse) -> InpaintResult:
    return InpaintResult(images=_array(r.images), seed=r.seed)


def generate_result_to_proto(r: GenerateResult) -> G.GenerateResponse:
    return G.GenerateResponse(images=tensors.to_proto(r.images), encoded=[
        common_pb2.EncodedImage(data=p, mime_type="image/png") for p in r.png],
        output_kind=_inverse(_OUTPUT_KINDS)[r.output_kind], seed=r.seed, depth_convention=r.depth_convention)


def generate_result_from_proto(r: G.GenerateResponse) -> GenerateResult:
    return GenerateResult(images=_array(r.images), output_kind=_OUTPUT_KINDS.get(r.output_kind, "rgb"), seed=r.seed,
                          png=[e.data for e in r.encoded], depth_convention=r.depth_convention)
