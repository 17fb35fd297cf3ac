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

class SubmitJobRequest(_message.Message):
    __slots__ = ("recipe_name", "recipe_yaml", "images", "prompt", "options", "models_dir", "priority", "display_name", "labels", "idempotency_key")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RECIPE_NAME_FIELD_NUMBER: _ClassVar[int]
    RECIPE_YAML_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    MODELS_DIR_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    recipe_name: str
    recipe_yaml: str
    images: _containers.RepeatedCompositeFieldContainer[_common_pb2.EncodedImage]
    prompt: str
    options: _containers.ScalarMap[str, str]
    models_dir: str
    priority: int
    display_name: str
    labels: _containers.ScalarMap[str, str]
    idempotency_key: str
    def __init__(self, recipe_name: _Optional[str] = ..., recipe_yaml: _Optional[str] = ..., images: _Optional[_Iterable[_Union[_common_pb2.EncodedImage, _Mapping]]] = ..., prompt: _Optional[str] = ..., options: _Optional[_Mapping[str, str]] = ..., models_dir: _Optional[str] = ..., priority: _Optional[int] = ..., display_name: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "tenant", "display_name", "recipe", "recipe_sha256", "state", "cancel_requested", "priority", "labels", "stages", "error_message", "error", "created_at", "updated_at", "started_at", "finished_at", "artifacts", "queue_position")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[Job.State]
        QUEUED: _ClassVar[Job.State]
        RUNNING: _ClassVar[Job.State]
        SUCCEEDED: _ClassVar[Job.State]
        FAILED: _ClassVar[Job.State]
        CANCELLED: _ClassVar[Job.State]
    STATE_UNSPECIFIED: Job.State
    QUEUED: Job.State
    RUNNING: Job.State
    SUCCEEDED: Job.State
    FAILED: Job.State
    CANCELLED: Job.State
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    RECIPE_SHA256_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    id: str
    tenant: str
    display_name: str
    recipe: str
    recipe_sha256: str
    state: Job.State
    cancel_requested: bool
    priority: int
    labels: _containers.ScalarMap[str, str]
    stages: _containers.RepeatedCompositeFieldContainer[JobStage]
    error_message: str
    error: _common_pb2.ErrorInfo
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    artifacts: _containers.RepeatedCompositeFieldContainer[JobArtifact]
    queue_position: int
    def __init__(self, id: _Optional[str] = ..., tenant: _Optional[str] = ..., display_name: _Optional[str] = ..., recipe: _Optional[str] = ..., recipe_sha256: _Optional[str] = ..., state: _Optional[_Union[Job.State, str]] = ..., cancel_requested: _Optional[bool] = ..., priority: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., stages: _Optional[_Iterable[_Union[JobStage, _Mapping]]] = ..., error_message: _Optional[str] = ..., error: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., artifacts: _Optional[_Iterable[_Union[JobArtifact, _Mapping]]] = ..., queue_position: _Optional[int] = ...) -> None: ...

class JobStage(_message.Message):
    __slots__ = ("name", "state", "started_at", "finished_at", "progress", "resumes")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[JobStage.State]
        PENDING: _ClassVar[JobStage.State]
        RUNNING: _ClassVar[JobStage.State]
        SUCCEEDED: _ClassVar[JobStage.State]
        FAILED: _ClassVar[JobStage.State]
        SKIPPED: _ClassVar[JobStage.State]
        CANCELLED: _ClassVar[JobStage.State]
    STATE_UNSPECIFIED: JobStage.State
    PENDING: JobStage.State
    RUNNING: JobStage.State
    SUCCEEDED: JobStage.State
    FAILED: JobStage.State
    SKIPPED: JobStage.State
    CANCELLED: JobStage.State
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESUMES_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: JobStage.State
    started_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    progress: _common_pb2.Progress
    resumes: int
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[JobStage.State, str]] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., resumes: _Optional[int] = ...) -> None: ...

