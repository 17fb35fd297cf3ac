"""Inversion service messages <-> services.inversion.types, used by the servicer and the gRPC client
(numpy and protos only: no torch)."""

from __future__ import annotations

import hashlib
import time

import numpy as np
from google.protobuf import timestamp_pb2

from headforge.v1 import common_pb2, face_pb2, inversion_pb2, render_pb2
from services.common import tensors
from services.common.errors import InvalidArgument, require
from services.common.images import decode_png, encode_png, to_image_input
from services.core.cameras import PinholeCamera
from services.inversion.types import (CameraOffsets, Description, GanCamera, GeneratorInfo, InversionLimits,
                                      InvertResult, InvertSettings, Latent, MeshOutput, MeshResult, Metrics,
                                      ProgressEvent)

SERVICE_NAME = inversion_pb2.DESCRIPTOR.services_by_name["InversionService"].full_name
DType = tensors.DType
KIND_ENUMS = {"triplane": inversion_pb2.GENERATOR_KIND_TRIPLANE, "trigrid": inversion_pb2.GENERATOR_KIND_TRIGRID,
              "pyramid_trigrid": inversion_pb2.GENERATOR_KIND_PYRAMID_TRIGRID}
KIND_NAMES = {v: k for k, v in KIND_ENUMS.items()}
CROP_ENUMS = {"ffhq": face_pb2.FFHQ, "head": face_pb2.HEAD}
CROP_NAMES = {v: k for k, v in CROP_ENUMS.items()}
MESH_FORMATS = {0: "tensors", inversion_pb2.ExtractMeshRequest.TENSORS: "tensors",
                inversion_pb2.ExtractMeshRequest.GLB: "glb", inversion_pb2.ExtractMeshRequest.PLY: "ply"}
MESH_FORMAT_ENUMS = {"tensors": inversion_pb2.ExtractMeshRequest.TENSORS, "glb": inversion_pb2.ExtractMeshRequest.GLB,
                     "ply": inversion_pb2.ExtractMeshRequest.PLY}
FIELD_FORMAT = render_pb2.ASSET_FORMAT_NPZ


def _timestamp(seconds_from_now: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int((time.time() + seconds_from_now) * 1e9))
    return ts


def _png(image: np.ndarray) -> common_pb2.EncodedImage:
    return common_pb2.EncodedImage(data=encode_png(image), mime_type="image/png")


# dtypes --------------------------------------------------------------------------------------------

def dtype_to_proto(dtype: str) -> int:
    """"float32" -> 0 (the proto default, float32), "float16" -> FLOAT16."""
    return DType.FLOAT16 if dtype == "float16" else 0


def dtype_from_proto(value: int, field: str = "dtype") -> str:
    """"float32" or "float16"; InvalidArgument for any other DType."""
    require(value in (0, DType.FLOAT32, DType.FLOAT16), field, "FLOAT32 or FLOAT16")
    return "float16" if value == DType.FLOAT16 else "float32"


# cameras and sources -------------------------------------------------------------------------------

def camera_from_proto(msg: inversion_pb2.InversionCamera, field: str) -> GanCamera | None:
    """None when unset."""
    which = msg.WhichOneof("source")
    if which is None:
        return None
    if which == "eg3d_label":
        v = list(msg.eg3d_label.values)
        require(len(v) == 25, f"{field}.eg3d_label.values", f"needs 25 values, got {len(v)}")
        return GanCamera.eg3d(np.asarray(v, np.float32))
    cam = PinholeCamera.from_proto(getattr(msg, which), f"{field}.{which}")
    return GanCamera.world(cam) if which == "camera" else GanCamera.generator(cam)


def camera_to_proto(c: GanCamera | PinholeCamera) -> inversion_pb2.InversionCamera:
    """A GanCamera or a (world-unit) PinholeCamera -> InversionCamera."""
    if isinstance(c, PinholeCamera):
        return inversion_pb2.InversionCamera(camera=c.to_proto())
    if c.kind == "eg3d":
        return inversion_pb2.InversionCamera(eg3d_label=inversion_pb2.Eg3dLabel(values=[float(x) for x in c.label]))
    if c.kind == "generator":
        return inversion_pb2.InversionCamera(generator_camera=c.camera.to_proto())
    return inversion_pb2.InversionCamera(camera=c.camera.to_proto())


