"""Plain Python results of the face service, shared by the in-process and gRPC clients."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from services.core.cameras import PinholeCamera
from services.core.models import ModelRecord

CropStyle = Literal["ffhq", "head"]


@dataclass
class AnalyzeOptions:
    """See AnalyzeOptions in protos/headforge/v1/face.proto."""

    max_faces: int = 0            # 0 = all
    min_face_size: float = 0.0    # pixels on the box's shorter side; 0 = backend default
    upsample: int = -1            # -1 = backend default, else 0..2
    skip_embedding: bool = False
    skip_crop: bool = False
    skip_masks: bool = False
    crop_size: int = 512          # 64..2048
    crop_style: CropStyle = "head"
    min_score: float | None = None  # None = the detector's default_min_score


@dataclass
class HeadPose:
    yaw: float
    pitch: float
    roll: float


@dataclass
class Face:
    """One analysed face. Arrays are numpy; pixel coordinates refer to the (EXIF-rotated) input."""

    box: np.ndarray                 # (4,) x0, y0, x1, y1
    score: float
    landmarks_5: np.ndarray         # (5, 2)
    landmarks_68: np.ndarray        # (68, 2)
    landmarks_3d_68: np.ndarray     # (68, 3) head frame
    pose: HeadPose
    camera: PinholeCamera           # of the input image, head frame = world
    crop_transform: np.ndarray      # (2, 3) input pixels -> crop pixels
    crop_camera: PinholeCamera      # EG3D convention, crop pixels
    eg3d_label: np.ndarray          # (25,)
    embedding: np.ndarray | None = None      # (D,) L2-normalised
    embedding_norm: float = 0.0
    aligned_crop: np.ndarray | None = None   # (S, S, 3) uint8
    face_mask: np.ndarray | None = None      # (H, W) uint8 0/255
    head_mask: np.ndarray | None = None      # (H, W) uint8 0/255
    crop_head_mask: np.ndarray | None = None  # (S, S) uint8 0/255
    landmarks_478: np.ndarray | None = None     # (478, 2) MediaPipe order, pixels (mediapipe detector only)
    landmarks_3d_478: np.ndarray | None = None  # (478, 3) head frame, as landmarks_3d_68


@dataclass
class AnalyzeResult:
    faces: list[Face]
    image_width: int
    image_height: int
    models: list[ModelRecord] = field(default_factory=list)


@dataclass
class CompareResult:
    cosine_similarity: float
    distance: float
    threshold: float
    same_person: bool
    metric: str


@dataclass
class IdentityLossResult:
    loss: np.ndarray        # (N,) float32
    grad: np.ndarray        # (N, 3, H, W) float32
    face_found: list[bool]


@dataclass
class Description:
    models: list[ModelRecord]
    identity_backend: str
    embedding_dim: int
    identity_loss_available: bool
    metric: str
    same_person_threshold: float
    max_image_pixels: int
    max_message_bytes: int


def face_to_dict(f: Face) -> dict:
    """A JSON-friendly summary of a face (no pixel data): pixel coordinates of the input image, pose in
    degrees, cameras as K / world_to_camera lists (`headforge face analyze --json` prints it)."""
    cam = lambda c: {"K": c.K.round(4).tolist(), "world_to_camera": c.world_to_camera.round(6).tolist(),  # noqa: E731
                     "width": c.width, "height": c.height}
    return {
        "box": [round(float(v), 2) for v in f.box], "score": round(float(f.score), 4),
        "pose": {"yaw": round(f.pose.yaw, 2), "pitch": round(f.pose.pitch, 2), "roll": round(f.pose.roll, 2)},
        "landmarks_5": f.landmarks_5.round(2).tolist(), "landmarks_68": f.landmarks_68.round(2).tolist(),
        "landmarks_3d_68": f.landmarks_3d_68.round(4).tolist(),
        "camera": cam(f.camera), "crop_camera": cam(f.crop_camera),
        "crop_transform": f.crop_transform.round(6).tolist(), "eg3d_label": [round(float(v), 6) for v in f.eg3d_label],
        "embedding": None if f.embedding is None else [round(float(v), 6) for v in f.embedding],
        "embedding_norm": round(f.embedding_norm, 6),
        **({} if f.landmarks_478 is None else {"landmarks_478": f.landmarks_478.round(2).tolist(),
                                               "landmarks_3d_478": f.landmarks_3d_478.round(4).tolist()}),
    }
