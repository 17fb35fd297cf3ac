"""Configuration of the face service (flags of `headforge serve face`, or a YAML file)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

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
    adaface_onnx: str | None = Field(
        None, description="an AdaFace ONNX file (recognizer 'adaface'): (1, 3, 112, 112) BGR -> (1, 512) first output")
    cosface_onnx: str | None = Field(
        None, description="a CosFace ONNX file (recognizer 'cosface'), e.g. InsightFace's glint360k_cosface_r100: "
        "(N, 3, 112, 112) RGB -> (N, 512)")
    landmarks_3d: Literal["project", "tddfa_v2"] = Field(
        "project", description="where landmarks_3d_68 come from: 'project' = HeadForge's template fitted to the "
        "68 2D landmarks (services.face.geometry.pose); 'tddfa_v2' = 3DDFA-V2's BFM shape and rotation")
    tddfa_dir: str | None = Field(
        None, description="a 3DDFA-V2 folder (weights/mb1_120x120.onnx, configs/param_mean_std_62d_120x120 and "
        "configs/bfm_noneck_v3 as .npz, or as .pkl with trust_pickles)")
    trust_pickles: bool = Field(
        False, description="read 3DDFA-V2's .pkl files (numpy arrays only); off: .npz conversions are required")
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
        onnx_files = {"adaface": ("adaface_onnx", "an AdaFace ONNX export, e.g. adaface_ir101.onnx"),
                      "cosface": ("cosface_onnx", "a CosFace ONNX, e.g. glint360k_cosface_r100.onnx")}
        if self.recognizer in onnx_files:
            field, example = onnx_files[self.recognizer]
            path = getattr(self, field)
            if not path:
                raise ValueError(f"{field} is required when recognizer is {self.recognizer!r} "
                                 f"(--{field.replace('_', '-')} FILE)")
            if not Path(path).expanduser().is_file():
                raise ValueError(f"{field} {path} is not a file ({example})")
        if self.landmarks_3d == "tddfa_v2":
            if not self.tddfa_dir:
                raise ValueError("tddfa_dir is required when landmarks_3d is 'tddfa_v2' (--tddfa-dir DIR)")
            from services.face.backends.tddfa import find_files

            find_files(self.tddfa_dir, self.trust_pickles)   # TddfaFilesError (a ValueError) names the problem
        return self