def source_from_proto(msg: inversion_pb2.InversionSource, field: str = "source") -> str | Latent:
    which = msg.WhichOneof("source")
    if which == "session_id":
        return msg.session_id
    if which == "latent":
        lat = msg.latent
        camera = camera_from_proto(lat.conditioning_camera, f"{field}.latent.conditioning_camera")
        psi = lat.truncation_psi if lat.HasField("truncation_psi") else 1.0
        has_w = bool(lat.w.data) or bool(lat.w.shape)
        require(has_w or lat.z_seed > 0, f"{field}.latent.w", "is empty: give w, or z_seed > 0 for a sample")
        require(not (has_w and lat.z_seed), f"{field}.latent.z_seed", "give w or z_seed, not both")
        if not has_w:
            return Latent(None, lat.generator, camera, z_seed=int(lat.z_seed), truncation_psi=float(psi))
        w = np.array(tensors.from_proto(lat.w, f"{field}.latent.w", dtypes=[DType.FLOAT32, DType.FLOAT16], ndim=(1, 2)),
                     dtype=np.float32)
        return Latent(w, lat.generator, camera)
    raise InvalidArgument(field, "give a session_id or a latent")


def source_to_proto(source: str | Latent) -> inversion_pb2.InversionSource:
    if isinstance(source, str):
        return inversion_pb2.InversionSource(session_id=source)
    if source.w is None:
        lat = inversion_pb2.GanLatent(generator=source.generator, z_seed=source.z_seed,
                                      truncation_psi=source.truncation_psi)
    else:
        lat = inversion_pb2.GanLatent(generator=source.generator, w=tensors.to_proto(np.asarray(source.w, np.float32)))
    if source.conditioning_camera is not None:
        lat.conditioning_camera.CopyFrom(camera_to_proto(source.conditioning_camera))
    return inversion_pb2.InversionSource(latent=lat)


def mask_to_proto(mask: np.ndarray) -> common_pb2.ImageInput:
    """(H, W) or (H, W, C) mask, uint8 0..255 or float in [0, 1] -> an RGB ImageInput (the server reads
    its first channel)."""
    m = np.asarray(mask)
    if m.dtype != np.uint8:
        m = (np.clip(m, 0, 1) * 255 + 0.5).astype(np.uint8)
    return to_image_input(np.repeat(m[..., None], 3, axis=2) if m.ndim == 2 else m)


# invert --------------------------------------------------------------------------------------------

def settings_from_proto(o: inversion_pb2.InvertOptions) -> InvertSettings:
    """Proto3 zero / unset -> the documented defaults; validation happens in the service."""
    s = InvertSettings()
    if o.latent_space == inversion_pb2.InvertOptions.W:
        s.latent_space = "w"
    elif o.latent_space not in (0, inversion_pb2.InvertOptions.W_PLUS):
        raise InvalidArgument("options.latent_space", f"unknown value {o.latent_space}")
    s.steps = o.steps or s.steps
    s.lr = o.lr or s.lr
    for name in ("lr_rampup", "lr_rampdown", "w_noise", "w_noise_ramp", "noise_regularization", "l2_weight",
                 "lpips_weight", "pti_l2_weight", "pti_lpips_weight"):
        if o.HasField(name):
            setattr(s, name, float(getattr(o, name)))
    s.lpips_resolution = o.lpips_resolution or s.lpips_resolution
    if o.init_latent.data or o.init_latent.shape:
        s.init_latent = np.array(tensors.from_proto(o.init_latent, "options.init_latent",
                                                    dtypes=[DType.FLOAT32, DType.FLOAT16], ndim=(1, 2)), np.float32)
    s.pti = o.pti
    s.pti_steps = o.pti_steps or s.pti_steps
    s.pti_lr = o.pti_lr or s.pti_lr
    s.optimize_camera = o.optimize_camera
    s.camera_lr = o.camera_lr or s.camera_lr
    s.seed = o.seed
    s.progress_every = o.progress_every or s.progress_every
    s.preview_size = o.preview_size
    return s


def settings_to_proto(s: InvertSettings) -> inversion_pb2.InvertOptions:
    o = inversion_pb2.InvertOptions(
        latent_space=inversion_pb2.InvertOptions.W if s.latent_space == "w" else inversion_pb2.InvertOptions.W_PLUS,
        steps=s.steps, lr=s.lr, lr_rampup=s.lr_rampup, lr_rampdown=s.lr_rampdown, w_noise=s.w_noise,
        w_noise_ramp=s.w_noise_ramp, noise_regularization=s.noise_regularization, l2_weight=s.l2_weight,
        lpips_weight=s.lpips_weight, lpips_resolution=s.lpips_resolution, pti=s.pti, pti_steps=s.pti_steps,
        pti_lr=s.pti_lr, pti_l2_weight=s.pti_l2_weight, pti_lpips_weight=s.pti_lpips_weight, seed=s.seed,
        progress_every=s.progress_every, preview_size=s.preview_size, optimize_camera=s.optimize_camera,
        camera_lr=s.camera_lr)
    if s.init_latent is not None:
        o.init_latent.CopyFrom(tensors.to_proto(np.asarray(s.init_latent, np.float32)))
    return o


