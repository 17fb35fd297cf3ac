"""Configuration of the face service (flags of `headforge serve face`, or a YAML file)."""

from __future__ import annotations

from pydantic import BaseModel, Field, ValidationInfo, field_validator, model_validator

from services.common.images import DEFAULT_MAX_IMAGE_PIXELS
from services.face.backends import DETECTORS, RECOGNIZERS


class FaceConfig(BaseModel):
    detector: str = Field("auto", description="face detection + landmarks backend (a DETECTORS name); auto: "
                          "MediaPipe's 478-point mesh, dlib when MediaPipe finds no face")
    recognizer: str = Field(
        "dlib", description="identity embedding backend (a RECOGNIZERS name); insightface enables IdentityLoss")
    insightface_dir: str | None = Field(
        None, description="an InsightFace model pack folder (buffalo_l / antelopev2 layout)")
    max_image_pixels: int = Field(DEFAULT_MAX_IMAGE_PIXELS, ge=1, description="larger images are refused")
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    default_upsample: int = Field(1, ge=0, le=2, description="detector upsampling when a request says -1")
    default_min_face_size: float = Field(20.0, ge=0, description="px; smaller faces are dropped")
    max_identity_batch: int = Field(32, ge=1, description="IdentityLoss images per call")

    @field_validator("detector", "recognizer")
    @classmethod
    def _registered(cls, name: str, info: ValidationInfo) -> str:
        registry = DETECTORS if info.field_name == "detector" else RECOGNIZERS
        if name not in registry:
            raise ValueError(f"unknown face {info.field_name} {name!r}; known: {registry.names()}")
        return name

    @model_validator(mode="after")
    def _pack_needed(self) -> "FaceConfig":
        if "insightface" in (self.detector, self.recognizer) and not self.insightface_dir:
            raise ValueError("insightface_dir is required when detector or recognizer is 'insightface'")
        return self
