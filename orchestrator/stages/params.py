"""Parameters of every stage kind (validated when a recipe loads; each stage's `params` mapping).

Kept free of heavy imports: the jobs service validates recipes without loading any model. Over 400 lines
on purpose: it is the recipe language's schema, declarations only (one pydantic class per stage kind and
its parts, in stage order), read as one reference; the camera language lives in cameras.py."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.photo_intake import MAX_IMAGE_PIXELS, MIN_FACE_PX
from orchestrator.stages.cameras import CameraSpec, OrbitCameras
from orchestrator.stages.schedules import ScheduleValue


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KnownCamera(_Strict):
    """An orbit camera (orbit convention of common.proto: degrees, world units, vertical fov) looking at
    `target`."""

    azimuth: float = Field(0.0, ge=-360, le=360)
    elevation: float = Field(0.0, ge=-90, le=90)
    radius: float = Field(4.0, gt=0)
    fov: float = Field(35.0, gt=1, lt=170)
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)


class PreprocessParams(_Strict):
    """reference: "crop" = a square view around the head, crop_size px, white outside the head mask (what
    optimisation recipes fit to); "photo" = the whole working photo at its own camera (the fast recipe);
    "given" = the picture as it is at a known `camera`, no face analysis (a render of a known scene, e.g. a
    closed-loop check): its mask is the PNG's alpha channel, else the pixels that are not white."""

    face_index: int = Field(0, ge=0)          # faces are sorted largest first
    reference: Literal["crop", "photo", "given"] = "crop"
    crop_size: int = Field(512, ge=64, le=2048)
    min_face_px: int = Field(MIN_FACE_PX, ge=16)   # the face box's shorter side (photo_intake)
    max_image_pixels: int = Field(MAX_IMAGE_PIXELS, ge=1)   # larger photos (width * height) are refused
    camera: KnownCamera | None = None         # reference "given": where the picture was taken from
    # several photos of one person (ID-to-3D: 1-5): the identity is combined from the first len - holdout_photos
    # (preprocess._combined_identity); the last holdout_photos are kept out of it for the evaluation
    holdout_photos: int = Field(0, ge=0, le=4)

    @model_validator(mode="after")
    def _given(self):
        if (self.reference == "given") != (self.camera is not None):
            raise ValueError("reference given needs `camera`, and only it takes one")
        return self


Representation = Literal["gaussians", "mesh", "dmtet", "dmtet_expression", "triplane", "trigrid", "pyramid_trigrid"]
FIELD_KINDS = ("triplane", "trigrid", "pyramid_trigrid")


class OptimizerParams(_Strict):
    """The render service's optimiser for the job's scene (services/render/types.py OptimizerSpec): Adam or
    Adan, a learning rate per parameter group (a number or a schedule [start_step, start, end, end_step];
    groups not listed keep the kind's defaults; level_lrs: per pyramid level by rank, below), eps, weight
    decay, gradient clipping (max_grad_norm 0 = none) and frozen groups (e.g. a field's "decoder")."""

    kind: Literal["adam", "adan"] = "adam"
    lrs: dict[str, ScheduleValue] = Field(default_factory=dict)
    interpolation: Literal["linear", "exponential", "cosine"] = "linear"   # between a schedule's ends
    betas: tuple[float, ...] = ()             # () = the kind's defaults; adam 2, adan 3 values in [0, 1)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(0.0, ge=0)
    frozen: list[str] = Field(default_factory=list)
    # a pyramid tri-grid's levels by rank from the finest: [0.1, 0.2, 1.0] gives the finest level 0.1, the next
    # 0.2 and every coarser one 1.0 (levels named in `lrs` keep theirs); expanded once the scene's levels are known
    level_lrs: list[ScheduleValue] = Field(default_factory=list)

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
    """color_field: a per-vertex colour field (the "texture" parameter group) beside the SDF and deformation;
    without it the DMTet renders grey (geometry-only stages). expressions (representation dmtet_expression
    only, 1-32 texts): one learnt code per expression; the texts are what the sds terms' expression
    conditioning says, and the export's file names. max_offset: the SDF network's largest change of the
    template's signed distance, world units."""

    grid_resolution: Literal[32, 64, 128, 256, 512] = 64
    extent: float = Field(1.2, gt=0)           # half side of the grid's cube, world units
    color_field: bool = True
    expressions: list[str] = Field(default_factory=list, max_length=32)
    max_offset: float = Field(0.1, gt=0)
    options: dict[str, str] = Field(default_factory=dict)   # CreateScene options (e.g. the hash grid's size)

    @field_validator("expressions")
    @classmethod
    def _texts(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v) or any(not t.strip() for t in v):
            raise ValueError(f"expressions must be distinct, non-empty texts, got {v}")
        return v


