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

class SceneKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCENE_KIND_UNSPECIFIED: _ClassVar[SceneKind]
    SCENE_KIND_GAUSSIANS: _ClassVar[SceneKind]
    SCENE_KIND_MESH: _ClassVar[SceneKind]
    SCENE_KIND_DMTET: _ClassVar[SceneKind]
    SCENE_KIND_TRIPLANE: _ClassVar[SceneKind]
    SCENE_KIND_TRIGRID: _ClassVar[SceneKind]
    SCENE_KIND_PYRAMID_TRIGRID: _ClassVar[SceneKind]
    SCENE_KIND_DMTET_EXPRESSION: _ClassVar[SceneKind]

class AssetFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASSET_FORMAT_UNSPECIFIED: _ClassVar[AssetFormat]
    ASSET_FORMAT_GLB: _ClassVar[AssetFormat]
    ASSET_FORMAT_OBJ_ZIP: _ClassVar[AssetFormat]
    ASSET_FORMAT_PLY: _ClassVar[AssetFormat]
    ASSET_FORMAT_NPZ: _ClassVar[AssetFormat]
    ASSET_FORMAT_CHECKPOINT: _ClassVar[AssetFormat]
SCENE_KIND_UNSPECIFIED: SceneKind
SCENE_KIND_GAUSSIANS: SceneKind
SCENE_KIND_MESH: SceneKind
SCENE_KIND_DMTET: SceneKind
SCENE_KIND_TRIPLANE: SceneKind
SCENE_KIND_TRIGRID: SceneKind
SCENE_KIND_PYRAMID_TRIGRID: SceneKind
SCENE_KIND_DMTET_EXPRESSION: SceneKind
ASSET_FORMAT_UNSPECIFIED: AssetFormat
ASSET_FORMAT_GLB: AssetFormat
ASSET_FORMAT_OBJ_ZIP: AssetFormat
ASSET_FORMAT_PLY: AssetFormat
ASSET_FORMAT_NPZ: AssetFormat
ASSET_FORMAT_CHECKPOINT: AssetFormat

class AssetChunk(_message.Message):
    __slots__ = ("offset", "data", "total_size", "sha256", "format")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    total_size: int
    sha256: str
    format: AssetFormat
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ..., format: _Optional[_Union[AssetFormat, str]] = ...) -> None: ...

class AssetSource(_message.Message):
    __slots__ = ("data", "asset_id", "format")
    DATA_FIELD_NUMBER: _ClassVar[int]
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    asset_id: str
    format: AssetFormat
    def __init__(self, data: _Optional[bytes] = ..., asset_id: _Optional[str] = ..., format: _Optional[_Union[AssetFormat, str]] = ...) -> None: ...

class LrSchedule(_message.Message):
    __slots__ = ("start_step", "start_value", "end_value", "end_step", "interpolation")
    class Interpolation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        INTERPOLATION_UNSPECIFIED: _ClassVar[LrSchedule.Interpolation]
        LINEAR: _ClassVar[LrSchedule.Interpolation]
        EXPONENTIAL: _ClassVar[LrSchedule.Interpolation]
        COSINE: _ClassVar[LrSchedule.Interpolation]
    INTERPOLATION_UNSPECIFIED: LrSchedule.Interpolation
    LINEAR: LrSchedule.Interpolation
    EXPONENTIAL: LrSchedule.Interpolation
    COSINE: LrSchedule.Interpolation
    START_STEP_FIELD_NUMBER: _ClassVar[int]
    START_VALUE_FIELD_NUMBER: _ClassVar[int]
    END_VALUE_FIELD_NUMBER: _ClassVar[int]
    END_STEP_FIELD_NUMBER: _ClassVar[int]
    INTERPOLATION_FIELD_NUMBER: _ClassVar[int]
    start_step: int
    start_value: float
    end_value: float
    end_step: int
    interpolation: LrSchedule.Interpolation
    def __init__(self, start_step: _Optional[int] = ..., start_value: _Optional[float] = ..., end_value: _Optional[float] = ..., end_step: _Optional[int] = ..., interpolation: _Optional[_Union[LrSchedule.Interpolation, str]] = ...) -> None: ...

