import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from headforge.v1 import common_pb2 as _common_pb2
from headforge.v1 import face_pb2 as _face_pb2
from headforge.v1 import render_pb2 as _render_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GeneratorKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GENERATOR_KIND_UNSPECIFIED: _ClassVar[GeneratorKind]
    GENERATOR_KIND_TRIPLANE: _ClassVar[GeneratorKind]
    GENERATOR_KIND_TRIGRID: _ClassVar[GeneratorKind]
    GENERATOR_KIND_PYRAMID_TRIGRID: _ClassVar[GeneratorKind]
GENERATOR_KIND_UNSPECIFIED: GeneratorKind
GENERATOR_KIND_TRIPLANE: GeneratorKind
GENERATOR_KIND_TRIGRID: GeneratorKind
GENERATOR_KIND_PYRAMID_TRIGRID: GeneratorKind

class Eg3dLabel(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class InversionCamera(_message.Message):
    __slots__ = ("camera", "generator_camera", "eg3d_label")
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_CAMERA_FIELD_NUMBER: _ClassVar[int]
    EG3D_LABEL_FIELD_NUMBER: _ClassVar[int]
    camera: _common_pb2.Camera
    generator_camera: _common_pb2.Camera
    eg3d_label: Eg3dLabel
    def __init__(self, camera: _Optional[_Union[_common_pb2.Camera, _Mapping]] = ..., generator_camera: _Optional[_Union[_common_pb2.Camera, _Mapping]] = ..., eg3d_label: _Optional[_Union[Eg3dLabel, _Mapping]] = ...) -> None: ...

class InversionSource(_message.Message):
    __slots__ = ("session_id", "latent")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    latent: GanLatent
    def __init__(self, session_id: _Optional[str] = ..., latent: _Optional[_Union[GanLatent, _Mapping]] = ...) -> None: ...

class GanLatent(_message.Message):
    __slots__ = ("generator", "w", "conditioning_camera", "z_seed", "truncation_psi")
    GENERATOR_FIELD_NUMBER: _ClassVar[int]
    W_FIELD_NUMBER: _ClassVar[int]
    CONDITIONING_CAMERA_FIELD_NUMBER: _ClassVar[int]
    Z_SEED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_PSI_FIELD_NUMBER: _ClassVar[int]
    generator: str
    w: _common_pb2.Tensor
    conditioning_camera: InversionCamera
    z_seed: int
    truncation_psi: float
    def __init__(self, generator: _Optional[str] = ..., w: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., conditioning_camera: _Optional[_Union[InversionCamera, _Mapping]] = ..., z_seed: _Optional[int] = ..., truncation_psi: _Optional[float] = ...) -> None: ...

class InvertOptions(_message.Message):
    __slots__ = ("latent_space", "steps", "lr", "lr_rampup", "lr_rampdown", "w_noise", "w_noise_ramp", "noise_regularization", "l2_weight", "lpips_weight", "lpips_resolution", "init_latent", "pti", "pti_steps", "pti_lr", "pti_l2_weight", "pti_lpips_weight", "seed", "progress_every", "preview_size", "optimize_camera", "camera_lr")
    class LatentSpace(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        LATENT_SPACE_UNSPECIFIED: _ClassVar[InvertOptions.LatentSpace]
        W: _ClassVar[InvertOptions.LatentSpace]
        W_PLUS: _ClassVar[InvertOptions.LatentSpace]
    LATENT_SPACE_UNSPECIFIED: InvertOptions.LatentSpace
    W: InvertOptions.LatentSpace
    W_PLUS: InvertOptions.LatentSpace
    LATENT_SPACE_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    LR_RAMPUP_FIELD_NUMBER: _ClassVar[int]
    LR_RAMPDOWN_FIELD_NUMBER: _ClassVar[int]
    W_NOISE_FIELD_NUMBER: _ClassVar[int]
    W_NOISE_RAMP_FIELD_NUMBER: _ClassVar[int]
    NOISE_REGULARIZATION_FIELD_NUMBER: _ClassVar[int]
    L2_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LPIPS_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    LPIPS_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    INIT_LATENT_FIELD_NUMBER: _ClassVar[int]
    PTI_FIELD_NUMBER: _ClassVar[int]
    PTI_STEPS_FIELD_NUMBER: _ClassVar[int]
    PTI_LR_FIELD_NUMBER: _ClassVar[int]
    PTI_L2_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PTI_LPIPS_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_EVERY_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_SIZE_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZE_CAMERA_FIELD_NUMBER: _ClassVar[int]
    CAMERA_LR_FIELD_NUMBER: _ClassVar[int]
    latent_space: InvertOptions.LatentSpace
    steps: int
    lr: float
    lr_rampup: float
    lr_rampdown: float
    w_noise: float
    w_noise_ramp: float
    noise_regularization: float
    l2_weight: float
    lpips_weight: float
    lpips_resolution: int
    init_latent: _common_pb2.Tensor
    pti: bool
    pti_steps: int
    pti_lr: float
    pti_l2_weight: float
    pti_lpips_weight: float
    seed: int
    progress_every: int
    preview_size: int
    optimize_camera: bool
    camera_lr: float
    def __init__(self, latent_space: _Optional[_Union[InvertOptions.LatentSpace, str]] = ..., steps: _Optional[int] = ..., lr: _Optional[float] = ..., lr_rampup: _Optional[float] = ..., lr_rampdown: _Optional[float] = ..., w_noise: _Optional[float] = ..., w_noise_ramp: _Optional[float] = ..., noise_regularization: _Optional[float] = ..., l2_weight: _Optional[float] = ..., lpips_weight: _Optional[float] = ..., lpips_resolution: _Optional[int] = ..., init_latent: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., pti: _Optional[bool] = ..., pti_steps: _Optional[int] = ..., pti_lr: _Optional[float] = ..., pti_l2_weight: _Optional[float] = ..., pti_lpips_weight: _Optional[float] = ..., seed: _Optional[int] = ..., progress_every: _Optional[int] = ..., preview_size: _Optional[int] = ..., optimize_camera: _Optional[bool] = ..., camera_lr: _Optional[float] = ...) -> None: ...

class InvertRequest(_message.Message):
    __slots__ = ("generator", "image", "camera", "conditioning_camera", "mask", "options")
    GENERATOR_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    CONDITIONING_CAMERA_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    generator: str
    image: _common_pb2.ImageInput
    camera: InversionCamera
    conditioning_camera: InversionCamera
    mask: _common_pb2.ImageInput
    options: InvertOptions
    def __init__(self, generator: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.ImageInput, _Mapping]] = ..., camera: _Optional[_Union[InversionCamera, _Mapping]] = ..., conditioning_camera: _Optional[_Union[InversionCamera, _Mapping]] = ..., mask: _Optional[_Union[_common_pb2.ImageInput, _Mapping]] = ..., options: _Optional[_Union[InvertOptions, _Mapping]] = ...) -> None: ...