class GanSampleParams(_Strict):
    """A sample of the inversion service's generator (init source gan_sample): w = mapping(z), z ~ N(0, I)
    from `seed`, truncated towards w_avg by truncation_psi (inversion.proto GanLatent)."""

    generator: str = ""                       # "" = the inversion service's default generator
    seed: int = Field(1, ge=1)
    truncation_psi: float = Field(1.0, ge=0, le=1)


class FieldInitParams(_Strict):
    """A tri-plane / tri-grid / pyramid tri-grid: 0 = the kind's default of each size."""

    resolution: int = Field(0, ge=0, le=1024)
    channels: int = Field(0, ge=0, le=256)
    depth: int = Field(0, ge=0, le=64)
    levels: list[int] = Field(default_factory=list)     # pyramid_trigrid resolutions, e.g. [8, 16, ..., 512]
    box_size: float = Field(0.0, ge=0)
    decoder: Literal["trainable", "frozen"] = "trainable"
    samples_per_ray: int = Field(0, ge=0, le=1024)      # stratified samples (0 = the service's 48)
    importance_samples: int | None = Field(None, ge=0, le=1024)   # None = the service's 48; 0 = none


# where each representation's first scene can come from
INIT_SOURCES = {"gaussians": ("random", "artifact"), "mesh": ("sphere", "head_template", "fitted_template", "artifact"),
                "dmtet": ("sphere", "head_template", "fitted_template", "artifact"),
                "dmtet_expression": ("head_template", "fitted_template", "sphere", "artifact"),
                **{k: ("random", "artifact", "gan_sample") for k in FIELD_KINDS}}


class _MakesScene(_Strict):
    """A stage that makes the job's scene: its optimiser, with `lrs` as the shorthand for optimizer.lrs."""

    lrs: dict[str, ScheduleValue] = Field(default_factory=dict)   # per parameter group
    optimizer: OptimizerParams = Field(default_factory=OptimizerParams)

    @model_validator(mode="after")
    def _one_lrs(self):
        if self.lrs and self.optimizer.lrs:
            raise ValueError("give lrs or optimizer.lrs, not both")
        return self

    def optimizer_params(self) -> OptimizerParams:
        """The optimiser with the lrs shorthand folded in."""
        return self.optimizer.model_copy(update={"lrs": dict(self.lrs)}) if self.lrs else self.optimizer


class InitParams(_MakesScene):
    """The job's first scene. source: random (Gaussians in a ball of `radius`, a field's random features),
    sphere (an icosphere of `radius`), head_template (orchestrator/head_template), fitted_template (the
    template_fit stage's vertices), artifact (a job artifact: a PLY for Gaussians, a GLB/OBJ-zip/PLY mesh
    for mesh and DMTet, an exported field NPZ for fields) or gan_sample (fields: the feature field of a sample
    of the inversion service's generator, `gan`; its kind must be the representation). lrs: shorthand for
    optimizer.lrs."""

    representation: Representation = "gaussians"
    source: Literal["random", "sphere", "head_template", "fitted_template", "artifact", "gan_sample"] | None = None
    artifact: str = ""
    num_points: int = Field(3000, ge=16, le=2_000_000)
    radius: float = Field(0.8, gt=0)
    color_from_photo: bool = True             # Gaussians start with the photo's mean head colour
    texture_size: int | None = Field(None, ge=16, le=8192)   # mesh / dmtet only; None = 256
    gaussians: GaussianInitParams = Field(default_factory=GaussianInitParams)
    dmtet: DmtetInitParams = Field(default_factory=DmtetInitParams)
    field: FieldInitParams = Field(default_factory=FieldInitParams)
    gan: GanSampleParams = Field(default_factory=GanSampleParams)

    @model_validator(mode="after")
    def _source(self):
        allowed = INIT_SOURCES[self.representation]
        if self.start not in allowed:
            raise ValueError(f"a {self.representation} scene starts from one of {list(allowed)}, not {self.source!r}")
        if (self.start == "artifact") != bool(self.artifact):
            raise ValueError("source artifact needs `artifact` (a job artifact name), and only it does")
        if self.texture_size is not None and self.representation not in ("mesh", "dmtet", "dmtet_expression"):
            raise ValueError(f"texture_size is for mesh and dmtet scenes, not {self.representation}")
        if (self.representation == "dmtet_expression") != bool(self.dmtet.expressions):
            raise ValueError("dmtet.expressions (the expression texts) is for, and needed by, a dmtet_expression scene")
        return self

    @property
    def texture(self) -> int:
        """The UV texture side of a mesh / DMTet scene."""
        return self.texture_size or 256

    @property
    def start(self) -> str:
        """The source, or the representation's default one (None in the YAML)."""
        return self.source or INIT_SOURCES[self.representation][0]


