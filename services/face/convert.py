"""Face service messages <-> services.face.types, used by the servicer and the gRPC client."""

from __future__ import annotations

import numpy as np

from headforge.v1 import common_pb2, face_pb2
from services.common import tensors
from services.core.cameras import PinholeCamera
from services.common.images import decode_png, encode_png
from services.core.models import ModelRecord
from services.face.types import AnalyzeOptions, AnalyzeResult, Description, Face, HeadPose

SERVICE_NAME = face_pb2.DESCRIPTOR.services_by_name["FaceService"].full_name
_STYLE_TO_PROTO = {"ffhq": face_pb2.FFHQ, "head": face_pb2.HEAD}
_STYLE_FROM_PROTO = {face_pb2.FFHQ: "ffhq", face_pb2.HEAD: "head", face_pb2.CROP_STYLE_UNSPECIFIED: "head"}


def options_from_proto(msg: face_pb2.AnalyzeOptions) -> AnalyzeOptions:
    return AnalyzeOptions(
        max_faces=msg.max_faces, min_face_size=msg.min_face_size,
        upsample=msg.upsample if msg.HasField("upsample") else -1,
        skip_embedding=msg.skip_embedding, skip_crop=msg.skip_crop, skip_masks=msg.skip_masks,
        crop_size=msg.crop_size or 512, crop_style=_STYLE_FROM_PROTO.get(msg.crop_style, "invalid"),
        min_score=msg.min_score if msg.HasField("min_score") else None)


def options_to_proto(o: AnalyzeOptions) -> face_pb2.AnalyzeOptions:
    msg = face_pb2.AnalyzeOptions(max_faces=o.max_faces, min_face_size=o.min_face_size,
                                  skip_embedding=o.skip_embedding, skip_crop=o.skip_crop,
                                  skip_masks=o.skip_masks, crop_size=o.crop_size,
                                  crop_style=_STYLE_TO_PROTO[o.crop_style])
    if o.min_score is not None:
        msg.min_score = o.min_score
    if o.upsample != -1:
        msg.upsample = o.upsample
    return msg


def _points2(a: np.ndarray) -> list[common_pb2.Point2]:
    return [common_pb2.Point2(x=float(x), y=float(y)) for x, y in a]


def _points3(a: np.ndarray) -> list[common_pb2.Point3]:
    return [common_pb2.Point3(x=float(x), y=float(y), z=float(z)) for x, y, z in a]


def _png(a: np.ndarray | None) -> common_pb2.EncodedImage | None:
    return None if a is None else common_pb2.EncodedImage(data=encode_png(a), mime_type="image/png")


def face_to_proto(f: Face) -> face_pb2.Face:
    msg = face_pb2.Face(
        box=common_pb2.Box(x0=float(f.box[0]), y0=float(f.box[1]), x1=float(f.box[2]), y1=float(f.box[3])),
        score=float(f.score), landmarks_5=_points2(f.landmarks_5), landmarks_68=_points2(f.landmarks_68),
        landmarks_3d_68=_points3(f.landmarks_3d_68),
        pose=face_pb2.HeadPose(yaw=f.pose.yaw, pitch=f.pose.pitch, roll=f.pose.roll),
        camera=f.camera.to_proto(), crop_transform=[float(v) for v in f.crop_transform.reshape(-1)],
        crop_camera=f.crop_camera.to_proto(), eg3d_label=[float(v) for v in f.eg3d_label],
        embedding_norm=f.embedding_norm)
    if f.landmarks_478 is not None:
        msg.landmarks_478.extend(_points2(f.landmarks_478))
        msg.landmarks_3d_478.extend(_points3(f.landmarks_3d_478))
    if f.embedding is not None:
        msg.embedding.CopyFrom(tensors.to_proto(f.embedding.astype(np.float32)))
    for name in ("aligned_crop", "face_mask", "head_mask", "crop_head_mask"):
        png = _png(getattr(f, name))
        if png is not None:
            getattr(msg, name).CopyFrom(png)
    return msg


def _arr2(points) -> np.ndarray:
    return np.array([[p.x, p.y] for p in points], dtype=np.float64).reshape(-1, 2)


def _arr3(points) -> np.ndarray:
    return np.array([[p.x, p.y, p.z] for p in points], dtype=np.float64).reshape(-1, 3)


def _camera(msg: common_pb2.Camera) -> PinholeCamera:
    return PinholeCamera.from_proto(msg)


def face_from_proto(msg: face_pb2.Face) -> Face:
    opt = lambda m: decode_png(m.data) if m.data else None  # noqa: E731
    return Face(
        box=np.array([msg.box.x0, msg.box.y0, msg.box.x1, msg.box.y1], dtype=np.float64), score=msg.score,
        landmarks_5=_arr2(msg.landmarks_5), landmarks_68=_arr2(msg.landmarks_68),
        landmarks_3d_68=_arr3(msg.landmarks_3d_68),
        pose=HeadPose(msg.pose.yaw, msg.pose.pitch, msg.pose.roll), camera=_camera(msg.camera),
        crop_transform=np.array(msg.crop_transform, dtype=np.float64).reshape(2, 3),
        crop_camera=_camera(msg.crop_camera), eg3d_label=np.array(msg.eg3d_label, dtype=np.float32),
        embedding=(np.array(tensors.from_proto(msg.embedding, "embedding")) if msg.embedding.data else None),
        embedding_norm=msg.embedding_norm, aligned_crop=opt(msg.aligned_crop), face_mask=opt(msg.face_mask),
        head_mask=opt(msg.head_mask), crop_head_mask=opt(msg.crop_head_mask),
        landmarks_478=_arr2(msg.landmarks_478) if msg.landmarks_478 else None,
        landmarks_3d_478=_arr3(msg.landmarks_3d_478) if msg.landmarks_3d_478 else None)


def models_to_proto(models: list[ModelRecord]) -> list[common_pb2.ModelInfo]:
    return [common_pb2.ModelInfo(role=m.role, backend=m.backend, name=m.name, sha256=m.sha256,
                                 provenance=m.provenance, license=m.license) for m in models]


def models_from_proto(models) -> list[ModelRecord]:
    return [ModelRecord(m.role, m.backend, m.name, m.sha256, m.provenance, m.license) for m in models]


def analyze_to_proto(r: AnalyzeResult) -> face_pb2.AnalyzeResponse:
    return face_pb2.AnalyzeResponse(faces=[face_to_proto(f) for f in r.faces], image_width=r.image_width,
                                    image_height=r.image_height, models=models_to_proto(r.models))


def analyze_from_proto(msg: face_pb2.AnalyzeResponse) -> AnalyzeResult:
    return AnalyzeResult([face_from_proto(f) for f in msg.faces], msg.image_width, msg.image_height,
                         models_from_proto(msg.models))


def describe_to_proto(d: Description) -> face_pb2.DescribeResponse:
    return face_pb2.DescribeResponse(
        models=models_to_proto(d.models), identity_backend=d.identity_backend, embedding_dim=d.embedding_dim,
        identity_loss_available=d.identity_loss_available, metric=d.metric,
        same_person_threshold=d.same_person_threshold, max_image_pixels=d.max_image_pixels,
        max_message_bytes=d.max_message_bytes)


def describe_from_proto(m: face_pb2.DescribeResponse) -> Description:
    return Description(models_from_proto(m.models), m.identity_backend, m.embedding_dim,
                       m.identity_loss_available, m.metric, m.same_person_threshold, m.max_image_pixels,
                       m.max_message_bytes)

