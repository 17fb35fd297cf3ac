"""Face backends by name: FaceConfig.detector names an entry of DETECTORS, FaceConfig.recognizer one of
RECOGNIZERS (the `headforge serve face` flags --detector / --recognizer list the same names).

An entry is a factory, registered lazily as "module:function" so a process imports only the backend
it uses: a detector factory takes the FaceConfig, a recognizer factory the FaceConfig and the loaded
detector (a backend that provides both may share one model object). Adding a backend is one module
plus one registration line per role it provides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from services.core.registry import Registry

if TYPE_CHECKING:
    from services.face.backends.base import Detector, Recognizer
    from services.face.config import FaceConfig

DETECTORS: Registry[Callable[["FaceConfig"], "Detector"]] = Registry("face detector")
RECOGNIZERS: Registry[Callable[["FaceConfig", "Detector"], "Recognizer"]] = Registry("face recognizer")

DETECTORS.register("auto", "services.face.backends.auto:load_detector")
DETECTORS.register("dlib", "services.face.backends.dlib_backend:load_detector")
RECOGNIZERS.register("dlib", "services.face.backends.dlib_backend:load_recognizer")
DETECTORS.register("insightface", "services.face.backends.insightface:load_detector")
RECOGNIZERS.register("insightface", "services.face.backends.insightface:load_recognizer")
DETECTORS.register("mediapipe", "services.face.backends.mediapipe_backend:load_detector")
RECOGNIZERS.register("adaface", "services.face.backends.adaface:load_recognizer")
RECOGNIZERS.register("cosface", "services.face.backends.cosface:load_recognizer")


def load_detector(config: FaceConfig) -> Detector:
    """The configured detector; InvalidArgument naming `detector` for an unknown name."""
    return DETECTORS.get(config.detector, field="detector")(config)


def load_recognizer(config: FaceConfig, detector: Detector) -> Recognizer:
    """The configured recogniser; InvalidArgument naming `recognizer` for an unknown name."""
    return RECOGNIZERS.get(config.recognizer, field="recognizer")(config, detector)