class LoraUse(_Strict):
    name: str = Field(min_length=1)           # a LoRA the guidance backbone has loaded (or trained per tenant)
    scale: float = Field(1.0, gt=0, le=4)


class ControlUse(_Strict):
    """A control picture drawn for every rendered view: landmarks (the subject's 3D landmarks from preprocess,
    or from align_landmarks once it ran, projected by each view's camera), normal (the view's rendered
    camera-frame normals) or depth."""

    kind: Literal["landmarks", "normal", "depth"]
    scale: float = Field(1.0, gt=0, le=2)
    name: str = ""                             # a ControlNet by name; "" = the backbone's one of this kind
    # landmarks: 68 iBUG points (HeadForge's drawing) or MediaPipe's 478 (drawn in the style of CrucibleAI's
    # ControlNetMediaPipeFace; the face model must give 478 points). After an align_landmarks stage, the aligned ones.
    points: Literal[68, 478] = 68


TERM_KINDS = ("reference_rgb", "reference_mask", "reference_normal", "reference_depth", "perceptual", "sds", "identity",
              "regress")
REFERENCE_TERMS = ("reference_rgb", "reference_mask", "reference_normal", "reference_depth", "perceptual")
SDS_OUTPUTS = ("rgb", "normal_camera", "normal_world", "albedo")


