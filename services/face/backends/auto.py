"""The `auto` detector, HeadForge's default: MediaPipe (BlazeFace + the 478-point face mesh, dense 3D
points that the fast recipe shapes the face with) first, dlib's HOG detector and 68-point predictor
when MediaPipe finds no face (a safety net: on the photos tried, cut off, turned, covered, dark or
blurred, MediaPipe found every face dlib found). A photo's faces all come from one backend; a face
from dlib has no 478 points.

Scores keep their backend's meaning (MediaPipe: a probability, dlib: an SVM margin), so each
backend's own default threshold is applied here and the service-level default is 0; a request's
explicit min_score applies to the raw score of whichever backend found the face. dlib's recogniser
still aligns faces with dlib's own 68 points (identity_landmarks_68).
"""

from __future__ import annotations

import numpy as np

from services.core.models import ModelRecord
from services.face.backends.base import Detection
from services.face.backends.dlib_backend import DlibModels
from services.face.backends.mediapipe_backend import MediaPipeFace


class AutoFace:
    name = "auto"
    default_min_score = 0.0   # each backend's own default is applied in detect()

    def __init__(self):
        self.mediapipe = MediaPipeFace()
        self.dlib = DlibModels()

    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        found = [d for d in self.mediapipe.detect(image, upsample) if d.score >= self.mediapipe.default_min_score]
        if found:
            return found
        return [d for d in self.dlib.detect(image, upsample) if d.score >= self.dlib.default_min_score]

    def landmarks_478(self, image: np.ndarray, detection: Detection) -> np.ndarray | None:
        """(478, 3) for a MediaPipe detection (see MediaPipeFace.landmarks_478); None for a dlib one."""
        if detection.landmarks_478 is None and detection.keypoints is None:
            return None
        return self.mediapipe.landmarks_478(image, detection)

    def landmarks_68(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        dense = self.landmarks_478(image, detection)
        if dense is None:
            return self.dlib.landmarks_68(image, detection)
        return self.mediapipe.landmarks_68(image, detection)

    def identity_landmarks_68(self, image: np.ndarray, detection: Detection, landmarks_68: np.ndarray,
                              recognizer) -> np.ndarray:
        """The 68 points the recogniser aligns the face with: dlib's own predictor on the detection's box
        when the recogniser is dlib's (its ResNet was trained on that alignment: MediaPipe's 68, about
        1.2 px away on a 90 px face, move the embedding by ~0.09 of dlib's 0.6 threshold), else the given."""
        if recognizer is not self.dlib or detection.keypoints is None:
            return landmarks_68
        return self.dlib.landmarks_68(image, detection)

    def models(self) -> list[ModelRecord]:
        return [*self.mediapipe.models(), *self.dlib.models()]


def load_detector(config) -> AutoFace:
    """The DETECTORS entry "auto" (services.face.backends): MediaPipe, dlib when MediaPipe finds none."""
    return AutoFace()