class ReconstructionMetrics(_message.Message):
    __slots__ = ("mse", "psnr", "lpips")
    MSE_FIELD_NUMBER: _ClassVar[int]
    PSNR_FIELD_NUMBER: _ClassVar[int]
    LPIPS_FIELD_NUMBER: _ClassVar[int]
    mse: float
    psnr: float
    lpips: float
    def __init__(self, mse: _Optional[float] = ..., psnr: _Optional[float] = ..., lpips: _Optional[float] = ...) -> None: ...

class InvertResult(_message.Message):
    __slots__ = ("session_id", "expires_at", "latent", "latent_metrics", "pti_metrics", "reconstruction", "generator", "session_bytes", "camera", "camera_offsets")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    LATENT_METRICS_FIELD_NUMBER: _ClassVar[int]
    PTI_METRICS_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    GENERATOR_FIELD_NUMBER: _ClassVar[int]
    SESSION_BYTES_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    CAMERA_OFFSETS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    expires_at: _timestamp_pb2.Timestamp
    latent: _common_pb2.Tensor
    latent_metrics: ReconstructionMetrics
    pti_metrics: ReconstructionMetrics
    reconstruction: _common_pb2.EncodedImage
    generator: str
    session_bytes: int
    camera: _common_pb2.Camera
    camera_offsets: CameraOffsets
    def __init__(self, session_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., latent: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., latent_metrics: _Optional[_Union[ReconstructionMetrics, _Mapping]] = ..., pti_metrics: _Optional[_Union[ReconstructionMetrics, _Mapping]] = ..., reconstruction: _Optional[_Union[_common_pb2.EncodedImage, _Mapping]] = ..., generator: _Optional[str] = ..., session_bytes: _Optional[int] = ..., camera: _Optional[_Union[_common_pb2.Camera, _Mapping]] = ..., camera_offsets: _Optional[_Union[CameraOffsets, _Mapping]] = ...) -> None: ...

class CameraOffsets(_message.Message):
    __slots__ = ("yaw_deg", "pitch_deg", "roll_deg")
    YAW_DEG_FIELD_NUMBER: _ClassVar[int]
    PITCH_DEG_FIELD_NUMBER: _ClassVar[int]
    ROLL_DEG_FIELD_NUMBER: _ClassVar[int]
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    def __init__(self, yaw_deg: _Optional[float] = ..., pitch_deg: _Optional[float] = ..., roll_deg: _Optional[float] = ...) -> None: ...

