"""Plain Python requests and results of the guidance service, shared by the in-process and gRPC clients.
Field meanings, units and defaults follow protos/headforge/v1/guidance.proto; arrays are numpy."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.core.cameras import PinholeCamera
from services.core.models import ModelRecord

# Names used across the service for control kinds, output kinds and distill variants (proto enums map to these).
CONTROL_KINDS = ("landmarks", "canny", "normal", "depth")
OUTPUT_KINDS = ("rgb", "normal", "depth", "albedo")
VARIANTS = ("sds", "isd", "image_conditioned", "video")
SCHEDULERS = ("ddim", "ddpm", "euler")


@dataclass(frozen=True)
class ControlSpec:
    """A loaded ControlNet: its Describe name and the kind of picture it takes ("" = custom, by name)."""

    name: str
    kind: str


@dataclass(frozen=True)
class LoraSpec:
    name: str
    output_kind: str = "rgb"   # what the backbone produces with this LoRA active (ID-to-3D: "normal", "albedo")
    normal_convention: str = "opencv"  # with output_kind "normal": the frame it was trained in (NORMAL_CONVENTIONS)


@dataclass
class BackboneInfo:
    """Static description of a loaded backbone (Describe)."""

    name: str
    backend: str                       # "diffusers" | "triton" | "analytic"
    family: str                        # "sd15", "sd21", "analytic", ...
    output_kind: str = "rgb"
    normal_convention: str = "opencv"  # with output_kind "normal" (backbones.base.NORMAL_CONVENTIONS)
    depth_convention: str = "inverse_depth"  # with output_kind "depth" (backbones.base.DEPTH_CONVENTIONS)
    native_resolution: int = 512
    latent_scale_factor: int = 8
    latent_channels: int = 4
    num_train_timesteps: int = 1000
    prediction_type: str = "epsilon"   # "epsilon" | "v_prediction" (predict_noise returns eps either way)
    variants: tuple[str, ...] = ("sds",)
    denoise: bool = True
    inpaint: bool = True
    generate: bool = True
    controls: tuple[ControlSpec, ...] = ()
    identity_adapters: tuple[str, ...] = ()
    identity_embedding_dim: int = 0    # 0 = no identity adapter
    expression_adapter: bool = False
    loras: tuple[LoraSpec, ...] = ()
    schedulers: tuple[str, ...] = SCHEDULERS
    default_negative_prompt: str = ""
    min_frames: int = 0
    max_frames: int = 0
    models: tuple[ModelRecord, ...] = ()

    def control(self, name: str) -> ControlSpec | None:
        return next((c for c in self.controls if c.name == name), None)

    def control_for_kind(self, kind: str) -> ControlSpec | None:
        return next((c for c in self.controls if c.kind == kind), None)


@dataclass
class ControlInput:
    """kind: "landmarks" | "canny" | "normal" | "depth", or "" with `name` naming a ControlNet.
    image: (C, H, W) for all images or (N, C, H, W) per image, float (or uint8 in [0, 255]).
    landmarks: instead of image for kind "landmarks": (K, 2) or (N, K, 2) pixels of the request images,
    K = 68 (iBUG order); the server draws them. scale: 0..2, 0 = 1.0."""

    kind: str = ""
    name: str = ""
    image: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    scale: float = 0.0


@dataclass
class Conditions:
    backbone: str = ""
    prompt: str = ""
    negative_prompt: str = ""
    view_dependent_prompt: bool = False
    identity_embedding: np.ndarray | None = None   # (D,) or (K, D)
    identity_scale: float = 0.0                    # 0 = 1.0
    identity_adapter: str = ""
    expression: str = ""
    expression_scale: float = 0.0
    controls: list[ControlInput] = field(default_factory=list)
    loras: list[tuple[str, float]] = field(default_factory=list)   # (name, scale); scale 0 = 1.0
    text_cache_key: str = ""
    identity_cache_key: str = ""


@dataclass
class TimestepSchedule:
    """Fractions of the training schedule in [0, 1]; both t_min and t_max 0 = (0.02, 0.98)."""

    t_min: float = 0.0
    t_max: float = 0.0
    t_min_end: float = 0.0
    t_max_end: float = 0.0
    training_fraction: float = 0.0
    sampling: str = "uniform"        # "uniform" | "linear_decay"
    shared: bool = False
    t: list[float] = field(default_factory=list)


@dataclass
class QueueOptions:
    priority: int = 0                # -10..10
    deadline: float | None = None    # time.time() seconds; None = none


@dataclass
class ReferenceView:
    """The subject's reference picture and its camera, for image-conditioned priors (Zero-1-to-3 style:
    the relative pose of each rendered camera to this one). image uint8 (H, W, 3) RGB on white."""

    image: np.ndarray
    camera: PinholeCamera


@dataclass
class DistillRequest:
    images: np.ndarray                        # (N, 3, H, W) float in [0, 1]
    conditions: Conditions = field(default_factory=Conditions)
    cameras: list[PinholeCamera] = field(default_factory=list)
    variant: str = "sds"                      # "sds" | "isd" | "image_conditioned" | "video"
    reference: ReferenceView | None = None    # needed by the image_conditioned variant
    guidance_scale: float = 0.0               # 0 = 100
    timesteps: TimestepSchedule = field(default_factory=TimestepSchedule)
    weighting: str = "sds"                    # "sds" | "uniform" | "sqrt" | "fantasia"
    noise: np.ndarray | None = None           # (N, C, R/f, R/f)
    seed: int = 0
    resolution: int = 0
    grad_clip: float = 0.0
    grad_dtype: str = "float32"               # "float32" | "float16"
    return_noise: bool = False
    return_denoised: bool = False
    queue: QueueOptions = field(default_factory=QueueOptions)
    background: np.ndarray | None = None      # (3,) or (N, 3) in [0, 1] the images were composited over; None = white


@dataclass
class ImageDiagnostics:
    timestep: int
    t: float
    weight: float
    loss: float
    grad_norm: float
    latent_grad_norm: float


@dataclass
class DistillResult:
    grad: np.ndarray                          # shape of images
    diagnostics: list[ImageDiagnostics]
    seed: int
    backbone: str
    noise: np.ndarray | None = None
    denoised: np.ndarray | None = None


@dataclass
class DenoiseRequest:
    images: np.ndarray
    strength: float                           # (0, 1]
    conditions: Conditions = field(default_factory=Conditions)
    cameras: list[PinholeCamera] = field(default_factory=list)
    num_steps: int = 0                        # 0 = 10
    guidance_scale: float = 0.0               # 0 = 7.5
    scheduler: str = ""
    noise: np.ndarray | None = None
    seed: int = 0
    resolution: int = 0
    queue: QueueOptions = field(default_factory=QueueOptions)
    background: np.ndarray | None = None      # (3,) or (N, 3) in [0, 1] the images were composited over; None = white


@dataclass
class DenoiseResult:
    images: np.ndarray
    start_timestep: int
    seed: int


@dataclass
class InpaintRequest:
    images: np.ndarray
    mask: np.ndarray                          # (1, H, W) or (N, 1, H, W), 1 = fill
    conditions: Conditions = field(default_factory=Conditions)
    cameras: list[PinholeCamera] = field(default_factory=list)
    strength: float = 0.0                     # 0 = 1.0
    num_steps: int = 0                        # 0 = 30
    guidance_scale: float = 0.0
    scheduler: str = ""
    seed: int = 0
    resolution: int = 0
    queue: QueueOptions = field(default_factory=QueueOptions)
    background: np.ndarray | None = None      # (3,) or (N, 3) in [0, 1] the images were composited over; None = white


@dataclass
class InpaintResult:
    images: np.ndarray
    seed: int


@dataclass
class GenerateRequest:
    conditions: Conditions = field(default_factory=Conditions)
    num_images: int = 0
    width: int = 0
    height: int = 0
    num_steps: int = 0
    guidance_scale: float = 0.0
    scheduler: str = ""
    seed: int = 0
    encode_png: bool = False
    queue: QueueOptions = field(default_factory=QueueOptions)
    cameras: list[PinholeCamera] = field(default_factory=list)   # 0 or num_images (a camera-keyed test prior)


@dataclass
class GenerateResult:
    images: np.ndarray                        # (N, C, H, W) float32 in [0, 1]; C = 1 for depth
    output_kind: str
    seed: int
    png: list[bytes] = field(default_factory=list)
    depth_convention: str = ""                # output_kind "depth": "inverse_depth" | "depth" (guidance.proto)


DEFAULT_CAPTION_TOKENS = 30    # CaptionRequest.max_new_tokens 0
MAX_CAPTION_TOKENS = 128


@dataclass
class CaptionRequest:
    """image: uint8 (H, W, 3) RGB, or encoded picture bytes (PNG/JPEG...); captioner "" = the default;
    prompt: text the caption continues ("a photo of"); max_new_tokens 1..MAX_CAPTION_TOKENS, 0 = 30."""

    image: np.ndarray | bytes
    captioner: str = ""
    prompt: str = ""
    max_new_tokens: int = 0


@dataclass
class CaptionResult:
    """caption: the prompt followed by the generated text (special tokens removed, stripped); model: the
    captioner's record (provenance "random_weights" for the tiny models: the caption is noise then)."""

    caption: str
    captioner: str
    model: ModelRecord


@dataclass
class CaptionerInfo:
    """A configured captioner (Describe): kind "blip2" | "blip"; model.sha256 is "" until it first loads."""

    name: str
    kind: str
    is_default: bool
    model: ModelRecord


@dataclass
class GuidanceDescription:
    backbones: list[tuple[BackboneInfo, bool]]   # (info, is_default)
    max_batch_images: int
    max_queue_delay_ms: int
    max_queue_depth: int
    queue_depth: int
    max_image_pixels: int
    max_message_bytes: int
    cache_ttl_s: int
    device: str
    models: list[ModelRecord] = field(default_factory=list)
    captioners: list[CaptionerInfo] = field(default_factory=list)

    def default_captioner(self) -> CaptionerInfo | None:
        return next((c for c in self.captioners if c.is_default), None)