class OptimizerConfig(_message.Message):
    __slots__ = ("kind", "groups", "betas", "eps", "weight_decay", "max_grad_norm")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[OptimizerConfig.Kind]
        ADAM: _ClassVar[OptimizerConfig.Kind]
        ADAN: _ClassVar[OptimizerConfig.Kind]
    KIND_UNSPECIFIED: OptimizerConfig.Kind
    ADAM: OptimizerConfig.Kind
    ADAN: OptimizerConfig.Kind
    class ParamGroup(_message.Message):
        __slots__ = ("name", "lr", "frozen")
        NAME_FIELD_NUMBER: _ClassVar[int]
        LR_FIELD_NUMBER: _ClassVar[int]
        FROZEN_FIELD_NUMBER: _ClassVar[int]
        name: str
        lr: LrSchedule
        frozen: bool
        def __init__(self, name: _Optional[str] = ..., lr: _Optional[_Union[LrSchedule, _Mapping]] = ..., frozen: _Optional[bool] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    BETAS_FIELD_NUMBER: _ClassVar[int]
    EPS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    MAX_GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    kind: OptimizerConfig.Kind
    groups: _containers.RepeatedCompositeFieldContainer[OptimizerConfig.ParamGroup]
    betas: _containers.RepeatedScalarFieldContainer[float]
    eps: float
    weight_decay: float
    max_grad_norm: float
    def __init__(self, kind: _Optional[_Union[OptimizerConfig.Kind, str]] = ..., groups: _Optional[_Iterable[_Union[OptimizerConfig.ParamGroup, _Mapping]]] = ..., betas: _Optional[_Iterable[float]] = ..., eps: _Optional[float] = ..., weight_decay: _Optional[float] = ..., max_grad_norm: _Optional[float] = ...) -> None: ...

class GaussianStrategy(_message.Message):
    __slots__ = ("disabled", "densify_every", "densify_from", "densify_until", "grad_threshold", "percent_dense", "prune_opacity", "opacity_reset_every", "max_gaussians")
    DISABLED_FIELD_NUMBER: _ClassVar[int]
    DENSIFY_EVERY_FIELD_NUMBER: _ClassVar[int]
    DENSIFY_FROM_FIELD_NUMBER: _ClassVar[int]
    DENSIFY_UNTIL_FIELD_NUMBER: _ClassVar[int]
    GRAD_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PERCENT_DENSE_FIELD_NUMBER: _ClassVar[int]
    PRUNE_OPACITY_FIELD_NUMBER: _ClassVar[int]
    OPACITY_RESET_EVERY_FIELD_NUMBER: _ClassVar[int]
    MAX_GAUSSIANS_FIELD_NUMBER: _ClassVar[int]
    disabled: bool
    densify_every: int
    densify_from: int
    densify_until: int
    grad_threshold: float
    percent_dense: float
    prune_opacity: float
    opacity_reset_every: int
    max_gaussians: int
    def __init__(self, disabled: _Optional[bool] = ..., densify_every: _Optional[int] = ..., densify_from: _Optional[int] = ..., densify_until: _Optional[int] = ..., grad_threshold: _Optional[float] = ..., percent_dense: _Optional[float] = ..., prune_opacity: _Optional[float] = ..., opacity_reset_every: _Optional[int] = ..., max_gaussians: _Optional[int] = ...) -> None: ...

class GaussiansInit(_message.Message):
    __slots__ = ("num_points", "radius", "points", "colors", "sh_degree", "opacity", "strategy")
    NUM_POINTS_FIELD_NUMBER: _ClassVar[int]
    RADIUS_FIELD_NUMBER: _ClassVar[int]
    POINTS_FIELD_NUMBER: _ClassVar[int]
    COLORS_FIELD_NUMBER: _ClassVar[int]
    SH_DEGREE_FIELD_NUMBER: _ClassVar[int]
    OPACITY_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    num_points: int
    radius: float
    points: _common_pb2.Tensor
    colors: _common_pb2.Tensor
    sh_degree: int
    opacity: float
    strategy: GaussianStrategy
    def __init__(self, num_points: _Optional[int] = ..., radius: _Optional[float] = ..., points: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., colors: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., sh_degree: _Optional[int] = ..., opacity: _Optional[float] = ..., strategy: _Optional[_Union[GaussianStrategy, _Mapping]] = ...) -> None: ...

class MeshInit(_message.Message):
    __slots__ = ("vertices", "faces", "uvs", "texture", "texture_size", "materials", "roughness", "metallic")
    VERTICES_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    UVS_FIELD_NUMBER: _ClassVar[int]
    TEXTURE_FIELD_NUMBER: _ClassVar[int]
    TEXTURE_SIZE_FIELD_NUMBER: _ClassVar[int]
    MATERIALS_FIELD_NUMBER: _ClassVar[int]
    ROUGHNESS_FIELD_NUMBER: _ClassVar[int]
    METALLIC_FIELD_NUMBER: _ClassVar[int]
    vertices: _common_pb2.Tensor
    faces: _common_pb2.Tensor
    uvs: _common_pb2.Tensor
    texture: _common_pb2.Tensor
    texture_size: int
    materials: bool
    roughness: float
    metallic: float
    def __init__(self, vertices: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., faces: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., uvs: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., texture: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., texture_size: _Optional[int] = ..., materials: _Optional[bool] = ..., roughness: _Optional[float] = ..., metallic: _Optional[float] = ...) -> None: ...

class DmtetInit(_message.Message):
    __slots__ = ("grid_resolution", "extent", "sphere_radius", "mesh", "mesh_asset", "texture_size", "expressions", "code_dim", "max_offset")
    GRID_RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    EXTENT_FIELD_NUMBER: _ClassVar[int]
    SPHERE_RADIUS_FIELD_NUMBER: _ClassVar[int]
    MESH_FIELD_NUMBER: _ClassVar[int]
    MESH_ASSET_FIELD_NUMBER: _ClassVar[int]
    TEXTURE_SIZE_FIELD_NUMBER: _ClassVar[int]
    EXPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    CODE_DIM_FIELD_NUMBER: _ClassVar[int]
    MAX_OFFSET_FIELD_NUMBER: _ClassVar[int]
    grid_resolution: int
    extent: float
    sphere_radius: float
    mesh: MeshInit
    mesh_asset: AssetSource
    texture_size: int
    expressions: int
    code_dim: int
    max_offset: float
    def __init__(self, grid_resolution: _Optional[int] = ..., extent: _Optional[float] = ..., sphere_radius: _Optional[float] = ..., mesh: _Optional[_Union[MeshInit, _Mapping]] = ..., mesh_asset: _Optional[_Union[AssetSource, _Mapping]] = ..., texture_size: _Optional[int] = ..., expressions: _Optional[int] = ..., code_dim: _Optional[int] = ..., max_offset: _Optional[float] = ...) -> None: ...

class FieldInit(_message.Message):
    __slots__ = ("resolution", "channels", "depth", "levels", "box_size", "init_std")
    RESOLUTION_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    LEVELS_FIELD_NUMBER: _ClassVar[int]
    BOX_SIZE_FIELD_NUMBER: _ClassVar[int]
    INIT_STD_FIELD_NUMBER: _ClassVar[int]
    resolution: int
    channels: int
    depth: int
    levels: _containers.RepeatedScalarFieldContainer[int]
    box_size: float
    init_std: float
    def __init__(self, resolution: _Optional[int] = ..., channels: _Optional[int] = ..., depth: _Optional[int] = ..., levels: _Optional[_Iterable[int]] = ..., box_size: _Optional[float] = ..., init_std: _Optional[float] = ...) -> None: ...

class CreateSceneRequest(_message.Message):
    __slots__ = ("kind", "gaussians", "mesh", "dmtet", "field", "asset", "optimizer", "options", "seed", "label")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    GAUSSIANS_FIELD_NUMBER: _ClassVar[int]
    MESH_FIELD_NUMBER: _ClassVar[int]
    DMTET_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    kind: SceneKind
    gaussians: GaussiansInit
    mesh: MeshInit
    dmtet: DmtetInit
    field: FieldInit
    asset: AssetSource
    optimizer: OptimizerConfig
    options: _containers.ScalarMap[str, str]
    seed: int
    label: str
    def __init__(self, kind: _Optional[_Union[SceneKind, str]] = ..., gaussians: _Optional[_Union[GaussiansInit, _Mapping]] = ..., mesh: _Optional[_Union[MeshInit, _Mapping]] = ..., dmtet: _Optional[_Union[DmtetInit, _Mapping]] = ..., field: _Optional[_Union[FieldInit, _Mapping]] = ..., asset: _Optional[_Union[AssetSource, _Mapping]] = ..., optimizer: _Optional[_Union[OptimizerConfig, _Mapping]] = ..., options: _Optional[_Mapping[str, str]] = ..., seed: _Optional[int] = ..., label: _Optional[str] = ...) -> None: ...

class CreateSceneResponse(_message.Message):
    __slots__ = ("scene_id", "kind", "backend", "param_counts", "step", "memory_bytes", "expires_at")
    class ParamCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    SCENE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    PARAM_COUNTS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    scene_id: str
    kind: SceneKind
    backend: str
    param_counts: _containers.ScalarMap[str, int]
    step: int
    memory_bytes: int
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, scene_id: _Optional[str] = ..., kind: _Optional[_Union[SceneKind, str]] = ..., backend: _Optional[str] = ..., param_counts: _Optional[_Mapping[str, int]] = ..., step: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RenderSceneRequest(_message.Message):
    __slots__ = ("scene_id", "cameras", "outputs", "width", "height", "color", "random_color", "image", "requires_grad", "shading", "light_direction", "dtype", "seed", "environment", "expression")
    SCENE_ID_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    COLOR_FIELD_NUMBER: _ClassVar[int]
    RANDOM_COLOR_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_GRAD_FIELD_NUMBER: _ClassVar[int]
    SHADING_FIELD_NUMBER: _ClassVar[int]
    LIGHT_DIRECTION_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    scene_id: str
    cameras: _containers.RepeatedCompositeFieldContainer[_common_pb2.Camera]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    width: int
    height: int
    color: Color3
    random_color: bool
    image: _common_pb2.Tensor
    requires_grad: bool
    shading: str
    light_direction: _common_pb2.Point3
    dtype: _common_pb2.Tensor.DType
    seed: int
    environment: EnvironmentMap
    expression: int
    def __init__(self, scene_id: _Optional[str] = ..., cameras: _Optional[_Iterable[_Union[_common_pb2.Camera, _Mapping]]] = ..., outputs: _Optional[_Iterable[str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., color: _Optional[_Union[Color3, _Mapping]] = ..., random_color: _Optional[bool] = ..., image: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., requires_grad: _Optional[bool] = ..., shading: _Optional[str] = ..., light_direction: _Optional[_Union[_common_pb2.Point3, _Mapping]] = ..., dtype: _Optional[_Union[_common_pb2.Tensor.DType, str]] = ..., seed: _Optional[int] = ..., environment: _Optional[_Union[EnvironmentMap, _Mapping]] = ..., expression: _Optional[int] = ...) -> None: ...

class EnvironmentMap(_message.Message):
    __slots__ = ("values", "height", "width", "rotation_y_deg")
    VALUES_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    ROTATION_Y_DEG_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    height: int
    width: int
    rotation_y_deg: float
    def __init__(self, values: _Optional[_Iterable[float]] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., rotation_y_deg: _Optional[float] = ...) -> None: ...

class Color3(_message.Message):
    __slots__ = ("r", "g", "b")
    R_FIELD_NUMBER: _ClassVar[int]
    G_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    r: float
    g: float
    b: float
    def __init__(self, r: _Optional[float] = ..., g: _Optional[float] = ..., b: _Optional[float] = ...) -> None: ...

class RenderSceneResponse(_message.Message):
    __slots__ = ("outputs", "step_handle", "step_handle_expires_at", "step")
    class OutputsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.Tensor
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    STEP_HANDLE_FIELD_NUMBER: _ClassVar[int]
    STEP_HANDLE_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    outputs: _containers.MessageMap[str, _common_pb2.Tensor]
    step_handle: str
    step_handle_expires_at: _timestamp_pb2.Timestamp
    step: int
    def __init__(self, outputs: _Optional[_Mapping[str, _common_pb2.Tensor]] = ..., step_handle: _Optional[str] = ..., step_handle_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., step: _Optional[int] = ...) -> None: ...

class GradientTerm(_message.Message):
    __slots__ = ("step_handle", "output", "grad", "weight", "name")
    STEP_HANDLE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    GRAD_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    step_handle: str
    output: str
    grad: _common_pb2.Tensor
    weight: float
    name: str
    def __init__(self, step_handle: _Optional[str] = ..., output: _Optional[str] = ..., grad: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., weight: _Optional[float] = ..., name: _Optional[str] = ...) -> None: ...

class Regularizer(_message.Message):
    __slots__ = ("name", "weight", "params")
    class ParamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    params: _containers.ScalarMap[str, float]
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ..., params: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ApplyGradientsRequest(_message.Message):
    __slots__ = ("scene_id", "terms", "regularizers", "accumulate")
    SCENE_ID_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    REGULARIZERS_FIELD_NUMBER: _ClassVar[int]
    ACCUMULATE_FIELD_NUMBER: _ClassVar[int]
    scene_id: str
    terms: _containers.RepeatedCompositeFieldContainer[GradientTerm]
    regularizers: _containers.RepeatedCompositeFieldContainer[Regularizer]
    accumulate: bool
    def __init__(self, scene_id: _Optional[str] = ..., terms: _Optional[_Iterable[_Union[GradientTerm, _Mapping]]] = ..., regularizers: _Optional[_Iterable[_Union[Regularizer, _Mapping]]] = ..., accumulate: _Optional[bool] = ...) -> None: ...

class ApplyGradientsResponse(_message.Message):
    __slots__ = ("step", "skipped", "learning_rates", "grad_norms", "term_grad_norms", "regularizer_values", "num_gaussians", "densified", "pruned")
    class LearningRatesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class GradNormsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TermGradNormsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class RegularizerValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STEP_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATES_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORMS_FIELD_NUMBER: _ClassVar[int]
    TERM_GRAD_NORMS_FIELD_NUMBER: _ClassVar[int]
    REGULARIZER_VALUES_FIELD_NUMBER: _ClassVar[int]
    NUM_GAUSSIANS_FIELD_NUMBER: _ClassVar[int]
    DENSIFIED_FIELD_NUMBER: _ClassVar[int]
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    step: int
    skipped: bool
    learning_rates: _containers.ScalarMap[str, float]
    grad_norms: _containers.ScalarMap[str, float]
    term_grad_norms: _containers.ScalarMap[str, float]
    regularizer_values: _containers.ScalarMap[str, float]
    num_gaussians: int
    densified: int
    pruned: int
    def __init__(self, step: _Optional[int] = ..., skipped: _Optional[bool] = ..., learning_rates: _Optional[_Mapping[str, float]] = ..., grad_norms: _Optional[_Mapping[str, float]] = ..., term_grad_norms: _Optional[_Mapping[str, float]] = ..., regularizer_values: _Optional[_Mapping[str, float]] = ..., num_gaussians: _Optional[int] = ..., densified: _Optional[int] = ..., pruned: _Optional[int] = ...) -> None: ...

class GradientSet(_message.Message):
    __slots__ = ("terms",)
    TERMS_FIELD_NUMBER: _ClassVar[int]
    terms: _containers.RepeatedCompositeFieldContainer[GradientTerm]
    def __init__(self, terms: _Optional[_Iterable[_Union[GradientTerm, _Mapping]]] = ...) -> None: ...

class GradientCosineRequest(_message.Message):
    __slots__ = ("scene_id", "reference", "candidates")
    SCENE_ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    scene_id: str
    reference: GradientSet
    candidates: _containers.RepeatedCompositeFieldContainer[GradientSet]
    def __init__(self, scene_id: _Optional[str] = ..., reference: _Optional[_Union[GradientSet, _Mapping]] = ..., candidates: _Optional[_Iterable[_Union[GradientSet, _Mapping]]] = ...) -> None: ...

class GradientCosineResponse(_message.Message):
    __slots__ = ("cosines", "reference_norm", "candidate_norms", "step")
    COSINES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_NORM_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_NORMS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    cosines: _containers.RepeatedScalarFieldContainer[float]
    reference_norm: float
    candidate_norms: _containers.RepeatedScalarFieldContainer[float]
    step: int
    def __init__(self, cosines: _Optional[_Iterable[float]] = ..., reference_norm: _Optional[float] = ..., candidate_norms: _Optional[_Iterable[float]] = ..., step: _Optional[int] = ...) -> None: ...

class GetSceneStateRequest(_message.Message):
    __slots__ = ("scene_id", "exclude_optimizer")
    SCENE_ID_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    scene_id: str
    exclude_optimizer: bool
    def __init__(self, scene_id: _Optional[str] = ..., exclude_optimizer: _Optional[bool] = ...) -> None: ...

class SetSceneStateRequest(_message.Message):
    __slots__ = ("scene_id", "checkpoint")
    SCENE_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    scene_id: str
    checkpoint: AssetSource
    def __init__(self, scene_id: _Optional[str] = ..., checkpoint: _Optional[_Union[AssetSource, _Mapping]] = ...) -> None: ...

class SetSceneStateResponse(_message.Message):
    __slots__ = ("step", "memory_bytes")
    STEP_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    step: int
    memory_bytes: int
    def __init__(self, step: _Optional[int] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class ExportSceneRequest(_message.Message):
    __slots__ = ("scene_id", "format", "scale", "texture_size", "chunk_bytes", "expression")
    SCENE_ID_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    TEXTURE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXPRESSION_FIELD_NUMBER: _ClassVar[int]
    scene_id: str
    format: AssetFormat
    scale: float
    texture_size: int
    chunk_bytes: int
    expression: int
    def __init__(self, scene_id: _Optional[str] = ..., format: _Optional[_Union[AssetFormat, str]] = ..., scale: _Optional[float] = ..., texture_size: _Optional[int] = ..., chunk_bytes: _Optional[int] = ..., expression: _Optional[int] = ...) -> None: ...

class BackProjectTextureRequest(_message.Message):
    __slots__ = ("scene_id", "image", "camera", "mask", "min_cosine", "write")
    class WriteMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        WRITE_MODE_UNSPECIFIED: _ClassVar[BackProjectTextureRequest.WriteMode]
        NONE: _ClassVar[BackProjectTextureRequest.WriteMode]
        VISIBLE: _ClassVar[BackProjectTextureRequest.WriteMode]
        UNSEEN: _ClassVar[BackProjectTextureRequest.WriteMode]
    WRITE_MODE_UNSPECIFIED: BackProjectTextureRequest.WriteMode
    NONE: BackProjectTextureRequest.WriteMode
    VISIBLE: BackProjectTextureRequest.WriteMode
    UNSEEN: BackProjectTextureRequest.WriteMode
    SCENE_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    MIN_COSINE_FIELD_NUMBER: _ClassVar[int]
    WRITE_FIELD_NUMBER: _ClassVar[int]
    scene_id: str
    image: _common_pb2.ImageInput
    camera: _common_pb2.Camera
    mask: _common_pb2.ImageInput
    min_cosine: float
    write: BackProjectTextureRequest.WriteMode
    def __init__(self, scene_id: _Optional[str] = ..., image: _Optional[_Union[_common_pb2.ImageInput, _Mapping]] = ..., camera: _Optional[_Union[_common_pb2.Camera, _Mapping]] = ..., mask: _Optional[_Union[_common_pb2.ImageInput, _Mapping]] = ..., min_cosine: _Optional[float] = ..., write: _Optional[_Union[BackProjectTextureRequest.WriteMode, str]] = ...) -> None: ...

class BackProjectTextureResponse(_message.Message):
    __slots__ = ("texture", "visibility", "texels_written")
    TEXTURE_FIELD_NUMBER: _ClassVar[int]
    VISIBILITY_FIELD_NUMBER: _ClassVar[int]
    TEXELS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    texture: _common_pb2.Tensor
    visibility: _common_pb2.Tensor
    texels_written: int
    def __init__(self, texture: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., visibility: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., texels_written: _Optional[int] = ...) -> None: ...

class DensifyGaussiansRequest(_message.Message):
    __slots__ = ("scene_id", "grad_threshold", "prune_opacity", "prune_max_scale", "reset_opacity")
    SCENE_ID_FIELD_NUMBER: _ClassVar[int]
    GRAD_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    PRUNE_OPACITY_FIELD_NUMBER: _ClassVar[int]
    PRUNE_MAX_SCALE_FIELD_NUMBER: _ClassVar[int]
    RESET_OPACITY_FIELD_NUMBER: _ClassVar[int]
    scene_id: str
    grad_threshold: float
    prune_opacity: float
    prune_max_scale: float
    reset_opacity: float
    def __init__(self, scene_id: _Optional[str] = ..., grad_threshold: _Optional[float] = ..., prune_opacity: _Optional[float] = ..., prune_max_scale: _Optional[float] = ..., reset_opacity: _Optional[float] = ...) -> None: ...

class DensifyGaussiansResponse(_message.Message):
    __slots__ = ("num_gaussians", "densified", "pruned")
    NUM_GAUSSIANS_FIELD_NUMBER: _ClassVar[int]
    DENSIFIED_FIELD_NUMBER: _ClassVar[int]
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    num_gaussians: int
    densified: int
    pruned: int
    def __init__(self, num_gaussians: _Optional[int] = ..., densified: _Optional[int] = ..., pruned: _Optional[int] = ...) -> None: ...

class CloseSceneRequest(_message.Message):
    __slots__ = ("scene_id",)
    SCENE_ID_FIELD_NUMBER: _ClassVar[int]
    scene_id: str
    def __init__(self, scene_id: _Optional[str] = ...) -> None: ...

class CloseSceneResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class UploadAssetResponse(_message.Message):
    __slots__ = ("asset_id", "size", "sha256", "format", "expires_at")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    size: int
    sha256: str
    format: AssetFormat
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, asset_id: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., format: _Optional[_Union[AssetFormat, str]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RenderDescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RenderDescribeResponse(_message.Message):
    __slots__ = ("kinds", "dmtet_resolutions", "device", "scene_idle_ttl_s", "step_handle_ttl_s", "max_pending_steps_per_scene", "max_scenes_per_tenant", "max_scene_bytes", "max_tenant_bytes", "max_render_pixels", "max_gaussians", "max_asset_bytes", "asset_ttl_s", "max_message_bytes")
    class KindInfo(_message.Message):
        __slots__ = ("kind", "backends", "default_learning_rates", "outputs", "regularizers", "export_formats", "options")
        class DefaultLearningRatesEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: float
            def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
        class OptionsEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: str
            def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
        KIND_FIELD_NUMBER: _ClassVar[int]
        BACKENDS_FIELD_NUMBER: _ClassVar[int]
        DEFAULT_LEARNING_RATES_FIELD_NUMBER: _ClassVar[int]
        OUTPUTS_FIELD_NUMBER: _ClassVar[int]
        REGULARIZERS_FIELD_NUMBER: _ClassVar[int]
        EXPORT_FORMATS_FIELD_NUMBER: _ClassVar[int]
        OPTIONS_FIELD_NUMBER: _ClassVar[int]
        kind: SceneKind
        backends: _containers.RepeatedScalarFieldContainer[str]
        default_learning_rates: _containers.ScalarMap[str, float]
        outputs: _containers.RepeatedScalarFieldContainer[str]
        regularizers: _containers.RepeatedScalarFieldContainer[str]
        export_formats: _containers.RepeatedScalarFieldContainer[AssetFormat]
        options: _containers.ScalarMap[str, str]
        def __init__(self, kind: _Optional[_Union[SceneKind, str]] = ..., backends: _Optional[_Iterable[str]] = ..., default_learning_rates: _Optional[_Mapping[str, float]] = ..., outputs: _Optional[_Iterable[str]] = ..., regularizers: _Optional[_Iterable[str]] = ..., export_formats: _Optional[_Iterable[_Union[AssetFormat, str]]] = ..., options: _Optional[_Mapping[str, str]] = ...) -> None: ...
    KINDS_FIELD_NUMBER: _ClassVar[int]
    DMTET_RESOLUTIONS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    SCENE_IDLE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    STEP_HANDLE_TTL_S_FIELD_NUMBER: _ClassVar[int]
    MAX_PENDING_STEPS_PER_SCENE_FIELD_NUMBER: _ClassVar[int]
    MAX_SCENES_PER_TENANT_FIELD_NUMBER: _ClassVar[int]
    MAX_SCENE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_TENANT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_RENDER_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_GAUSSIANS_FIELD_NUMBER: _ClassVar[int]
    MAX_ASSET_BYTES_FIELD_NUMBER: _ClassVar[int]
    ASSET_TTL_S_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedCompositeFieldContainer[RenderDescribeResponse.KindInfo]
    dmtet_resolutions: _containers.RepeatedScalarFieldContainer[int]
    device: str
    scene_idle_ttl_s: int
    step_handle_ttl_s: int
    max_pending_steps_per_scene: int
    max_scenes_per_tenant: int
    max_scene_bytes: int
    max_tenant_bytes: int
    max_render_pixels: int
    max_gaussians: int
    max_asset_bytes: int
    asset_ttl_s: int
    max_message_bytes: int
    def __init__(self, kinds: _Optional[_Iterable[_Union[RenderDescribeResponse.KindInfo, _Mapping]]] = ..., dmtet_resolutions: _Optional[_Iterable[int]] = ..., device: _Optional[str] = ..., scene_idle_ttl_s: _Optional[int] = ..., step_handle_ttl_s: _Optional[int] = ..., max_pending_steps_per_scene: _Optional[int] = ..., max_scenes_per_tenant: _Optional[int] = ..., max_scene_bytes: _Optional[int] = ..., max_tenant_bytes: _Optional[int] = ..., max_render_pixels: _Optional[int] = ..., max_gaussians: _Optional[int] = ..., max_asset_bytes: _Optional[int] = ..., asset_ttl_s: _Optional[int] = ..., max_message_bytes: _Optional[int] = ...) -> None: ...
