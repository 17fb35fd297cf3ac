"""What a face backend provides. The dlib backend is the embedded default; InsightFace ONNX packs are
the user-supplied alternative (and the only differentiable identity model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from services.core.models import ModelRecord


@dataclass
class Detection:
    box: np.ndarray                     # (4,) x0, y0, x1, y1 in pixels
    score: float
    landmarks_5: np.ndarray | None = None  # (5, 2) when the detector predicts them (ArcFace order)
    keypoints: np.ndarray | None = None    # (K, 2) pixels, backend-specific (BlazeFace: eyes, nose, mouth, ears)
    landmarks_478: np.ndarray | None = None  # (478, 3) when the detector computed them to verify the face


class Detector(Protocol):
    """Face detection and 68-point landmarks on uint8 (H, W, 3) RGB images."""

    name: str
    default_min_score: float  # detections below this are dropped unless a request says otherwise

    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        """All faces, any order. upsample: 0..2 extra pyramid levels for small faces."""

    def landmarks_68(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """(68, 2) iBUG points in pixels for one detection."""

    def models(self) -> list[ModelRecord]: ...


class DenseDetector(Detector, Protocol):
    """A detector that also predicts MediaPipe's 478 points (the service then reads the 68 off them)."""

    def landmarks_478(self, image: np.ndarray, detection: Detection) -> np.ndarray | None:
        """(478, 3) MediaPipe-order points for one detection: x, y image pixels, z relative depth in
        the x pixel scale, smaller = nearer the camera. None when this detection has none (the auto
        detector's dlib fallback)."""


class Recognizer(Protocol):
    """Identity embeddings. `embed` returns the raw descriptor; callers normalise."""

    name: str
    embedding_dim: int
    metric: str           # "euclidean" (on raw descriptors) or "cosine_distance"
    threshold: float      # same-person threshold on the metric's distance
    typical_norm: float   # raw descriptor norm to assume when a caller passes only a normalised embedding
    differentiable: bool

    def embed(self, image: np.ndarray, landmarks_68: np.ndarray, landmarks_5: np.ndarray) -> np.ndarray:
        """Raw (D,) float32 descriptor of the face at the given landmarks in a uint8 (H, W, 3) image."""

    def models(self) -> list[ModelRecord]: ...


class DifferentiableRecognizer(Recognizer, Protocol):
    def embed_torch(self, images, landmarks_5):
        """images: torch float (N, 3, H, W) in [0, 1] (requires grad allowed); landmarks_5: (N, 5, 2)
        pixels. Returns L2-normalised (N, D) embeddings, differentiable w.r.t. images."""