class InvertEvent(_message.Message):
    __slots__ = ("progress", "preview", "result")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    progress: _common_pb2.Progress
    preview: _common_pb2.EncodedImage
    result: InvertResult
    def __init__(self, progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., preview: _Optional[_Union[_common_pb2.EncodedImage, _Mapping]] = ..., result: _Optional[_Union[InvertResult, _Mapping]] = ...) -> None: ...

class InversionRenderRequest(_message.Message):
    __slots__ = ("source", "cameras", "outputs", "neural_resolution", "conditioning_camera", "dtype")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    NEURAL_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    CONDITIONING_CAMERA_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    source: InversionSource
    cameras: _containers.RepeatedCompositeFieldContainer[InversionCamera]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    neural_resolution: int
    conditioning_camera: InversionCamera
    dtype: _common_pb2.Tensor.DType
    def __init__(self, source: _Optional[_Union[InversionSource, _Mapping]] = ..., cameras: _Optional[_Iterable[_Union[InversionCamera, _Mapping]]] = ..., outputs: _Optional[_Iterable[str]] = ..., neural_resolution: _Optional[int] = ..., conditioning_camera: _Optional[_Union[InversionCamera, _Mapping]] = ..., dtype: _Optional[_Union[_common_pb2.Tensor.DType, str]] = ...) -> None: ...

class InversionRenderResponse(_message.Message):
    __slots__ = ("outputs",)
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.MessageMap[str, _common_pb2.Tensor]
    def __init__(self, outputs: _Optional[_Mapping[str, _common_pb2.Tensor]] = ...) -> None: ...