class JobArtifact(_message.Message):
    __slots__ = ("name", "size_bytes", "mime_type", "sha256", "stage", "created_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    size_bytes: int
    mime_type: str
    sha256: str
    stage: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., mime_type: _Optional[str] = ..., sha256: _Optional[str] = ..., stage: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "recipe", "labels", "page_size", "page_token")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATES_FIELD_NUMBER: _ClassVar[int]
    RECIPE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[Job.State]
    recipe: str
    labels: _containers.ScalarMap[str, str]
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[Job.State, str]]] = ..., recipe: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchProgressRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence", "max_progress_rate")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    MAX_PROGRESS_RATE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    max_progress_rate: float
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ..., max_progress_rate: _Optional[float] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("sequence", "time", "snapshot", "state", "stage", "progress", "artifact")
    class StateChange(_message.Message):
        __slots__ = ("previous", "current", "error", "error_message")
        PREVIOUS_FIELD_NUMBER: _ClassVar[int]
        CURRENT_FIELD_NUMBER: _ClassVar[int]
        ERROR_FIELD_NUMBER: _ClassVar[int]
        ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
        previous: Job.State
        current: Job.State
        error: _common_pb2.ErrorInfo
        error_message: str
        def __init__(self, previous: _Optional[_Union[Job.State, str]] = ..., current: _Optional[_Union[Job.State, str]] = ..., error: _Optional[_Union[_common_pb2.ErrorInfo, _Mapping]] = ..., error_message: _Optional[str] = ...) -> None: ...
    class StageChange(_message.Message):
        __slots__ = ("stage", "previous", "current")
        STAGE_FIELD_NUMBER: _ClassVar[int]
        PREVIOUS_FIELD_NUMBER: _ClassVar[int]
        CURRENT_FIELD_NUMBER: _ClassVar[int]
        stage: str
        previous: JobStage.State
        current: JobStage.State
        def __init__(self, stage: _Optional[str] = ..., previous: _Optional[_Union[JobStage.State, str]] = ..., current: _Optional[_Union[JobStage.State, str]] = ...) -> None: ...
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: _timestamp_pb2.Timestamp
    snapshot: Job
    state: JobEvent.StateChange
    stage: JobEvent.StageChange
    progress: _common_pb2.Progress
    artifact: JobArtifact
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., snapshot: _Optional[_Union[Job, _Mapping]] = ..., state: _Optional[_Union[JobEvent.StateChange, _Mapping]] = ..., stage: _Optional[_Union[JobEvent.StageChange, _Mapping]] = ..., progress: _Optional[_Union[_common_pb2.Progress, _Mapping]] = ..., artifact: _Optional[_Union[JobArtifact, _Mapping]] = ...) -> None: ...

class FetchArtifactsRequest(_message.Message):
    __slots__ = ("job_id", "names", "offset", "chunk_bytes")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    CHUNK_BYTES_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    names: _containers.RepeatedScalarFieldContainer[str]
    offset: int
    chunk_bytes: int
    def __init__(self, job_id: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ..., offset: _Optional[int] = ..., chunk_bytes: _Optional[int] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("name", "offset", "data", "total_size", "sha256", "mime_type", "last")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    name: str
    offset: int
    data: bytes
    total_size: int
    sha256: str
    mime_type: str
    last: bool
    def __init__(self, name: _Optional[str] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ..., sha256: _Optional[str] = ..., mime_type: _Optional[str] = ..., last: _Optional[bool] = ...) -> None: ...

class JobsDescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JobsDescribeResponse(_message.Message):
    __slots__ = ("recipes", "model_roots", "max_image_bytes", "max_image_pixels", "max_active_jobs", "active_jobs", "max_storage_bytes", "storage_bytes", "retention_days", "tenant", "version")
    class Recipe(_message.Message):
        __slots__ = ("name", "description", "min_images", "max_images", "prompt_required", "output", "yaml")
        NAME_FIELD_NUMBER: _ClassVar[int]
        DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
        MIN_IMAGES_FIELD_NUMBER: _ClassVar[int]
        MAX_IMAGES_FIELD_NUMBER: _ClassVar[int]
        PROMPT_REQUIRED_FIELD_NUMBER: _ClassVar[int]
        OUTPUT_FIELD_NUMBER: _ClassVar[int]
        YAML_FIELD_NUMBER: _ClassVar[int]
        name: str
        description: str
        min_images: int
        max_images: int
        prompt_required: bool
        output: str
        yaml: str
        def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., min_images: _Optional[int] = ..., max_images: _Optional[int] = ..., prompt_required: _Optional[bool] = ..., output: _Optional[str] = ..., yaml: _Optional[str] = ...) -> None: ...
    RECIPES_FIELD_NUMBER: _ClassVar[int]
    MODEL_ROOTS_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MAX_ACTIVE_JOBS_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_JOBS_FIELD_NUMBER: _ClassVar[int]
    MAX_STORAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    recipes: _containers.RepeatedCompositeFieldContainer[JobsDescribeResponse.Recipe]
    model_roots: _containers.RepeatedScalarFieldContainer[str]
    max_image_bytes: int
    max_image_pixels: int
    max_active_jobs: int
    active_jobs: int
    max_storage_bytes: int
    storage_bytes: int
    retention_days: int
    tenant: str
    version: str
    def __init__(self, recipes: _Optional[_Iterable[_Union[JobsDescribeResponse.Recipe, _Mapping]]] = ..., model_roots: _Optional[_Iterable[str]] = ..., max_image_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., max_active_jobs: _Optional[int] = ..., active_jobs: _Optional[int] = ..., max_storage_bytes: _Optional[int] = ..., storage_bytes: _Optional[int] = ..., retention_days: _Optional[int] = ..., tenant: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...
