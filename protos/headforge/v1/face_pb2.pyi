from headforge.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CropStyle(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CROP_STYLE_UNSPECIFIED: _ClassVar[CropStyle]
    FFHQ: _ClassVar[CropStyle]
    HEAD: _ClassVar[CropStyle]
CROP_STYLE_UNSPECIFIED: CropStyle
FFHQ: CropStyle
HEAD: CropStyle

class AnalyzeOptions(_message.Message):
    __slots__ = ("max_faces", "min_face_size", "upsample", "skip_embedding", "skip_crop", "skip_masks", "crop_size", "crop_style", "min_score")
    MAX_FACES_FIELD_NUMBER: _ClassVar[int]
    MIN_FACE_SIZE_FIELD_NUMBER: _ClassVar[int]
    UPSAMPLE_FIELD_NUMBER: _ClassVar[int]
    SKIP_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    SKIP_CROP_FIELD_NUMBER: _ClassVar[int]
    SKIP_MASKS_FIELD_NUMBER: _ClassVar[int]
    CROP_SIZE_FIELD_NUMBER: _ClassVar[int]
    CROP_STYLE_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    max_faces: int
    min_face_size: float
    upsample: int
    skip_embedding: bool
    skip_crop: bool
    skip_masks: bool
    crop_size: int
    crop_style: CropStyle
    min_score: float
    def __init__(self, max_faces: _Optional[int] = ..., min_face_size: _Optional[float] = ..., upsample: _Optional[int] = ..., skip_embedding: _Optional[bool] = ..., skip_crop: _Optional[bool] = ..., skip_masks: _Optional[bool] = ..., crop_size: _Optional[int] = ..., crop_style: _Optional[_Union[CropStyle, str]] = ..., min_score: _Optional[float] = ...) -> None: ...

class AnalyzeRequest(_message.Message):
    __slots__ = ("image", "options")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    image: _common_pb2.ImageInput
    options: AnalyzeOptions
    def __init__(self, image: _Optional[_Union[_common_pb2.ImageInput, _Mapping]] = ..., options: _Optional[_Union[AnalyzeOptions, _Mapping]] = ...) -> None: ...

class HeadPose(_message.Message):
    __slots__ = ("yaw", "pitch", "roll")
    YAW_FIELD_NUMBER: _ClassVar[int]
    PITCH_FIELD_NUMBER: _ClassVar[int]
    ROLL_FIELD_NUMBER: _ClassVar[int]
    yaw: float
    pitch: float
    roll: float
    def __init__(self, yaw: _Optional[float] = ..., pitch: _Optional[float] = ..., roll: _Optional[float] = ...) -> None: ...

class Face(_message.Message):
    __slots__ = ("box", "score", "landmarks_5", "landmarks_68", "landmarks_3d_68", "pose", "camera", "embedding", "embedding_norm", "aligned_crop", "crop_transform", "crop_camera", "eg3d_label", "face_mask", "head_mask", "crop_head_mask", "landmarks_478", "landmarks_3d_478")
    BOX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_5_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_68_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_3D_68_FIELD_NUMBER: _ClassVar[int]
    POSE_FIELD_NUMBER: _ClassVar[int]
    CAMERA_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_NORM_FIELD_NUMBER: _ClassVar[int]
    ALIGNED_CROP_FIELD_NUMBER: _ClassVar[int]
    CROP_TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    CROP_CAMERA_FIELD_NUMBER: _ClassVar[int]
    EG3D_LABEL_FIELD_NUMBER: _ClassVar[int]
    FACE_MASK_FIELD_NUMBER: _ClassVar[int]
    HEAD_MASK_FIELD_NUMBER: _ClassVar[int]
    CROP_HEAD_MASK_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_478_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_3D_478_FIELD_NUMBER: _ClassVar[int]
    box: _common_pb2.Box
    score: float
    landmarks_5: _containers.RepeatedCompositeFieldContainer[_common_pb2.Point2]
    landmarks_68: _containers.RepeatedCompositeFieldContainer[_common_pb2.Point2]
    landmarks_3d_68: _containers.RepeatedCompositeFieldContainer[_common_pb2.Point3]
    pose: HeadPose
    camera: _common_pb2.Camera
    embedding: _common_pb2.Tensor
    embedding_norm: float
    aligned_crop: _common_pb2.EncodedImage
    crop_transform: _containers.RepeatedScalarFieldContainer[float]
    crop_camera: _common_pb2.Camera
    eg3d_label: _containers.RepeatedScalarFieldContainer[float]
    face_mask: _common_pb2.EncodedImage
    head_mask: _common_pb2.EncodedImage
    crop_head_mask: _common_pb2.EncodedImage
    landmarks_478: _containers.RepeatedCompositeFieldContainer[_common_pb2.Point2]
    landmarks_3d_478: _containers.RepeatedCompositeFieldContainer[_common_pb2.Point3]
    def __init__(self, box: _Optional[_Union[_common_pb2.Box, _Mapping]] = ..., score: _Optional[float] = ..., landmarks_5: _Optional[_Iterable[_Union[_common_pb2.Point2, _Mapping]]] = ..., landmarks_68: _Optional[_Iterable[_Union[_common_pb2.Point2, _Mapping]]] = ..., landmarks_3d_68: _Optional[_Iterable[_Union[_common_pb2.Point3, _Mapping]]] = ..., pose: _Optional[_Union[HeadPose, _Mapping]] = ..., camera: _Optional[_Union[_common_pb2.Camera, _Mapping]] = ..., embedding: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., embedding_norm: _Optional[float] = ..., aligned_crop: _Optional[_Union[_common_pb2.EncodedImage, _Mapping]] = ..., crop_transform: _Optional[_Iterable[float]] = ..., crop_camera: _Optional[_Union[_common_pb2.Camera, _Mapping]] = ..., eg3d_label: _Optional[_Iterable[float]] = ..., face_mask: _Optional[_Union[_common_pb2.EncodedImage, _Mapping]] = ..., head_mask: _Optional[_Union[_common_pb2.EncodedImage, _Mapping]] = ..., crop_head_mask: _Optional[_Union[_common_pb2.EncodedImage, _Mapping]] = ..., landmarks_478: _Optional[_Iterable[_Union[_common_pb2.Point2, _Mapping]]] = ..., landmarks_3d_478: _Optional[_Iterable[_Union[_common_pb2.Point3, _Mapping]]] = ...) -> None: ...

class AnalyzeResponse(_message.Message):
    __slots__ = ("faces", "image_width", "image_height", "models")
    FACES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_WIDTH_FIELD_NUMBER: _ClassVar[int]
    IMAGE_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[Face]
    image_width: int
    image_height: int
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelInfo]
    def __init__(self, faces: _Optional[_Iterable[_Union[Face, _Mapping]]] = ..., image_width: _Optional[int] = ..., image_height: _Optional[int] = ..., models: _Optional[_Iterable[_Union[_common_pb2.ModelInfo, _Mapping]]] = ...) -> None: ...