def metrics_to_proto(m: Metrics) -> inversion_pb2.ReconstructionMetrics:
    return inversion_pb2.ReconstructionMetrics(mse=m.mse, psnr=m.psnr, lpips=m.lpips)


def metrics_from_proto(m: inversion_pb2.ReconstructionMetrics) -> Metrics:
    return Metrics(m.mse, m.psnr, m.lpips)


def progress_to_proto(ev: ProgressEvent) -> inversion_pb2.InvertEvent:
    msg = inversion_pb2.InvertEvent(progress=common_pb2.Progress(
        stage=ev.stage, step=ev.step, total_steps=ev.total_steps, scalars=ev.scalars, elapsed_s=ev.elapsed_s))
    if ev.preview is not None:
        msg.preview.CopyFrom(_png(ev.preview))
    return msg


def progress_from_proto(ev: inversion_pb2.InvertEvent) -> ProgressEvent:
    p = ev.progress
    preview = decode_png(ev.preview.data) if ev.preview.data else None
    return ProgressEvent(p.stage, p.step, p.total_steps, dict(p.scalars), p.elapsed_s, preview)


def result_to_proto(r: InvertResult) -> inversion_pb2.InvertResult:
    out = inversion_pb2.InvertResult(session_id=r.session_id, expires_at=_timestamp(r.expires_in_s),
                                     latent=tensors.to_proto(r.latent), latent_metrics=metrics_to_proto(r.latent_metrics),
                                     reconstruction=_png(r.reconstruction), generator=r.generator,
                                     session_bytes=r.session_bytes)
    if r.pti_metrics is not None:
        out.pti_metrics.CopyFrom(metrics_to_proto(r.pti_metrics))
    if r.camera is not None:
        out.camera.CopyFrom(r.camera.to_proto())
    if r.camera_offsets is not None:
        o = r.camera_offsets
        out.camera_offsets.CopyFrom(inversion_pb2.CameraOffsets(yaw_deg=o.yaw_deg, pitch_deg=o.pitch_deg,
                                                                 roll_deg=o.roll_deg))
    return out


def result_from_proto(r: inversion_pb2.InvertResult) -> InvertResult:
    return InvertResult(r.session_id, max(0.0, r.expires_at.ToSeconds() - time.time()),
                        np.array(tensors.from_proto(r.latent, "latent")), metrics_from_proto(r.latent_metrics),
                        metrics_from_proto(r.pti_metrics) if r.HasField("pti_metrics") else None,
                        decode_png(r.reconstruction.data), r.generator, r.session_bytes,
                        camera=PinholeCamera.from_proto(r.camera, "camera") if r.HasField("camera") else None,
                        camera_offsets=CameraOffsets(r.camera_offsets.yaw_deg, r.camera_offsets.pitch_deg,
                                                     r.camera_offsets.roll_deg)
                        if r.HasField("camera_offsets") else None)


# render, mesh, field -------------------------------------------------------------------------------

def render_to_proto(outputs: dict[str, np.ndarray], dtype: str = "float32") -> inversion_pb2.InversionRenderResponse:
    half = dtype == "float16"
    return inversion_pb2.InversionRenderResponse(
        outputs={k: tensors.to_proto(v.astype(np.float16) if half else v) for k, v in outputs.items()})


def render_from_proto(r: inversion_pb2.InversionRenderResponse) -> dict[str, np.ndarray]:
    return {k: np.array(tensors.from_proto(v, k)) for k, v in r.outputs.items()}


def mesh_to_proto(mesh: MeshResult, data: bytes, fmt: str) -> inversion_pb2.ExtractMeshResponse:
    """fmt "tensors": the arrays; "glb" / "ply": the file bytes."""
    resp = inversion_pb2.ExtractMeshResponse(num_vertices=len(mesh.vertices), num_faces=len(mesh.faces))
    if fmt == "tensors":
        resp.vertices.CopyFrom(tensors.to_proto(mesh.vertices))
        resp.faces.CopyFrom(tensors.to_proto(mesh.faces))
        resp.vertex_normals.CopyFrom(tensors.to_proto(mesh.vertex_normals))
        if mesh.vertex_colors is not None:
            resp.vertex_colors.CopyFrom(tensors.to_proto(mesh.vertex_colors))
    else:
        resp.data = data
    return resp