class ExtractMeshRequest(_message.Message):
    __slots__ = ("source", "resolution", "density_threshold", "largest_component_only", "max_faces", "vertex_colors", "format")
    class Format(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        FORMAT_UNSPECIFIED: _ClassVar[ExtractMeshRequest.Format]
        TENSORS: _ClassVar[ExtractMeshRequest.Format]
        GLB: _ClassVar[ExtractMeshRequest.Format]
        PLY: _ClassVar[ExtractMeshRequest.Format]
    FORMAT_UNSPECIFIED: ExtractMeshRequest.Format
    TENSORS: ExtractMeshRequest.Format
    GLB: ExtractMeshRequest.Format
    PLY: ExtractMeshRequest.Format
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    DENSITY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    LARGEST_COMPONENT_ONLY_FIELD_NUMBER: _ClassVar[int]
    MAX_FACES_FIELD_NUMBER: _ClassVar[int]
    VERTEX_COLORS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    source: InversionSource
    resolution: int
    density_threshold: float
    largest_component_only: bool
    max_faces: int
    vertex_colors: bool
    format: ExtractMeshRequest.Format
    def __init__(self, source: _Optional[_Union[InversionSource, _Mapping]] = ..., resolution: _Optional[int] = ..., density_threshold: _Optional[float] = ..., largest_component_only: _Optional[bool] = ..., max_faces: _Optional[int] = ..., vertex_colors: _Optional[bool] = ..., format: _Optional[_Union[ExtractMeshRequest.Format, str]] = ...) -> None: ...

class ExtractMeshResponse(_message.Message):
    __slots__ = ("vertices", "faces", "vertex_normals", "vertex_colors", "data", "num_vertices", "num_faces")
    VERTICES_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    VERTEX_NORMALS_FIELD_NUMBER: _ClassVar[int]
    VERTEX_COLORS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    NUM_VERTICES_FIELD_NUMBER: _ClassVar[int]
    NUM_FACES_FIELD_NUMBER: _ClassVar[int]
    vertices: _common_pb2.Tensor
    faces: _common_pb2.Tensor
    vertex_normals: _common_pb2.Tensor
    vertex_colors: _common_pb2.Tensor
    data: bytes
    num_vertices: int
    num_faces: int
    def __init__(self, vertices: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., faces: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., vertex_normals: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., vertex_colors: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., data: _Optional[bytes] = ..., num_vertices: _Optional[int] = ..., num_faces: _Optional[int] = ...) -> None: ...

class ExportFieldRequest(_message.Message):
    __slots__ = ("source", "dtype", "chunk_bytes")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    source: InversionSource
    dtype: _common_pb2.Tensor.DType
    chunk_bytes: int
    def __init__(self, source: _Optional[_Union[InversionSource, _Mapping]] = ..., dtype: _Optional[_Union[_common_pb2.Tensor.DType, str]] = ..., chunk_bytes: _Optional[int] = ...) -> None: ...

class CloseInversionSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CloseInversionSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InversionDescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class InversionDescribeResponse(_message.Message):
    __slots__ = ("generators", "session_idle_ttl_s", "max_sessions_per_tenant", "max_tenant_bytes", "max_session_bytes", "max_message_bytes", "device")
    class Generator(_message.Message):
        __slots__ = ("name", "is_default", "kind", "models", "weights_format", "available", "unavailable_reason", "output_resolution", "neural_resolution", "super_resolution", "plane_resolution", "channels", "depth", "pyramid_levels", "w_dim", "num_ws", "crop_style", "azimuth_min", "azimuth_max", "elevation_min", "elevation_max", "world_units_per_generator_unit", "box_size", "default_density_threshold")
        NAME_FIELD_NUMBER: _ClassVar[int]
        IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
        KIND_FIELD_NUMBER: _ClassVar[int]
        MODELS_FIELD_NUMBER: _ClassVar[int]
        WEIGHTS_FORMAT_FIELD_NUMBER: _ClassVar[int]
        AVAILABLE_FIELD_NUMBER: _ClassVar[int]
        UNAVAILABLE_REASON_FIELD_NUMBER: _ClassVar[int]
        OUTPUT_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
        NEURAL_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
        SUPER_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
        PLANE_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
        CHANNELS_FIELD_NUMBER: _ClassVar[int]
        DEPTH_FIELD_NUMBER: _ClassVar[int]
        PYRAMID_LEVELS_FIELD_NUMBER: _ClassVar[int]
        W_DIM_FIELD_NUMBER: _ClassVar[int]
        NUM_WS_FIELD_NUMBER: _ClassVar[int]
        CROP_STYLE_FIELD_NUMBER: _ClassVar[int]
        AZIMUTH_MIN_FIELD_NUMBER: _ClassVar[int]
        AZIMUTH_MAX_FIELD_NUMBER: _ClassVar[int]
        ELEVATION_MIN_FIELD_NUMBER: _ClassVar[int]
        ELEVATION_MAX_FIELD_NUMBER: _ClassVar[int]
        WORLD_UNITS_PER_GENERATOR_UNIT_FIELD_NUMBER: _ClassVar[int]
        BOX_SIZE_FIELD_NUMBER: _ClassVar[int]
        DEFAULT_DENSITY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
        name: str
        is_default: bool
        kind: GeneratorKind
        models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelInfo]
        weights_format: str
        available: bool
        unavailable_reason: str
        output_resolution: int
        neural_resolution: int
        super_resolution: bool
        plane_resolution: int
        channels: int
        depth: int
        pyramid_levels: _containers.RepeatedScalarFieldContainer[int]
        w_dim: int
        num_ws: int
        crop_style: _face_pb2.CropStyle
        azimuth_min: float
        azimuth_max: float
        elevation_min: float
        elevation_max: float
        world_units_per_generator_unit: float
        box_size: float
        default_density_threshold: float
        def __init__(self, name: _Optional[str] = ..., is_default: _Optional[bool] = ..., kind: _Optional[_Union[GeneratorKind, str]] = ..., models: _Optional[_Iterable[_Union[_common_pb2.ModelInfo, _Mapping]]] = ..., weights_format: _Optional[str] = ..., available: _Optional[bool] = ..., unavailable_reason: _Optional[str] = ..., output_resolution: _Optional[int] = ..., neural_resolution: _Optional[int] = ..., super_resolution: _Optional[bool] = ..., plane_resolution: _Optional[int] = ..., channels: _Optional[int] = ..., depth: _Optional[int] = ..., pyramid_levels: _Optional[_Iterable[int]] = ..., w_dim: _Optional[int] = ..., num_ws: _Optional[int] = ..., crop_style: _Optional[_Union[_face_pb2.CropStyle, str]] = ..., azimuth_min: _Optional[float] = ..., azimuth_max: _Optional[float] = ..., elevation_min: _Optional[float] = ..., elevation_max: _Optional[float] = ..., world_units_per_generator_unit: _Optional[float] = ..., box_size: _Optional[float] = ..., default_density_threshold: _Optional[float] = ...) -> None: ...
    GENERATORS_FIELD_NUMBER: _ClassVar[int]
    SESSION_IDLE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_PER_TENANT_FIELD_NUMBER: _ClassVar[int]
    MAX_TENANT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSION_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    generators: _containers.RepeatedCompositeFieldContainer[InversionDescribeResponse.Generator]
    session_idle_ttl_s: int
    max_sessions_per_tenant: int
    max_tenant_bytes: int
    max_session_bytes: int
    max_message_bytes: int
    device: str
    def __init__(self, generators: _Optional[_Iterable[_Union[InversionDescribeResponse.Generator, _Mapping]]] = ..., session_idle_ttl_s: _Optional[int] = ..., max_sessions_per_tenant: _Optional[int] = ..., max_tenant_bytes: _Optional[int] = ..., max_session_bytes: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., device: _Optional[str] = ...) -> None: ...
