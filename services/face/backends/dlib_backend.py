"""The embedded default: dlib's HOG face detector, 68-point shape predictor and ResNet face descriptor.

Weights ship in the PyPI package `face_recognition_models`; that package imports pkg_resources at import
time, so its files are located through importlib without importing it.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from services.common.errors import FailedPrecondition
from services.core.models import ModelRecord, file_sha256
from services.face.backends.base import Detection

DETECT_MAX_SIDE = 1600  # larger images are scaled down for detection (landmarks use full resolution)
# Licences as stated upstream: dlib itself is Boost (BSL-1.0); face_recognition_models (MIT package) says
# Davis King's model files are public domain, and dlib-models gives the ResNet as CC0; the 68-point
# predictor was trained on iBUG 300-W, whose terms exclude commercial use (dlib-models README).
LICENSES = {
    "detector": "BSL-1.0 (dlib)",
    "landmarks_68": "public domain per face_recognition_models; trained on iBUG 300-W, whose terms exclude "
                    "commercial use (dlib-models README)",
    "recognizer": "CC0-1.0 / public domain (dlib-models, face_recognition_models)",
}


def models_dir() -> Path:
    """Folder of the dlib model files inside the installed face_recognition_models package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition("the dlib backend needs the PyPI package face_recognition_models "
                                 "(pip install face_recognition_models)", reason="MODELS_MISSING")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _model_file(name: str) -> Path:
    path = models_dir() / name
    if not path.is_file():
        raise FailedPrecondition(f"dlib model file missing: {path}", reason="MODELS_MISSING")
    return path


class DlibModels:
    """dlib's detector, shape predictor and recogniser, loaded once. dlib objects are not documented as
    thread-safe, so calls are serialised through one lock (the service runs one backend per process)."""

    name = "dlib"
    embedding_dim = 128
    metric = "euclidean"
    threshold = 0.6
    typical_norm = 1.43
    differentiable = False
    default_min_score = 0.3  # SVM margin; real frontal faces score ~0.5-3, badges and textures ~0-0.2

    def __init__(self):
        import dlib

        self._dlib = dlib
        self._lock = threading.Lock()
        self._predictor_path = _model_file("shape_predictor_68_face_landmarks.dat")
        self._recognizer_path = _model_file("dlib_face_recognition_resnet_model_v1.dat")
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(self._predictor_path))
        self._recognizer = dlib.face_recognition_model_v1(str(self._recognizer_path))

    # Detector
    def detect(self, image: np.ndarray, upsample: int) -> list[Detection]:
        h, w = image.shape[:2]
        scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
        small = image if scale == 1.0 else _resize(image, scale)
        with self._lock:
            rects, scores, _ = self._detector.run(small, int(upsample), 0.0)
        out = []
        for r, s in zip(rects, scores):
            box = np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], dtype=np.float64) / scale
            box = np.clip(box, 0, [w, h, w, h])
            if box[2] - box[0] >= 2 and box[3] - box[1] >= 2:
                out.append(Detection(box=box, score=float(s)))
        return out

    def landmarks_68(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        x0, y0, x1, y1 = (int(round(v)) for v in detection.box)
        rect = self._dlib.rectangle(x0, y0, x1 - 1, y1 - 1)
        with self._lock:
            shape = self._predictor(image, rect)
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)

    # Recognizer
    def embed(self, image: np.ndarray, landmarks_68: np.ndarray, landmarks_5: np.ndarray) -> np.ndarray:
        d = self._dlib
        pts = [d.point(int(round(x)), int(round(y))) for x, y in landmarks_68]
        xs, ys = landmarks_68[:, 0], landmarks_68[:, 1]
        rect = d.rectangle(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        shape = d.full_object_detection(rect, pts)
        with self._lock:
            desc = self._recognizer.compute_face_descriptor(image, shape, 0, 0.25)
        return np.asarray(desc, dtype=np.float32)

    def models(self) -> list[ModelRecord]:
        return [
            ModelRecord("detector", "dlib", "hog_frontal_face_detector (built into dlib)", license=LICENSES["detector"]),
            ModelRecord("landmarks_68", "dlib", self._predictor_path.name, file_sha256(self._predictor_path),
                        license=LICENSES["landmarks_68"]),
            ModelRecord("recognizer", "dlib", self._recognizer_path.name, file_sha256(self._recognizer_path),
                        license=LICENSES["recognizer"]),
        ]


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]  # explicit size: a thin image's short side must not round to 0
    return cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def load_detector(config) -> DlibModels:
    """The DETECTORS entry "dlib" (services.face.backends): dlib's HOG detector + 68-point predictor."""
    return DlibModels()


def load_recognizer(config, detector) -> DlibModels:
    """The RECOGNIZERS entry "dlib": dlib's ResNet descriptor (the detector's models when it is dlib too)."""
    if isinstance(detector, DlibModels):
        return detector
    shared = getattr(detector, "dlib", None)   # the auto detector's dlib fallback
    return shared if isinstance(shared, DlibModels) else DlibModels()
