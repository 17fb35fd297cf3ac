"""Parameters of every stage kind (validated when a recipe loads; each stage's `params` mapping).

Kept free of heavy imports: the jobs service validates recipes without loading any model."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


Representation = Literal["gaussians", "mesh", "dmtet", "triplane", "trigrid", "pyramid_trigrid"]
FIELD_KINDS = ("triplane", "trigrid", "pyramid_trigrid")


class OptimizerParams(_Strict):
    """The render service's optimiser for the job's scene (services/render/types.py OptimizerSpec): Adam or
    Adan, a learning rate per parameter group (a number or a schedule [start_step, start, end, end_step];
    groups not listed keep the kind's defaults), eps, weight decay, gradient clipping (max_grad_norm 0 =
    none) and frozen groups (e.g. a field's "decoder")."""

    kind: Literal["adam", "adan"] = "adam"
    lrs: dict[str, ScheduleValue] = Field(default_factory=dict)
    interpolation: Literal["linear", "exponential", "cosine"] = "linear"   # between a schedule's ends
    betas: tuple[float, ...] = ()             # () = the kind's defaults; adam 2, adan 3 values in [0, 1)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(0.0, ge=0)
    frozen: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _betas(self):
        want = {"adam": 2, "adan": 3}[self.kind]
        if self.betas and (len(self.betas) != want or not all(0 <= b < 1 for b in self.betas)):
            raise ValueError(f"{self.kind} takes {want} betas in [0, 1), got {list(self.betas)}")
        return self


class GaussianStrategyParams(_Strict):
    """Densification (headforge.v1.GaussianStrategy): 0 = the 3DGS default of each field;
    opacity_reset_every -1 = never."""

    disabled: bool = False
    densify_every: int = Field(0, ge=0)
    densify_from: int = Field(0, ge=0)
    densify_until: int = Field(0, ge=0)
    grad_threshold: float = Field(0.0, ge=0)
    percent_dense: float = Field(0.0, ge=0)
    prune_opacity: float = Field(0.0, ge=0)
    opacity_reset_every: int = Field(0, ge=-1)
    max_gaussians: int = Field(0, ge=0)


class GaussianInitParams(_Strict):
    sh_degree: int = Field(0, ge=0, le=3)
    opacity: float = Field(0.1, gt=0, lt=1)
    strategy: GaussianStrategyParams = Field(default_factory=GaussianStrategyParams)


class DmtetInitParams(_Strict):
    grid_resolution: Literal[32, 64, 128, 256, 512] = 64
    extent: float = Field(1.2, gt=0)           # half side of the grid's cube, world units


class FieldInitParams(_Strict):
    """A tri-plane / tri-grid / pyramid tri-grid: 0 = the kind's default of each size."""

    resolution: int = Field(0, ge=0, le=1024)
    channels: int = Field(0, ge=0, le=256)
    depth: int = Field(0, ge=0, le=64)
    levels: list[int] = Field(default_factory=list)     # pyramid_trigrid resolutions, e.g. [8, 16, ..., 512]
    box_size: float = Field(0.0, ge=0)
    decoder: Literal["trainable", "frozen"] = "trainable"


# where each representation's first scene can come from
INIT_SOURCES = {"gaussians": ("random", "artifact"), "mesh": ("sphere", "head_template", "fitted_template", "artifact"),
                "dmtet": ("sphere", "head_template", "fitted_template", "artifact"),
                **{k: ("random", "artifact") for k in FIELD_KINDS}}


class InitParams(_Strict):
    """The job's first scene. source: random (Gaussians in a ball of `radius`, a field's random features),
    sphere (an icosphere of `radius`), head_template (orchestrator/head_template), fitted_template (the
    template_fit stage's vertices), or artifact (a job artifact: a PLY for Gaussians, a GLB/OBJ-zip/PLY mesh
    for mesh and DMTet, an exported field NPZ for fields). lrs: shorthand for optimizer.lrs."""

    representation: Representation = "gaussians"
    source: Literal["random", "sphere", "head_template", "fitted_template", "artifact"] | None = None
    artifact: str = ""
    num_points: int = Field(3000, ge=16, le=2_000_000)
    radius: float = Field(0.8, gt=0)
    color_from_photo: bool = True             # Gaussians start with the photo's mean head colour
    texture_size: int = Field(256, ge=16, le=8192)
    gaussians: GaussianInitParams = Field(default_factory=GaussianInitParams)
    dmtet: DmtetInitParams = Field(default_factory=DmtetInitParams)
    field: FieldInitParams = Field(default_factory=FieldInitParams)
    lrs: dict[str, ScheduleValue] = Field(default_factory=dict)   # per parameter group
    optimizer: OptimizerParams = Field(default_factory=OptimizerParams)

    @model_validator(mode="after")
    def _source(self):
        allowed = INIT_SOURCES[self.representation]
        if self.start not in allowed:
            raise ValueError(f"a {self.representation} scene starts from one of {list(allowed)}, not {self.source!r}")
        if (self.start == "artifact") != bool(self.artifact):
            raise ValueError("source artifact needs `artifact` (a job artifact name), and only it does")
        if self.lrs and self.optimizer.lrs:
            raise ValueError("give lrs or optimizer.lrs, not both")
        return self

    @property
    def start(self) -> str:
        """The source, or the representation's default one (None in the YAML)."""
        return self.source or INIT_SOURCES[self.representation][0]

    def optimizer_params(self) -> OptimizerParams:
        """The optimiser with the lrs shorthand folded in."""
        return self.optimizer.model_copy(update={"lrs": dict(self.lrs)}) if self.lrs else self.optimizer


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
    """Replace the job's scene by another representation of the same head: mesh -> gaussians (points
    sampled over the surface, coloured by its texture: PSHead-style refinement after a mesh), mesh ->
    dmtet (the SDF of the mesh on a grid), dmtet -> mesh (the extracted surface with xatlas UVs; the texture
    starts as its mean colour, for a texture stage to paint)."""

    to: Literal["gaussians", "dmtet", "mesh"] = "gaussians"
    num_points: int = Field(20000, ge=16, le=2_000_000)
    dmtet: DmtetInitParams = Field(default_factory=DmtetInitParams)   # mesh -> dmtet
    texture_size: int = Field(1024, ge=16, le=8192)                   # dmtet -> mesh (xatlas UVs)
    lrs: dict[str, ScheduleValue] = Field(default_factory=dict)
    optimizer: OptimizerParams = Field(default_factory=OptimizerParams)

    @model_validator(mode="after")
    def _lrs(self):
        if self.lrs and self.optimizer.lrs:
            raise ValueError("give lrs or optimizer.lrs, not both")
        return self

    def optimizer_params(self) -> OptimizerParams:
        return self.optimizer.model_copy(update={"lrs": dict(self.lrs)}) if self.lrs else self.optimizer


class GenerateParams(_Strict):
    """Text -> portrait candidates (guidance Generate), one chosen (orchestrator/stages/generate.py)."""

    prompt: str = ""                          # "" = the job's prompt
    negative_prompt: str = ""
    backbone: str = ""
    num_images: int = Field(4, ge=1, le=16)
    size: int = Field(512, ge=64, le=2048)
    num_steps: int = Field(30, ge=1, le=1000)
    guidance_scale: float = Field(5.0, ge=1)
    choose: Literal["first", "face_score"] = "face_score"


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
