"""Backend selection for the face service."""

from __future__ import annotations

from services.face.config import FaceConfig


def load_detector(config: FaceConfig):
    if config.detector == "dlib":
        from services.face.backends.dlib_backend import DlibModels

        return DlibModels()
    from services.face.backends.insightface import InsightFacePack

    return InsightFacePack.load(config.insightface_dir).detector()


def load_recognizer(config: FaceConfig, detector):
    if config.recognizer == "dlib":
        from services.face.backends.dlib_backend import DlibModels

        return detector if isinstance(detector, DlibModels) else DlibModels()
    from services.face.backends.insightface import InsightFacePack

    return InsightFacePack.load(config.insightface_dir).recognizer()
