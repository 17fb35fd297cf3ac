"""Parameters of every stage kind (validated when a recipe loads; each stage's `params` mapping).

Kept free of heavy imports: the jobs service validates recipes without loading any model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.photo_intake import MIN_FACE_PX
from orchestrator.stages.schedules import ScheduleValue


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PreprocessParams(_Strict):
    """reference: "crop" = a square view around the head, crop_size px, white outside the head mask (what
    optimisation recipes fit to); "photo" = the whole working photo at its own camera (the fast recipe)."""

    face_index: int = Field(0, ge=0)          # faces are sorted largest first
    reference: Literal["crop", "photo"] = "crop"
    crop_size: int = Field(512, ge=64, le=2048)
    min_face_px: int = Field(MIN_FACE_PX, ge=16)   # the face box's shorter side (photo_intake)


class InitParams(_Strict):
    representation: Literal["gaussians", "mesh"] = "gaussians"
    num_points: int = Field(3000, ge=16, le=2_000_000)
    radius: float = Field(0.8, gt=0)
    color_from_photo: bool = True             # Gaussians start with the photo's mean head colour
    lrs: dict[str, ScheduleValue] = Field(default_factory=dict)   # per parameter group


class CameraSampler(_Strict):
    azimuth: tuple[float, float] = (-180.0, 180.0)      # degrees, 0 = frontal
    elevation: tuple[float, float] = (-10.0, 30.0)
    radius: tuple[float, float] = (3.8, 4.2)            # world units; the head's radius is about 1
    fov_deg: float = Field(35.0, gt=1, lt=170)


class Term(_Strict):
    """One loss term. reference_rgb / reference_mask: L2 to the photo (and its head mask) at the photo's
    camera; sds: guidance.Distill on sampled views; identity: face.IdentityLoss on near-frontal views."""

    kind: Literal["reference_rgb", "reference_mask", "sds", "identity"]
    weight: ScheduleValue = 1.0
    every: int = Field(1, ge=1)               # apply on every n-th step
    # sds
    prompt: str = ""
    negative_prompt: str = ""
    backbone: str = ""
    guidance_scale: float = Field(7.5, ge=1)
    t_range: tuple[float, float] = (0.02, 0.98)
    t_range_end: tuple[float, float] | None = None      # annealed to this by the last step
    weighting: Literal["sds", "uniform", "sqrt", "fantasia"] = "sds"
    view_dependent_prompt: bool = True
    resolution: int = Field(0, ge=0)          # guidance working resolution; 0 = the backbone's


class Regularizer(_Strict):
    name: str
    weight: ScheduleValue = 1.0
    params: dict[str, float] = Field(default_factory=dict)


class OptimiseParams(_Strict):
    iterations: int = Field(300, ge=1, le=1_000_000)
    resolution: int = Field(64, ge=16, le=2048)
    views_per_step: int = Field(1, ge=1, le=16)
    cameras: CameraSampler = Field(default_factory=CameraSampler)
    terms: list[Term] = Field(min_length=1)
    regularizers: list[Regularizer] = Field(default_factory=list)
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)


class ConvertParams(_Strict):
    """Replace the job's scene by another representation of the same head. mesh_to_gaussians: Gaussians on
    points sampled over the mesh surface, coloured by its texture (PSHead-style refinement after a mesh)."""

    to: Literal["gaussians"] = "gaussians"
    num_points: int = Field(20000, ge=16, le=2_000_000)
    lrs: dict[str, ScheduleValue] = Field(default_factory=dict)


class ExportParams(_Strict):
    formats: list[Literal["glb", "ply", "npz", "obj_zip"]] = Field(default_factory=lambda: ["ply"], min_length=1)
    stem: str = Field("export/head", pattern=r"^[a-z][a-z0-9_/]*$")   # artifact name without extension


class TurntableParams(_Strict):
    """turntable.gif: `frames` views at evenly spaced azimuths from frontal, at `elevation` degrees."""

    frames: int = Field(24, ge=4, le=360)
    size: int = Field(256, ge=32, le=1024)
    elevation: float = Field(0.0, ge=-60, le=60)
    background: tuple[float, float, float] | None = None   # None = the render service's default


class EvaluateParams(_Strict):
    """The protocol views at `resolution`, the geometry views at `geometry_resolution`; turntable_frames 0
    leaves the turntable to a turntable stage."""

    resolution: int = Field(256, ge=64, le=1024)
    geometry_resolution: int = Field(256, ge=64, le=1024)
    turntable_frames: int = Field(24, ge=0, le=360)
    clip_model: str | None = None             # a local Hugging Face CLIP folder: enables CLIP-I

    @field_validator("turntable_frames")
    @classmethod
    def _frames(cls, v: int) -> int:
        if 0 < v < 4:
            raise ValueError("0 (no turntable) or at least 4 frames")
        return v


class TemplateFitParams(_Strict):
    """The head template (orchestrator/head_template) deformed to the photo's 3D landmarks, then its
    silhouette fitted to the head mask in `fit_steps` render-service steps."""

    fit_steps: int = Field(16, ge=0, le=1000)


class TemplateTextureParams(_Strict):
    """The photo back-projected onto the fitted template, mirrored and inpainted (orchestrator/texture.py);
    the textured mesh becomes the job's scene."""

    texture_size: int = Field(1024, ge=64, le=4096)