def mesh_from_proto(r: inversion_pb2.ExtractMeshResponse, fmt: str) -> MeshOutput:
    mesh = None
    if fmt == "tensors":
        colors = np.array(tensors.from_proto(r.vertex_colors, "vertex_colors")) if r.vertex_colors.data else None
        mesh = MeshResult(np.array(tensors.from_proto(r.vertices, "vertices")),
                          np.array(tensors.from_proto(r.faces, "faces")),
                          np.array(tensors.from_proto(r.vertex_normals, "vertex_normals")), colors)
    return MeshOutput(mesh, r.data, r.num_vertices, r.num_faces)


def field_chunks(data: bytes, chunk_bytes: int):
    """The ExportField stream: AssetChunks of chunk_bytes (0 = 1 MiB); the first carries the total size,
    the sha256 and the format."""
    digest = hashlib.sha256(data).hexdigest()
    size = chunk_bytes or (1 << 20)
    for offset in range(0, max(len(data), 1), size):
        chunk = render_pb2.AssetChunk(offset=offset, data=data[offset:offset + size])
        if offset == 0:
            chunk.total_size, chunk.sha256, chunk.format = len(data), digest, FIELD_FORMAT
        yield chunk


def field_from_chunks(parts: list[render_pb2.AssetChunk]) -> bytes:
    """The joined stream; IOError when the first chunk's sha256 does not match."""
    data = b"".join(c.data for c in parts)
    if parts and parts[0].sha256 and hashlib.sha256(data).hexdigest() != parts[0].sha256:
        raise IOError("download corrupted: sha256 mismatch")
    return data


# describe ------------------------------------------------------------------------------------------

def describe_to_proto(d: Description) -> inversion_pb2.InversionDescribeResponse:
    resp = inversion_pb2.InversionDescribeResponse(
        session_idle_ttl_s=int(d.limits.session_idle_ttl_s), max_sessions_per_tenant=d.limits.max_sessions_per_tenant,
        max_tenant_bytes=d.limits.max_tenant_bytes, max_session_bytes=d.limits.max_session_bytes,
        max_message_bytes=d.max_message_bytes, device=d.device)
    for g in d.generators:
        msg = resp.generators.add(name=g.name, is_default=g.is_default, weights_format=g.weights_format,
                                  available=g.available, unavailable_reason=g.unavailable_reason)
        msg.models.add(role="generator", backend="headforge-torch", name=g.path, sha256=g.sha256,
                       provenance=g.provenance)
        msg.models.add(role="lpips", backend="headforge-torch", name=d.lpips)
        c = g.config
        if c is not None:
            msg.kind = KIND_ENUMS[c.kind]
            msg.output_resolution, msg.neural_resolution = c.output_resolution, c.neural_resolution
            msg.super_resolution = c.super_resolution
            msg.plane_resolution, msg.channels, msg.depth = c.plane_resolution, c.channels, c.depth
            msg.pyramid_levels.extend(c.pyramid_levels)
            msg.w_dim = c.w_dim
            msg.num_ws = c.num_ws
            msg.crop_style = CROP_ENUMS[c.crop_style]
            msg.azimuth_min, msg.azimuth_max = c.azimuth_min, c.azimuth_max
            msg.elevation_min, msg.elevation_max = c.elevation_min, c.elevation_max
            msg.world_units_per_generator_unit = c.world_units_per_generator_unit
            msg.box_size = c.box_size
            msg.default_density_threshold = c.default_density_threshold
    return resp


def describe_from_proto(r: inversion_pb2.InversionDescribeResponse) -> Description:
    """The Description a gRPC client sees (GeneratorInfo.config is None: the config stays server-side)."""
    gens = []
    lpips_name = ""
    for g in r.generators:
        gen_record = next((m for m in g.models if m.role == "generator"), None)
        sha, path, provenance = ((gen_record.sha256, gen_record.name, gen_record.provenance) if gen_record
                                 else ("", "", ""))
        lpips_name = next((m.name for m in g.models if m.role == "lpips"), lpips_name)
        gens.append(GeneratorInfo(g.name, g.is_default, KIND_NAMES.get(g.kind, ""), g.weights_format,
                                  g.available, g.unavailable_reason, path, sha, None, CROP_NAMES.get(g.crop_style, ""),
                                  provenance))
    limits = InversionLimits(session_idle_ttl_s=r.session_idle_ttl_s or 1, max_sessions_per_tenant=r.max_sessions_per_tenant or 1,
                             max_tenant_bytes=r.max_tenant_bytes or 1, max_session_bytes=r.max_session_bytes or 1)
    return Description(gens, limits, r.max_message_bytes, r.device, lpips_name, "")