class Term(_Strict):
    """One loss term, applied on the steps where step % every == phase, with a weight schedule.
      reference_rgb     L1 (weight l1) + L2 (weight l2) to the photo's reference view at its camera
      reference_mask    L2 of the rendered alpha to the reference view's head mask
      reference_normal  1 - cosine to a normal map at the reference camera (`target`: a job artifact .npy
                        (3, H, W) in [-1, 1], camera frame), inside the head mask
      reference_depth   1 - Pearson correlation to a depth map at the reference camera (`target`: .npy
                        (1, H, W)), inside the head mask (scale and shift free, as monocular depth is)
      perceptual        LPIPS (VGG16) of the reference-view render to the photo, with the user's weights
                        (`lpips_vgg`: torchvision's VGG16 state dict, `lpips_lin`: the lpips package's
                        lin weights; services/core/lpips.py), computed where the job runs
      sds               guidance Distill on the step's views, on the render output `output`, carrying every
                        DistillRequest field (variant, backbone, LoRAs, identity, controls, reference view,
                        CFG, timestep schedule with piecewise anneals, weighting, caller noise)
      identity          face IdentityLoss of the step's views against the photo's embedding
      regress           L1/L2 of the render output `output` onto stored target views (`target`: a job
                        artifact .npz with images (V, C, H, W) and cameras K (V, 3, 3), world_to_camera
                        (V, 4, 4); refine and render_targets write these, render_targets with the output's
                        name, which must match), one target view per step in turn; normals as the render
                        service gives them (alpha-weighted, camera or world frame)"""

    kind: Literal[TERM_KINDS]
    weight: ScheduleValue = 1.0
    every: int = Field(1, ge=1)               # the term's period in steps
    phase: int = Field(0, ge=0)               # ... and its offset: applied when step % every == phase
    l1: float = Field(0.0, ge=0)              # reference_rgb / regress: the L1 and L2 weights
    l2: float = Field(1.0, ge=0)
    target: str = ""                          # reference_normal / reference_depth / regress: a job artifact
    lpips_vgg: str = ""                       # perceptual: weight files on the machine that runs the job (relative: under the job's models_dir)
    lpips_lin: str = ""
    # sds (and regress: the output regressed)
    output: Literal[SDS_OUTPUTS] = "rgb"
    variant: Literal["sds", "isd", "image_conditioned"] = "sds"
    prompt: str = ""
    negative_prompt: str = ""
    backbone: str = ""
    view_dependent_prompt: bool = True
    loras: list[LoraUse] = Field(default_factory=list)
    identity_scale: float = Field(0.0, ge=0, le=4)   # > 0: condition on the photo's identity embedding
    identity_adapter: str = ""
    # > 0 (dmtet_expression scenes): condition on the text of the expression the step renders (lambda_exp)
    expression_scale: float = Field(0.0, ge=0, le=2)
    controls: list[ControlUse] = Field(default_factory=list)
    reference_view: bool = False              # send the photo's reference view (image-conditioned priors)
    guidance_scale: float = Field(7.5, ge=1)
    t_range: tuple[float, float] = (0.02, 0.98)
    t_range_end: tuple[float, float] | None = None      # annealed linearly to this by the last step
    t_anneal: list[tuple[int, float, float]] = Field(default_factory=list)   # piecewise [step, t_min, t_max]
    t_sampling: Literal["uniform", "linear_decay"] = "uniform"
    weighting: Literal["sds", "uniform", "sqrt", "fantasia"] = "sds"
    noise: Literal["service", "fixed"] = "service"     # fixed: the same noise per view slot every step
    grad_clip: float = Field(0.0, ge=0)
    resolution: int = Field(0, ge=0)          # guidance working resolution; 0 = the backbone's

    @model_validator(mode="after")
    def _consistent(self):
        if self.phase >= self.every:
            raise ValueError(f"phase must be < every ({self.every}), got {self.phase}")
        for lo, hi in [self.t_range, *([self.t_range_end] if self.t_range_end else []),
                       *[(a, b) for _, a, b in self.t_anneal]]:
            if not 0 < lo < hi <= 1:
                raise ValueError(f"a timestep range needs 0 < t_min < t_max <= 1, got [{lo}, {hi}]")
        steps = [s for s, _, _ in self.t_anneal]
        if steps != sorted(steps) or len(set(steps)) != len(steps):
            raise ValueError(f"t_anneal steps must increase, got {steps}")
        if self.kind in ("reference_normal", "reference_depth", "regress") and not self.target:
            raise ValueError(f"a {self.kind} term needs `target` (a job artifact name)")
        if self.kind == "perceptual" and not self.lpips_vgg:
            raise ValueError("a perceptual term needs lpips_vgg (VGG16 weights; nothing is downloaded)")
        if self.kind == "reference_rgb" and self.l1 == 0 and self.l2 == 0:
            raise ValueError("reference_rgb needs l1 > 0 or l2 > 0")
        if self.variant == "isd" and self.identity_scale == 0:
            raise ValueError("the isd variant needs identity_scale > 0 (it conditions on the photo's identity)")
        if self.variant == "image_conditioned" and not self.reference_view:
            raise ValueError("the image_conditioned variant needs reference_view: true")
        return self

    def needs_photo(self) -> bool:
        """Whether the term reads what preprocess stores about the photo."""
        return self.kind in REFERENCE_TERMS or self.reference_view or self.needs_face()

    def needs_face(self) -> bool:
        """Whether the term reads the photo's analysed face (identity embedding, 3D landmarks)."""
        return self.kind == "identity" or self.identity_scale > 0 or any(c.kind == "landmarks" for c in self.controls)

    def render_outputs(self) -> set[str]:
        """The render outputs the term reads."""
        return {"reference_rgb": {"rgb"}, "perceptual": {"rgb"}, "reference_mask": {"alpha"},
                "reference_normal": {"normal_camera", "alpha"},
                "reference_depth": {"depth", "alpha"}, "identity": {"rgb"}, "regress": {self.output}}.get(
            self.kind, {self.output} | ({"normal_camera"} if any(c.kind == "normal" for c in self.controls) else set())
            | ({"depth"} if any(c.kind == "depth" for c in self.controls) else set()))


class Regularizer(_Strict):
    name: str
    weight: ScheduleValue = 1.0
    params: dict[str, float] = Field(default_factory=dict)


class ShadingParams(_Strict):
    """How the sds / identity views are shaded (render.proto shading): "pbr" (image-based lighting) or
    "pbr_diffuse" (its diffuse lobe only: roughness and metallic get no gradient) under an environment map
    drawn per step from `environments` ("procedural": orchestrator/stages/environments.py's random sky and
    sun; else a folder of Radiance .hdr maps, relative paths under the job's models_dir), turned by a random
    Y rotation when random_rotation; or "diffuse" (Lambert with the light at the camera)."""

    kind: Literal["pbr", "pbr_diffuse", "diffuse"] = "pbr"
    environments: str = "procedural"
    random_rotation: bool = True
    max_height: int = Field(128, ge=2, le=1024)     # maps are area-downsampled to at most this height (2:1)

    @property
    def reads_files(self) -> bool:
        """Whether the shading is lit by environment maps from a folder (not procedural, not Lambert)."""
        return self.kind != "diffuse" and self.environments != "procedural"