class CompareRequest(_message.Message):
    __slots__ = ("a", "b")
    class Side(_message.Message):
        __slots__ = ("image", "embedding", "face_index", "embedding_norm")
        IMAGE_FIELD_NUMBER: _ClassVar[int]
        EMBEDDING_FIELD_NUMBER: _ClassVar[int]
        FACE_INDEX_FIELD_NUMBER: _ClassVar[int]
        EMBEDDING_NORM_FIELD_NUMBER: _ClassVar[int]
        image: _common_pb2.ImageInput
        embedding: _common_pb2.Tensor
        face_index: int
        embedding_norm: float
        def __init__(self, image: _Optional[_Union[_common_pb2.ImageInput, _Mapping]] = ..., embedding: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., face_index: _Optional[int] = ..., embedding_norm: _Optional[float] = ...) -> None: ...
    A_FIELD_NUMBER: _ClassVar[int]
    B_FIELD_NUMBER: _ClassVar[int]
    a: CompareRequest.Side
    b: CompareRequest.Side
    def __init__(self, a: _Optional[_Union[CompareRequest.Side, _Mapping]] = ..., b: _Optional[_Union[CompareRequest.Side, _Mapping]] = ...) -> None: ...

class CompareResponse(_message.Message):
    __slots__ = ("cosine_similarity", "distance", "threshold", "same_person", "metric")
    COSINE_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SAME_PERSON_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    cosine_similarity: float
    distance: float
    threshold: float
    same_person: bool
    metric: str
    def __init__(self, cosine_similarity: _Optional[float] = ..., distance: _Optional[float] = ..., threshold: _Optional[float] = ..., same_person: _Optional[bool] = ..., metric: _Optional[str] = ...) -> None: ...

class IdentityLossRequest(_message.Message):
    __slots__ = ("images", "reference_embedding", "landmarks")
    class Landmarks(_message.Message):
        __slots__ = ("points",)
        POINTS_FIELD_NUMBER: _ClassVar[int]
        points: _containers.RepeatedCompositeFieldContainer[_common_pb2.Point2]
        def __init__(self, points: _Optional[_Iterable[_Union[_common_pb2.Point2, _Mapping]]] = ...) -> None: ...
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    LANDMARKS_FIELD_NUMBER: _ClassVar[int]
    images: _common_pb2.Tensor
    reference_embedding: _common_pb2.Tensor
    landmarks: _containers.RepeatedCompositeFieldContainer[IdentityLossRequest.Landmarks]
    def __init__(self, images: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., reference_embedding: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., landmarks: _Optional[_Iterable[_Union[IdentityLossRequest.Landmarks, _Mapping]]] = ...) -> None: ...

class IdentityLossResponse(_message.Message):
    __slots__ = ("loss", "grad", "face_found")
    LOSS_FIELD_NUMBER: _ClassVar[int]
    GRAD_FIELD_NUMBER: _ClassVar[int]
    FACE_FOUND_FIELD_NUMBER: _ClassVar[int]
    loss: _common_pb2.Tensor
    grad: _common_pb2.Tensor
    face_found: _containers.RepeatedScalarFieldContainer[bool]
    def __init__(self, loss: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., grad: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., face_found: _Optional[_Iterable[bool]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("models", "identity_backend", "embedding_dim", "identity_loss_available", "metric", "same_person_threshold", "max_image_pixels", "max_message_bytes")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_BACKEND_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_LOSS_AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    SAME_PERSON_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[_common_pb2.ModelInfo]
    identity_backend: str
    embedding_dim: int
    identity_loss_available: bool
    metric: str
    same_person_threshold: float
    max_image_pixels: int
    max_message_bytes: int
    def __init__(self, models: _Optional[_Iterable[_Union[_common_pb2.ModelInfo, _Mapping]]] = ..., identity_backend: _Optional[str] = ..., embedding_dim: _Optional[int] = ..., identity_loss_available: _Optional[bool] = ..., metric: _Optional[str] = ..., same_person_threshold: _Optional[float] = ..., max_image_pixels: _Optional[int] = ..., max_message_bytes: _Optional[int] = ...) -> None: ...
