import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from headforge.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SdsWeighting(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SDS_WEIGHTING_UNSPECIFIED: _ClassVar[SdsWeighting]
    SDS_WEIGHTING_SDS: _ClassVar[SdsWeighting]
    SDS_WEIGHTING_UNIFORM: _ClassVar[SdsWeighting]
    SDS_WEIGHTING_SQRT: _ClassVar[SdsWeighting]
    SDS_WEIGHTING_FANTASIA: _ClassVar[SdsWeighting]

class DistillVariant(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISTILL_VARIANT_UNSPECIFIED: _ClassVar[DistillVariant]
    DISTILL_VARIANT_SDS: _ClassVar[DistillVariant]
    DISTILL_VARIANT_ISD: _ClassVar[DistillVariant]
    DISTILL_VARIANT_IMAGE_CONDITIONED: _ClassVar[DistillVariant]
    DISTILL_VARIANT_VIDEO: _ClassVar[DistillVariant]

class GuidanceOutputKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GUIDANCE_OUTPUT_KIND_UNSPECIFIED: _ClassVar[GuidanceOutputKind]
    GUIDANCE_OUTPUT_KIND_RGB: _ClassVar[GuidanceOutputKind]
    GUIDANCE_OUTPUT_KIND_NORMAL: _ClassVar[GuidanceOutputKind]
    GUIDANCE_OUTPUT_KIND_DEPTH: _ClassVar[GuidanceOutputKind]
    GUIDANCE_OUTPUT_KIND_ALBEDO: _ClassVar[GuidanceOutputKind]
SDS_WEIGHTING_UNSPECIFIED: SdsWeighting
SDS_WEIGHTING_SDS: SdsWeighting
SDS_WEIGHTING_UNIFORM: SdsWeighting
SDS_WEIGHTING_SQRT: SdsWeighting
SDS_WEIGHTING_FANTASIA: SdsWeighting
DISTILL_VARIANT_UNSPECIFIED: DistillVariant
DISTILL_VARIANT_SDS: DistillVariant
DISTILL_VARIANT_ISD: DistillVariant
DISTILL_VARIANT_IMAGE_CONDITIONED: DistillVariant
DISTILL_VARIANT_VIDEO: DistillVariant
GUIDANCE_OUTPUT_KIND_UNSPECIFIED: GuidanceOutputKind
GUIDANCE_OUTPUT_KIND_RGB: GuidanceOutputKind
GUIDANCE_OUTPUT_KIND_NORMAL: GuidanceOutputKind
GUIDANCE_OUTPUT_KIND_DEPTH: GuidanceOutputKind
GUIDANCE_OUTPUT_KIND_ALBEDO: GuidanceOutputKind

class QueueOptions(_message.Message):
    __slots__ = ("priority", "deadline")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    priority: int
    deadline: _timestamp_pb2.Timestamp
    def __init__(self, priority: _Optional[int] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ControlInput(_message.Message):
    __slots__ = ("kind", "name", "image", "landmarks", "scale")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ControlInput.Kind]
        LANDMARKS: _ClassVar[ControlInput.Kind]
        CANNY: _ClassVar[ControlInput.Kind]
        NORMAL: _ClassVar[ControlInput.Kind]
        DEPTH: _ClassVar[ControlInput.Kind]
    KIND_UNSPECIFIED: ControlInput.Kind
    LANDMARKS: ControlInput.Kind
    CANNY: ControlInput.Kind
    NORMAL: ControlInput.Kind
    DEPTH: ControlInput.Kind
    class Points(_message.Message):
        __slots__ = ("points",)
        POINTS_FIELD_NUMBER: _ClassVar[int]
        points: _containers.RepeatedCompositeFieldContainer[_common_pb2.Point2]
        def __init__(self, points: _Optional[_Iterable[_Union[_common_pb2.Point2, _Mapping]]] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    kind: ControlInput.Kind
    name: str
    image: _common_pb2.Tensor
    landmarks: _containers.RepeatedCompositeFieldContainer[ControlInput.Points]
    scale: float
    def __init__(self, kind: _Optional[_Union[ControlInput.Kind, str]] = ..., name: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., landmarks: _Optional[_Iterable[_Union[ControlInput.Points, _Mapping]]] = ..., scale: _Optional[float] = ...) -> None: ...

class LoraSelection(_message.Message):
    __slots__ = ("name", "scale")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    name: str
    scale: float
    def __init__(self, name: _Optional[str] = ..., scale: _Optional[float] = ...) -> None: ...

class Conditions(_message.Message):
    __slots__ = ("backbone", "prompt", "negative_prompt", "view_dependent_prompt", "identity_embedding", "identity_scale", "identity_adapter", "expression", "expression_scale", "controls", "loras", "text_cache_key", "identity_cache_key")
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPT_FIELD_NUMBER: _ClassVar[int]
    VIEW_DEPENDENT_PROMPT_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_SCALE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_ADAPTER_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_SCALE_FIELD_NUMBER: _ClassVar[int]
    CONTROLS_FIELD_NUMBER: _ClassVar[int]
    LORAS_FIELD_NUMBER: _ClassVar[int]
    TEXT_CACHE_KEY_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_CACHE_KEY_FIELD_NUMBER: _ClassVar[int]
    backbone: str
    prompt: str
    negative_prompt: str
    view_dependent_prompt: bool
    identity_embedding: _common_pb2.Tensor
    identity_scale: float
    identity_adapter: str
    expression: str
    expression_scale: float
    controls: _containers.RepeatedCompositeFieldContainer[ControlInput]
    loras: _containers.RepeatedCompositeFieldContainer[LoraSelection]
    text_cache_key: str
    identity_cache_key: str
    def __init__(self, backbone: _Optional[str] = ..., prompt: _Optional[str] = ..., negative_prompt: _Optional[str] = ..., view_dependent_prompt: _Optional[bool] = ..., identity_embedding: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., identity_scale: _Optional[float] = ..., identity_adapter: _Optional[str] = ..., expression: _Optional[str] = ..., expression_scale: _Optional[float] = ..., controls: _Optional[_Iterable[_Union[ControlInput, _Mapping]]] = ..., loras: _Optional[_Iterable[_Union[LoraSelection, _Mapping]]] = ..., text_cache_key: _Optional[str] = ..., identity_cache_key: _Optional[str] = ...) -> None: ...

class TimestepSchedule(_message.Message):
    __slots__ = ("t_min", "t_max", "t_min_end", "t_max_end", "training_fraction", "sampling", "shared", "t")
    class Sampling(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        SAMPLING_UNSPECIFIED: _ClassVar[TimestepSchedule.Sampling]
        UNIFORM: _ClassVar[TimestepSchedule.Sampling]
        LINEAR_DECAY: _ClassVar[TimestepSchedule.Sampling]
    SAMPLING_UNSPECIFIED: TimestepSchedule.Sampling
    UNIFORM: TimestepSchedule.Sampling
    LINEAR_DECAY: TimestepSchedule.Sampling
    T_MIN_FIELD_NUMBER: _ClassVar[int]
    T_MAX_FIELD_NUMBER: _ClassVar[int]
    T_MIN_END_FIELD_NUMBER: _ClassVar[int]
    T_MAX_END_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FRACTION_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    T_FIELD_NUMBER: _ClassVar[int]
    t_min: float
    t_max: float
    t_min_end: float
    t_max_end: float
    training_fraction: float
    sampling: TimestepSchedule.Sampling
    shared: bool
    t: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, t_min: _Optional[float] = ..., t_max: _Optional[float] = ..., t_min_end: _Optional[float] = ..., t_max_end: _Optional[float] = ..., training_fraction: _Optional[float] = ..., sampling: _Optional[_Union[TimestepSchedule.Sampling, str]] = ..., shared: _Optional[bool] = ..., t: _Optional[_Iterable[float]] = ...) -> None: ...

class ReferenceView(_message.Message):
    __slots__ = ("image", "camera")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.ImageInput
    camera: _common_pb2.Camera
    def __init__(self, image: _Optional[_Union[_common_pb2.ImageInput, _Mapping]] = ..., camera: _Optional[_Union[_common_pb2.Camera, _Mapping]] = ...) -> None: ...

class DistillRequest(_message.Message):
    __slots__ = ("images", "cameras", "conditions", "variant", "reference", "guidance_scale", "timesteps", "weighting", "noise", "seed", "resolution", "grad_clip", "grad_dtype", "return_noise", "return_denoised", "queue", "background")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    TIMESTEPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTING_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    GRAD_CLIP_FIELD_NUMBER: _ClassVar[int]
    GRAD_DTYPE_FIELD_NUMBER: _ClassVar[int]
    RETURN_NOISE_FIELD_NUMBER: _ClassVar[int]
    RETURN_DENOISED_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    images: _common_pb2.Tensor
    cameras: _containers.RepeatedCompositeFieldContainer[_common_pb2.Camera]
    conditions: Conditions
    variant: DistillVariant
    reference: ReferenceView
    guidance_scale: float
    timesteps: TimestepSchedule
    weighting: SdsWeighting
    noise: _common_pb2.Tensor
    seed: int
    resolution: int
    grad_clip: float
    grad_dtype: _common_pb2.Tensor.DType
    return_noise: bool
    return_denoised: bool
    queue: QueueOptions
    background: _common_pb2.Tensor
    def __init__(self, images: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., cameras: _Optional[_Iterable[_Union[_common_pb2.Camera, _Mapping]]] = ..., conditions: _Optional[_Union[Conditions, _Mapping]] = ..., variant: _Optional[_Union[DistillVariant, str]] = ..., reference: _Optional[_Union[ReferenceView, _Mapping]] = ..., guidance_scale: _Optional[float] = ..., timesteps: _Optional[_Union[TimestepSchedule, _Mapping]] = ..., weighting: _Optional[_Union[SdsWeighting, str]] = ..., noise: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., seed: _Optional[int] = ..., resolution: _Optional[int] = ..., grad_clip: _Optional[float] = ..., grad_dtype: _Optional[_Union[_common_pb2.Tensor.DType, str]] = ..., return_noise: _Optional[bool] = ..., return_denoised: _Optional[bool] = ..., queue: _Optional[_Union[QueueOptions, _Mapping]] = ..., background: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class DistillResponse(_message.Message):
    __slots__ = ("grad", "diagnostics", "noise", "denoised", "seed", "backbone")
    class ImageDiagnostics(_message.Message):
        __slots__ = ("timestep", "t", "weight", "loss", "grad_norm", "latent_grad_norm")
        TIMESTEP_FIELD_NUMBER: _ClassVar[int]
        T_FIELD_NUMBER: _ClassVar[int]
        WEIGHT_FIELD_NUMBER: _ClassVar[int]
        LOSS_FIELD_NUMBER: _ClassVar[int]
        GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
        LATENT_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
        timestep: int
        t: float
        weight: float
        loss: float
        grad_norm: float
        latent_grad_norm: float
        def __init__(self, timestep: _Optional[int] = ..., t: _Optional[float] = ..., weight: _Optional[float] = ..., loss: _Optional[float] = ..., grad_norm: _Optional[float] = ..., latent_grad_norm: _Optional[float] = ...) -> None: ...
    GRAD_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTICS_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    DENOISED_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BACKBONE_FIELD_NUMBER: _ClassVar[int]
    grad: _common_pb2.Tensor
    diagnostics: _containers.RepeatedCompositeFieldContainer[DistillResponse.ImageDiagnostics]
    noise: _common_pb2.Tensor
    denoised: _common_pb2.Tensor
    seed: int
    backbone: str
    def __init__(self, grad: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., diagnostics: _Optional[_Iterable[_Union[DistillResponse.ImageDiagnostics, _Mapping]]] = ..., noise: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., denoised: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., seed: _Optional[int] = ..., backbone: _Optional[str] = ...) -> None: ...

class DenoiseRequest(_message.Message):
    __slots__ = ("images", "cameras", "conditions", "strength", "num_steps", "guidance_scale", "scheduler", "noise", "seed", "resolution", "queue", "background")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    NUM_STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    NOISE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    images: _common_pb2.Tensor
    cameras: _containers.RepeatedCompositeFieldContainer[_common_pb2.Camera]
    conditions: Conditions
    strength: float
    num_steps: int
    guidance_scale: float
    scheduler: str
    noise: _common_pb2.Tensor
    seed: int
    resolution: int
    queue: QueueOptions
    background: _common_pb2.Tensor
    def __init__(self, images: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., cameras: _Optional[_Iterable[_Union[_common_pb2.Camera, _Mapping]]] = ..., conditions: _Optional[_Union[Conditions, _Mapping]] = ..., strength: _Optional[float] = ..., num_steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., scheduler: _Optional[str] = ..., noise: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., seed: _Optional[int] = ..., resolution: _Optional[int] = ..., queue: _Optional[_Union[QueueOptions, _Mapping]] = ..., background: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class DenoiseResponse(_message.Message):
    __slots__ = ("images", "start_timestep", "seed")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    START_TIMESTEP_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    images: _common_pb2.Tensor
    start_timestep: int
    seed: int
    def __init__(self, images: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., start_timestep: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class InpaintRequest(_message.Message):
    __slots__ = ("images", "mask", "cameras", "conditions", "strength", "num_steps", "guidance_scale", "scheduler", "seed", "resolution", "queue", "background")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    STRENGTH_FIELD_NUMBER: _ClassVar[int]
    NUM_STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    BACKGROUND_FIELD_NUMBER: _ClassVar[int]
    images: _common_pb2.Tensor
    mask: _common_pb2.Tensor
    cameras: _containers.RepeatedCompositeFieldContainer[_common_pb2.Camera]
    conditions: Conditions
    strength: float
    num_steps: int
    guidance_scale: float
    scheduler: str
    seed: int
    resolution: int
    queue: QueueOptions
    background: _common_pb2.Tensor
    def __init__(self, images: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., mask: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., cameras: _Optional[_Iterable[_Union[_common_pb2.Camera, _Mapping]]] = ..., conditions: _Optional[_Union[Conditions, _Mapping]] = ..., strength: _Optional[float] = ..., num_steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., scheduler: _Optional[str] = ..., seed: _Optional[int] = ..., resolution: _Optional[int] = ..., queue: _Optional[_Union[QueueOptions, _Mapping]] = ..., background: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class InpaintResponse(_message.Message):
    __slots__ = ("images", "seed")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    images: _common_pb2.Tensor
    seed: int
    def __init__(self, images: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., seed: _Optional[int] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("conditions", "num_images", "width", "height", "num_steps", "guidance_scale", "scheduler", "seed", "encode_png", "queue", "cameras")
    CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    NUM_IMAGES_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    NUM_STEPS_FIELD_NUMBER: _ClassVar[int]
    GUIDANCE_SCALE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULER_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ENCODE_PNG_FIELD_NUMBER: _ClassVar[int]
    QUEUE_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    conditions: Conditions
    num_images: int
    width: int
    height: int
    num_steps: int
    guidance_scale: float
    scheduler: str
    seed: int
    encode_png: bool
    queue: QueueOptions
    cameras: _containers.RepeatedCompositeFieldContainer[_common_pb2.Camera]
    def __init__(self, conditions: _Optional[_Union[Conditions, _Mapping]] = ..., num_images: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., num_steps: _Optional[int] = ..., guidance_scale: _Optional[float] = ..., scheduler: _Optional[str] = ..., seed: _Optional[int] = ..., encode_png: _Optional[bool] = ..., queue: _Optional[_Union[QueueOptions, _Mapping]] = ..., cameras: _Optional[_Iterable[_Union[_common_pb2.Camera, _Mapping]]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("images", "encoded", "output_kind", "seed", "depth_convention")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KIND_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DEPTH_CONVENTION_FIELD_NUMBER: _ClassVar[int]
    images: _common_pb2.Tensor
    encoded: _containers.RepeatedCompositeFieldContainer[_common_pb2.EncodedImage]
    output_kind: GuidanceOutputKind
    seed: int
    depth_convention: str
    def __init__(self, images: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., encoded: _Optional[_Iterable[_Union[_common_pb2.EncodedImage, _Mapping]]] = ..., output_kind: _Optional[_Union[GuidanceOutputKind, str]] = ..., seed: _Optional[int] = ..., depth_convention: _Optional[str] = ...) -> None: ...

class CaptionRequest(_message.Message):
    __slots__ = ("captioner", "image", "prompt", "max_new_tokens")
    CAPTIONER_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    captioner: str
    image: _common_pb2.ImageInput
    prompt: str
    max_new_tokens: int
    def __init__(self, captioner: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.ImageInput, _Mapping]] = ..., prompt: _Optional[str] = ..., max_new_tokens: _Optional[int] = ...) -> None: ...

class CaptionResponse(_message.Message):
    __slots__ = ("caption", "captioner", "model")
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    CAPTIONER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    caption: str
    captioner: str
    model: _common_pb2.ModelInfo
    def __init__(self, caption: _Optional[str] = ..., captioner: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...

class GuidanceDescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GuidanceDescribeResponse(_message.Message):
    __slots__ = ("backbones", "max_batch_images", "max_queue_delay_ms", "max_queue_depth", "queue_depth", "max_image_pixels", "max_message_bytes", "cache_ttl_s", "device", "captioners")
    class Lora(_message.Message):
        __slots__ = ("name", "output_kind", "model")
        NAME_FIELD_NUMBER: _ClassVar[int]
        OUTPUT_KIND_FIELD_NUMBER: _ClassVar[int]
        MODEL_FIELD_NUMBER: _ClassVar[int]
        name: str
        output_kind: GuidanceOutputKind
        model: _common_pb2.ModelInfo
        def __init__(self, name: _Optional[str] = ..., output_kind: _Optional[_Union[GuidanceOutputKind, str]] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...
    class Backbone(_message.Message):
        __slots__ = ("name", "is_default", "backend", "family", "models", "output_kind", "native_resolution", "latent_scale_factor", "latent_channels", "num_train_timesteps", "prediction_type", "variants", "denoise", "inpaint", "generate", "controls", "control_kinds", "identity_adapters", "identity_embedding_dim", "expression_adapter", "loras", "schedulers", "min_frames", "max_frames", "control_kind_of", "depth_convention")
        NAME_FIELD_NUMBER: _ClassVar[int]
        IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
        BACKEND_FIELD_NUMBER: _ClassVar[int]
        FAMILY_FIELD_NUMBER: _ClassVar[int]
        MODELS_FIELD_NUMBER: _ClassVar[int]
        OUTPUT_KIND_FIELD_NUMBER: _ClassVar[int]
        NATIVE_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
        LATENT_SCALE_FACTOR_FIELD_NUMBER: _ClassVar[int]
        LATENT_CHANNELS_FIELD_NUMBER: _ClassVar[int]
        NUM_TRAIN_TIMESTEPS_FIELD_NUMBER: _ClassVar[int]
        PREDICTION_TYPE_FIELD_NUMBER: _ClassVar[int]
        VARIANTS_FIELD_NUMBER: _ClassVar[int]
        DENOISE_FIELD_NUMBER: _ClassVar[int]
        INPAINT_FIELD_NUMBER: _ClassVar[int]
        GENERATE_FIELD_NUMBER: _ClassVar[int]
        CONTROLS_FIELD_NUMBER: _ClassVar[int]
        CONTROL_KINDS_FIELD_NUMBER: _ClassVar[int]
        IDENTITY_ADAPTERS_FIELD_NUMBER: _ClassVar[int]
        IDENTITY_EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
        EXPRESSION_ADAPTER_FIELD_NUMBER: _ClassVar[int]
        LORAS_FIELD_NUMBER: _ClassVar[int]
        SCHEDULERS_FIELD_NUMBER: _ClassVar[int]
        MIN_FRAMES_FIELD_NUMBER: _ClassVar[int]
        MAX_FRAMES_FIELD_NUMBER: _ClassVar[int]
        CONTROL_KIND_OF_FIELD_NUMBER: _ClassVar[int]
        DEPTH_CONVENTION_FIELD_NUMBER: _ClassVar[int]
        name: str
        is_default: bool
        backend: str
        family: str
        models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelInfo]
        output_kind: GuidanceOutputKind
        native_resolution: int
        latent_scale_factor: int
        latent_channels: int
        num_train_timesteps: int
        prediction_type: str
        variants: _containers.RepeatedScalarFieldContainer[DistillVariant]
        denoise: bool
        inpaint: bool
        generate: bool
        controls: _containers.RepeatedScalarFieldContainer[str]
        control_kinds: _containers.RepeatedScalarFieldContainer[ControlInput.Kind]
        identity_adapters: _containers.RepeatedScalarFieldContainer[str]
        identity_embedding_dim: int
        expression_adapter: bool
        loras: _containers.RepeatedCompositeFieldContainer[GuidanceDescribeResponse.Lora]
        schedulers: _containers.RepeatedScalarFieldContainer[str]
        min_frames: int
        max_frames: int
        control_kind_of: _containers.RepeatedScalarFieldContainer[ControlInput.Kind]
        depth_convention: str
        def __init__(self, name: _Optional[str] = ..., is_default: _Optional[bool] = ..., backend: _Optional[str] = ..., family: _Optional[str] = ..., models: _Optional[_Iterable[_Union[_common_pb2.ModelInfo, _Mapping]]] = ..., output_kind: _Optional[_Union[GuidanceOutputKind, str]] = ..., native_resolution: _Optional[int] = ..., latent_scale_factor: _Optional[int] = ..., latent_channels: _Optional[int] = ..., num_train_timesteps: _Optional[int] = ..., prediction_type: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[DistillVariant, str]]] = ..., denoise: _Optional[bool] = ..., inpaint: _Optional[bool] = ..., generate: _Optional[bool] = ..., controls: _Optional[_Iterable[str]] = ..., control_kinds: _Optional[_Iterable[_Union[ControlInput.Kind, str]]] = ..., identity_adapters: _Optional[_Iterable[str]] = ..., identity_embedding_dim: _Optional[int] = ..., expression_adapter: _Optional[bool] = ..., loras: _Optional[_Iterable[_Union[GuidanceDescribeResponse.Lora, _Mapping]]] = ..., schedulers: _Optional[_Iterable[str]] = ..., min_frames: _Optional[int] = ..., max_frames: _Optional[int] = ..., control_kind_of: _Optional[_Iterable[_Union[ControlInput.Kind, str]]] = ..., depth_convention: _Optional[str] = ...) -> None: ...
    class Captioner(_message.Message):
        __slots__ = ("name", "is_default", "kind", "model")
        NAME_FIELD_NUMBER: _ClassVar[int]
        IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
        KIND_FIELD_NUMBER: _ClassVar[int]
        MODEL_FIELD_NUMBER: _ClassVar[int]
        name: str
        is_default: bool
        kind: str
        model: _common_pb2.ModelInfo
        def __init__(self, name: _Optional[str] = ..., is_default: _Optional[bool] = ..., kind: _Optional[str] = ..., model: _Optional[_Union[_common_pb2.ModelInfo, _Mapping]] = ...) -> None: ...
    BACKBONES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_IMAGES_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CACHE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    CAPTIONERS_FIELD_NUMBER: _ClassVar[int]
    backbones: _containers.RepeatedCompositeFieldContainer[GuidanceDescribeResponse.Backbone]
    max_batch_images: int
    max_queue_delay_ms: int
    max_queue_depth: int
    queue_depth: int
    max_image_pixels: int
    max_message_bytes: int
    cache_ttl_s: int
    device: str
    captioners: _containers.RepeatedCompositeFieldContainer[GuidanceDescribeResponse.Captioner]
    def __init__(self, backbones: _Optional[_Iterable[_Union[GuidanceDescribeResponse.Backbone, _Mapping]]] = ..., max_batch_images: _Optional[int] = ..., max_queue_delay_ms: _Optional[int] = ..., max_queue_depth: _Optional[int] = ..., queue_depth: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., cache_ttl_s: _Optional[int] = ..., device: _Optional[str] = ..., captioners: _Optional[_Iterable[_Union[GuidanceDescribeResponse.Captioner, _Mapping]]] = ...) -> None: ...