class OptimiseParams(_Strict):
    """The subject's loop (orchestrator/stages/optimise.py). cameras: the views the sds / identity terms
    render each step (orchestrator/stages/cameras.py, with their resolution schedule and backgrounds);
    reference terms render the photo's camera at reference_resolution on a white background (the reference
    view is white outside the head). optimizer: this stage's own optimiser (None = the scene's). On a
    dmtet_expression scene every step renders one expression drawn uniformly from the scene's (seeded by
    the step); shading: None = the scene's default (unlit colours)."""

    iterations: int = Field(300, ge=1, le=1_000_000)
    views_per_step: int = Field(1, ge=1, le=16)
    cameras: CameraSpec = Field(default_factory=OrbitCameras)
    reference_resolution: int = Field(64, ge=16, le=2048)
    terms: list[Term] = Field(min_length=1)
    regularizers: list[Regularizer] = Field(default_factory=list)
    optimizer: OptimizerParams | None = None
    shading: ShadingParams | None = None


class ConvertParams(_MakesScene):
    """Replace the job's scene by another representation of the same head: mesh -> gaussians (points
    sampled over the surface, coloured by its texture: PSHead-style refinement after a mesh), mesh ->
    dmtet (the SDF of the mesh on a grid), dmtet or a field -> mesh (the extracted surface, for a field its
    density's marching-cubes surface, with xatlas UVs; the texture starts as its mean colour, for a texture
    stage to paint)."""

    to: Literal["gaussians", "dmtet", "mesh"] = "gaussians"
    num_points: int = Field(20000, ge=16, le=2_000_000)
    dmtet: DmtetInitParams = Field(default_factory=DmtetInitParams)   # mesh -> dmtet
    texture_size: int = Field(1024, ge=16, le=8192)                   # dmtet -> mesh (xatlas UVs)


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


class CaptionParams(_Strict):
    """The text prompt y from the reference picture (orchestrator/stages/caption.py; Portrait3D-ID 4.1, PSHead:
    BLIP-2): the guidance service's captioner ("" = its default) continues `prompt_prefix`, and `template` (which
    must hold "{caption}") wraps the caption. fallback: with no captioner configured, "job_prompt" uses the job's
    prompt (when it has one), "fail" fails the job at preflight."""

    captioner: str = ""
    prompt_prefix: str = "a photo of"
    template: str = "{caption}"
    fallback: Literal["job_prompt", "fail"] = "job_prompt"
    max_new_tokens: int = Field(30, ge=1, le=128)

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        try:
            v.format(caption="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"template may only use the {{caption}} field ({e!r})") from None
        if "{caption}" not in v:
            raise ValueError("template must contain {caption}")
        return v


class GeometryTargetsParams(_Strict):
    """The reference view's normal and depth maps from normal / depth backbones (orchestrator/stages/
    geometry_targets.py; "" skips that map): the reference's Canny edges as a control (canny_control > 0) and the
    photo's identity through an identity adapter (identity_scale > 0)."""

    normal_backbone: str = ""
    depth_backbone: str = ""
    prompt: str = ""                          # "" = the job's prompt (or caption)
    negative_prompt: str = ""
    canny_control: float = Field(1.0, ge=0, le=2)
    canny_name: str = ""                      # a ControlNet by name; "" = the backbone's Canny one
    identity_scale: float = Field(0.0, ge=0, le=4)
    identity_adapter: str = ""
    num_steps: int = Field(30, ge=1, le=1000)
    guidance_scale: float = Field(7.5, ge=1)

    @model_validator(mode="after")
    def _some_map(self):
        if not (self.normal_backbone or self.depth_backbone):
            raise ValueError("give normal_backbone or depth_backbone (or both)")
        return self


class InvertParams(_MakesScene):
    """The inversion (inversion.proto's InvertOptions, same names and defaults) and what becomes of it.
    output "field": the generator's feature field as the job's scene (export it as npz); "mesh": marching
    cubes at mesh_resolution^3 on the density (density_threshold 0 = the generator's default), largest
    component only, vertex colours. lrs: the new scene's learning rates per parameter group."""

    generator: str = ""                       # "" = the inversion service's default generator
    latent_space: Literal["w", "w_plus"] = "w_plus"
    steps: int = Field(500, ge=0, le=10000)
    lr: float = Field(0.01, gt=0, le=1)
    lr_rampup: float = Field(0.05, ge=0, le=1)
    lr_rampdown: float = Field(0.25, ge=0, le=1)
    w_noise: float = Field(0.05, ge=0)
    w_noise_ramp: float = Field(0.75, ge=0, le=1)
    noise_regularization: float = Field(1e5, ge=0)
    l2_weight: float = Field(1.0, ge=0)
    lpips_weight: float = Field(1.0, ge=0)    # ignored (L2 only) when the service has no LPIPS weights
    lpips_resolution: int = Field(256, ge=16, le=1024)
    pti: bool = False
    pti_steps: int = Field(350, ge=0, le=5000)
    pti_lr: float = Field(3e-4, gt=0, le=1)
    pti_l2_weight: float = Field(1.0, ge=0)
    pti_lpips_weight: float = Field(1.0, ge=0)
    optimize_camera: bool = False             # yaw/pitch/roll offsets of the crop camera, jointly with w
    camera_lr: float = Field(0.01, gt=0, le=1)  # radians per step, on lr's ramp
    progress_every: int = Field(10, ge=1, le=10000)
    use_mask: bool = True                     # fit only inside the crop's head mask
    crop_size: int = Field(512, ge=64, le=2048)
    # face: the face service's aligned crop in the generator's crop style and its crop camera; reference: the
    # preprocess stage's reference view as it is, at its camera (a picture already framed for the generator, e.g.
    # a render of a known scene with preprocess `given`)
    crop: Literal["face", "reference"] = "face"
    output: Literal["field", "mesh"] = "field"
    mesh_resolution: int = Field(256, ge=32, le=1024)
    density_threshold: float = 0.0
    max_faces: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _some_loss(self):
        if self.l2_weight + self.lpips_weight <= 0:
            raise ValueError("l2_weight and lpips_weight are both 0")
        return self


METRES_PER_WORLD_UNIT = 0.1   # the world frame: head radius ~1 unit = 10 cm (protos: conventions)


class ExportParams(_Strict):
    """units: "world" writes positions in world units (1 unit = 10 cm); "metres" writes GLBs in metres, as
    glTF viewers assume (only GLB records its scale, so HeadForge reads it back: the other formats stay in
    world units)."""

    formats: list[Literal["glb", "ply", "npz", "obj_zip"]] = Field(default_factory=lambda: ["ply"], min_length=1)
    stem: str = Field("export/head", pattern=r"^[a-z][a-z0-9_/]*$")   # artifact name without extension
    units: Literal["world", "metres"] = "world"
    # dmtet_expression scenes: `stem` holds this expression ("" = the first), and every expression is also
    # written as <stem>_<slug of its text> in the mesh formats
    expression: str = ""

    def scale_for(self, fmt: str) -> float:
        return METRES_PER_WORLD_UNIT if self.units == "metres" and fmt == "glb" else 1.0


class TurntableParams(_Strict):
    """turntable.gif: `frames` views at evenly spaced azimuths from frontal, at `elevation` degrees."""

    frames: int = Field(24, ge=4, le=360)
    size: int = Field(256, ge=32, le=1024)
    elevation: float = Field(0.0, ge=-60, le=60)
    background: tuple[float, float, float] | None = None   # None = the render service's default


class IdentityGridParams(_Strict):
    """EvaluateParams.identity_grid: renders at yaw_steps evenly spaced yaws over `yaw` x elevation_steps
    elevations over `elevation` (degrees, both ends included; one step: lo must equal hi). Yaw is the orbit
    azimuth (0 = frontal, +90 = camera on +X, seeing the subject's left side); elevation positive above.
    Defaults: ID-to-3D's range, elevation [-15, +15] and rotation [-65, +65]."""

    yaw: tuple[float, float] = (-65.0, 65.0)
    elevation: tuple[float, float] = (-15.0, 15.0)
    yaw_steps: int = Field(5, ge=1, le=73)
    elevation_steps: int = Field(3, ge=1, le=37)

    @model_validator(mode="after")
    def _ranges(self):
        for name, (lo, hi), steps, limit in (("yaw", self.yaw, self.yaw_steps, 180),
                                             ("elevation", self.elevation, self.elevation_steps, 89)):
            if not -limit <= lo <= hi <= limit:
                raise ValueError(f"{name} must be [lo, hi] with -{limit} <= lo <= hi <= {limit}, got {[lo, hi]}")
            if steps == 1 and lo != hi:
                raise ValueError(f"{name}_steps 1 takes one {name}: give [{name}, {name}], got {[lo, hi]}")
        return self


class EvaluateParams(_Strict):
    """The protocol views at `resolution`, the geometry views at `geometry_resolution`; turntable_frames 0
    leaves the turntable to a turntable stage. identity_grid (None = off): identity over a grid of views
    (orchestrator.evaluation.evaluate_identity_grid) against identity_references: "holdout" = the photos
    preprocess held out (holdout_photos), falling back to the input photo with a warning when none are;
    "photo" = the input photo's identity. identity_model: the recogniser the figure must come from (a face
    RECOGNIZERS name, e.g. "cosface" for ID-to-3D's metric); the face service embeds with the one it was
    started with, so a job whose face service runs another fails before its first stage. None = whichever
    it runs (metrics name it)."""

    resolution: int = Field(256, ge=64, le=1024)
    geometry_resolution: int = Field(256, ge=64, le=1024)
    turntable_frames: int = Field(24, ge=0, le=360)
    clip_model: str | None = None             # a local Hugging Face CLIP folder: enables CLIP-I
    identity_grid: IdentityGridParams | None = None
    identity_references: Literal["holdout", "photo"] = "holdout"
    identity_model: str | None = None

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


class TextureInpaintParams(_Strict):
    """Paint a mesh's UV texture view by view (orchestrator/stages/texture_inpaint.py): cameras is an ordered
    list (ring, sweep or list, visited in order); at each view the texels no view has written yet are
    inpainted by the guidance service (with the view's rendered normals as a control when normal_control >
    0) and back-projected into the texture; texels already written (the photo's first, with photo_first)
    are never overwritten."""

    cameras: CameraSpec
    photo_first: bool = True
    prompt: str = ""                          # "" = the job's prompt
    negative_prompt: str = ""
    backbone: str = ""
    strength: float = Field(1.0, gt=0, le=1)
    num_steps: int = Field(30, ge=1, le=1000)
    guidance_scale: float = Field(7.5, ge=1)
    normal_control: float = Field(1.0, ge=0, le=2)      # 0 = no normal control
    identity_scale: float = Field(0.0, ge=0, le=4)      # > 0: condition on the photo's identity embedding
    identity_adapter: str = ""
    min_cosine: float = Field(0.3, ge=0, lt=1)          # texels seen more obliquely are not written
    min_unseen: float = Field(0.002, ge=0, le=1)        # views with fewer unseen pixels (fraction) are skipped

    @field_validator("cameras")
    @classmethod
    def _ordered(cls, v):
        if v.kind == "orbit" or getattr(v, "order", "cycle") == "random":
            raise ValueError("texture_inpaint visits an ordered camera list: ring, sweep or list (order cycle)")
        if v.patch is not None:
            raise ValueError("texture_inpaint renders whole views: no patch")
        return v


def ordered_view_count(spec) -> int:
    """How many views an ordered camera list has (ring / sweep: `views`; list: its length)."""
    return spec.views if isinstance(spec.views, int) else len(spec.views)


class RefineParams(_Strict):
    """Image-space refinement (orchestrator/stages/refine.py): render the target views, Denoise them
    (SDEdit-style: strength of the noise, the prompt) into targets, then regress the scene onto the targets
    for `iterations` steps (L1 / L2), one target view per step in turn, on a random patch_size crop of it
    when patch_size > 0; `rounds` times, the targets re-made from the current scene each round.
    cameras: an ordered list (ring, sweep, list: all its views are targets) or orbit (target_views drawn)."""

    cameras: CameraSpec
    target_views: int = Field(0, ge=0, le=256)         # orbit cameras: how many target views to draw
    rounds: int = Field(1, ge=1, le=10_000)
    iterations: int = Field(100, ge=1, le=100_000)       # regression steps per round
    strength: float = Field(0.5, gt=0, le=1)
    num_steps: int = Field(10, ge=1, le=1000)
    guidance_scale: float = Field(7.5, ge=1)
    prompt: str = ""
    negative_prompt: str = ""
    backbone: str = ""
    l1: float = Field(0.0, ge=0)
    l2: float = Field(1.0, ge=0)
    # alpha_weighted: the per-pixel loss times the rendered alpha, its gradient reaching alpha too (Portrait3D-Text's
    # code: 1e3 * mean(mask * (x - x_hat)^2)); the mean is over every pixel
    alpha_weighted: bool = False
    patch_size: int = Field(0, ge=0, le=2048)
    # random_scale: a random square of side patch_size/2 .. the view's, resized to patch_size; native: a random
    # patch_size square of the target at its own resolution (no resize)
    patch_crop: Literal["random_scale", "native"] = "random_scale"
    optimizer: OptimizerParams | None = None
    # the Denoise conditions beyond the prompt: the photo's identity (an identity adapter at identity_scale > 0)
    # and the target view's rendered normals as a normal ControlNet's control (normal_control > 0)
    identity_scale: float = Field(0.0, ge=0, le=4)
    identity_adapter: str = ""
    normal_control: float = Field(0.0, ge=0, le=2)
    # each regression step's further terms: LPIPS (VGG16 weights as the perceptual term's) of the render to its
    # target, and the reference view's L2 to the photo (at reference_resolution, on white)
    perceptual: float = Field(0.0, ge=0)
    lpips_vgg: str = ""
    lpips_lin: str = ""
    reference_l2: float = Field(0.0, ge=0)
    reference_resolution: int = Field(256, ge=16, le=2048)
    # "all" keeps every round's targets (refine/<stage>/targets_<round>.npz); "last" one file the rounds
    # overwrite (refine/<stage>/targets.npz): many rounds of fresh targets, e.g. one denoised view per step
    keep_targets: Literal["all", "last"] = "all"

    @model_validator(mode="after")
    def _views(self):
        if self.cameras.kind == "orbit" and self.target_views == 0:
            raise ValueError("orbit cameras draw their target views: give target_views > 0")
        if self.l1 == 0 and self.l2 == 0:
            raise ValueError("refine needs l1 > 0 or l2 > 0")
        if self.perceptual > 0 and not self.lpips_vgg:
            raise ValueError("perceptual > 0 needs lpips_vgg (VGG16 weights; nothing is downloaded)")
        return self


class AlignLandmarksParams(_Strict):
    """The photo's 3D landmarks aligned to the job's scene (orchestrator/stages/align_landmarks.py): rays through
    the 2D detections of `keypoints` (iBUG 68 indices) at the reference camera, rendered at `resolution`, meet
    the scene's surface; a residual above max_residual (world units, RMS) is a warning."""

    keypoints: list[int] = Field(default_factory=lambda: [36, 39, 42, 45, 30, 48, 54], min_length=3)
    resolution: int = Field(512, ge=64, le=2048)
    max_residual: float = Field(0.1, gt=0)

    @field_validator("keypoints")
    @classmethod
    def _indices(cls, v: list[int]) -> list[int]:
        if any(not 0 <= k < 68 for k in v) or len(set(v)) != len(v):
            raise ValueError(f"keypoints are distinct iBUG indices 0..67, got {v}")
        return v


class RenderTargetsParams(_Strict):
    """The job's scene rendered as regression targets (orchestrator/stages/render_targets.py), for a regress
    term: cameras ordered (ring, sweep, list: every view, or the first target_views) or orbit (target_views
    drawn); output the render output stored."""

    cameras: CameraSpec
    target_views: int = Field(0, ge=0, le=1024)
    output: Literal["rgb", "normal_camera", "normal_world"] = "normal_camera"

    @model_validator(mode="after")
    def _views(self):
        if self.cameras.kind == "orbit" and self.target_views == 0:
            raise ValueError("orbit cameras draw their target views: give target_views > 0")
        if self.cameras.patch is not None:
            raise ValueError("render_targets renders whole views: no patch")
        return self


class GroundTruthCheckParams(_Strict):
    """A TEST stage (orchestrator/stages/ground_truth.py): compare the job's scene with the known head the
    oracle prior is built on, at held-out views: the procedural head, or (truth gan_sample) a sample of the
    inversion service's generator, the field an oracle with that sample's exemplar_field renders. Meaningful
    only for jobs on the oracle prior."""

    azimuths: list[float] = Field(default_factory=lambda: [22.5, 67.5, 112.5, 157.5, -157.5, -112.5, -67.5, -22.5],
                                  min_length=1)
    elevation: float = Field(10.0, ge=-90, le=90)
    radius: float = Field(4.0, gt=0)
    fov: float = Field(35.0, gt=1, lt=170)
    resolution: int = Field(64, ge=16, le=512)
    label: str = Field("", pattern=r"^[a-z0-9_]*$")     # the report key; "" = the stage's name
    truth: Literal["procedural_head", "gan_sample"] = "procedural_head"
    gan: GanSampleParams = Field(default_factory=GanSampleParams)   # truth gan_sample: which sample
    # dmtet_expression scenes: expression text -> procedural_head.EXPRESSIONS variant; each code's mesh is
    # compared with every variant (Chamfer), so the report says whether code e recovered variant e
    expressions: dict[str, str] = Field(default_factory=dict)


class GroundTruthMeshParams(_Strict):
    """A TEST stage (ground_truth_mesh): the procedural head, in one of its expression variants, meshed by marching
    cubes and written as a GLB job artifact (world units), e.g. as the template a check's scene starts from."""

    expression: str = "neutral"
    resolution: int = Field(64, ge=16, le=256)
    artifact: str = Field("truth/head.glb", pattern=r"^[a-z][a-z0-9_/]*\.glb$")


class GroundTruthTargetsParams(RenderTargetsParams):
    """A TEST stage (ground_truth_targets): render_targets' views and file, rendered from the known head the
    oracle prior shows (truth as in ground_truth_check) instead of the job's scene."""

    truth: Literal["procedural_head", "gan_sample"] = "procedural_head"
    gan: GanSampleParams = Field(default_factory=GanSampleParams)
