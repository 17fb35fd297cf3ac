"""gRPC jobs service: protos <-> JobsService records (both directions; the gRPC client uses the *_from_proto
half). Errors are HeadForgeError, mapped by the server runtime."""

from __future__ import annotations

import grpc
from google.protobuf import timestamp_pb2

from headforge.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc
from orchestrator.jobs.service import JobsService
from orchestrator.jobs.types import (ArtifactChunk, ArtifactRecord, JobEvent, JobRecord, JobsDescription, Progress,
                                     RecipeInfo, StageRecord, SubmitRequest)
from services.common.errors import InvalidArgument

SERVICE_NAME = jobs_pb2.DESCRIPTOR.services_by_name["JobsService"].full_name
JOB_STATES = {"queued": jobs_pb2.Job.QUEUED, "running": jobs_pb2.Job.RUNNING, "succeeded": jobs_pb2.Job.SUCCEEDED,
              "failed": jobs_pb2.Job.FAILED, "cancelled": jobs_pb2.Job.CANCELLED}
JOB_STATE_NAMES = {v: k for k, v in JOB_STATES.items()}
STAGE_STATES = {"pending": jobs_pb2.JobStage.PENDING, "running": jobs_pb2.JobStage.RUNNING,
                "succeeded": jobs_pb2.JobStage.SUCCEEDED, "failed": jobs_pb2.JobStage.FAILED,
                "skipped": jobs_pb2.JobStage.SKIPPED, "cancelled": jobs_pb2.JobStage.CANCELLED}
STAGE_STATE_NAMES = {v: k for k, v in STAGE_STATES.items()}


# -- records -> protos -----------------------------------------------------------------------------------

def _ts(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(round(seconds * 1e9)))
    return ts


def progress_to_proto(p: Progress) -> common_pb2.Progress:
    # Progress.message has no proto field of its own: it travels as no scalar (kept server-side only)
    return common_pb2.Progress(stage=p.stage, step=p.step, total_steps=p.total,
                               scalars={k: float(v) for k, v in p.metrics.items()})


def artifact_to_proto(a: ArtifactRecord) -> jobs_pb2.JobArtifact:
    return jobs_pb2.JobArtifact(name=a.name, size_bytes=a.size_bytes, mime_type=a.mime_type, sha256=a.sha256,
                                stage=a.stage, created_at=_ts(a.created_at))


def job_to_proto(r: JobRecord) -> jobs_pb2.Job:
    job = jobs_pb2.Job(id=r.id, tenant=r.tenant, display_name=r.display_name, recipe=r.recipe,
                       recipe_sha256=r.recipe_sha256, state=JOB_STATES[r.state], cancel_requested=r.cancel_requested,
                       priority=r.priority, labels=r.labels, error_message=r.error_message,
                       created_at=_ts(r.created_at), updated_at=_ts(r.updated_at), started_at=_ts(r.started_at),
                       finished_at=_ts(r.finished_at), queue_position=r.queue_position,
                       artifacts=[artifact_to_proto(a) for a in r.artifacts])
    if r.error_message or r.error_reason:
        job.error.reason = r.error_reason
    for s in r.stages:
        stage = job.stages.add(name=s.name, state=STAGE_STATES[s.state], started_at=_ts(s.started_at),
                               finished_at=_ts(s.finished_at), resumes=s.resumes)
        if s.progress is not None:
            stage.progress.CopyFrom(progress_to_proto(s.progress))
    return job


def event_to_proto(e: JobEvent) -> jobs_pb2.JobEvent:
    msg = jobs_pb2.JobEvent(sequence=e.sequence, time=_ts(e.time))
    if e.kind == "snapshot":
        msg.snapshot.CopyFrom(job_to_proto(e.payload))
    elif e.kind == "state":
        p = e.payload
        msg.state.previous = JOB_STATES[p["previous"]]
        msg.state.current = JOB_STATES[p["current"]]
        msg.state.error_message = p.get("error_message", "")
        if p.get("error_reason") or p.get("error_message"):
            msg.state.error.reason = p.get("error_reason", "")
    elif e.kind == "stage":
        p = e.payload
        msg.stage.stage = p["stage"]
        msg.stage.previous = STAGE_STATES[p["previous"]]
        msg.stage.current = STAGE_STATES[p["current"]]
    elif e.kind == "progress":
        msg.progress.CopyFrom(progress_to_proto(e.payload))
    elif e.kind == "artifact":
        msg.artifact.CopyFrom(artifact_to_proto(e.payload))
    return msg


# -- protos -> records (the gRPC client) -----------------------------------------------------------------

def _secs(msg, name: str) -> float | None:
    return getattr(msg, name).ToNanoseconds() / 1e9 if msg.HasField(name) else None


def progress_from_proto(p: common_pb2.Progress) -> Progress:
    return Progress(stage=p.stage, step=p.step, total=p.total_steps, metrics=dict(p.scalars))


def artifact_from_proto(a: jobs_pb2.JobArtifact) -> ArtifactRecord:
    return ArtifactRecord(name=a.name, size_bytes=a.size_bytes, mime_type=a.mime_type, sha256=a.sha256,
                          stage=a.stage, created_at=_secs(a, "created_at") or 0.0)


def job_from_proto(j: jobs_pb2.Job) -> JobRecord:
    stages = [StageRecord(name=s.name, state=STAGE_STATE_NAMES.get(s.state, "pending"),
                          started_at=_secs(s, "started_at"), finished_at=_secs(s, "finished_at"),
                          progress=progress_from_proto(s.progress) if s.HasField("progress") else None,
                          resumes=s.resumes) for s in j.stages]
    return JobRecord(id=j.id, tenant=j.tenant, display_name=j.display_name, recipe=j.recipe,
                     recipe_sha256=j.recipe_sha256, state=JOB_STATE_NAMES.get(j.state, "queued"),
                     cancel_requested=j.cancel_requested, priority=j.priority, labels=dict(j.labels), stages=stages,
                     created_at=_secs(j, "created_at") or 0.0, updated_at=_secs(j, "updated_at") or 0.0,
                     started_at=_secs(j, "started_at"), finished_at=_secs(j, "finished_at"),
                     error_message=j.error_message, error_reason=j.error.reason,
                     artifacts=[artifact_from_proto(a) for a in j.artifacts], queue_position=j.queue_position)


def event_from_proto(e: jobs_pb2.JobEvent) -> JobEvent:
    which = e.WhichOneof("event")
    t = _secs(e, "time") or 0.0
    if which == "snapshot":
        return JobEvent(e.sequence, t, "snapshot", job_from_proto(e.snapshot))
    if which == "state":
        return JobEvent(e.sequence, t, "state", {
            "previous": JOB_STATE_NAMES.get(e.state.previous, ""), "current": JOB_STATE_NAMES.get(e.state.current, ""),
            "error_message": e.state.error_message, "error_reason": e.state.error.reason})
    if which == "stage":
        return JobEvent(e.sequence, t, "stage", {"stage": e.stage.stage,
                                                 "previous": STAGE_STATE_NAMES.get(e.stage.previous, ""),
                                                 "current": STAGE_STATE_NAMES.get(e.stage.current, "")})
    if which == "progress":
        return JobEvent(e.sequence, t, "progress", progress_from_proto(e.progress))
    return JobEvent(e.sequence, t, "artifact", artifact_from_proto(e.artifact))


def describe_from_proto(d: jobs_pb2.JobsDescribeResponse) -> JobsDescription:
    return JobsDescription(
        recipes=[RecipeInfo(r.name, r.description, r.min_images, r.max_images, r.prompt_required, r.output, r.yaml)
                 for r in d.recipes],
        model_roots=list(d.model_roots), max_image_bytes=d.max_image_bytes, max_image_pixels=d.max_image_pixels,
        max_active_jobs=d.max_active_jobs, active_jobs=d.active_jobs, max_storage_bytes=d.max_storage_bytes,
        storage_bytes=d.storage_bytes, retention_days=d.retention_days, tenant=d.tenant, version=d.version)


def chunk_from_proto(c: jobs_pb2.ArtifactChunk) -> ArtifactChunk:
    return ArtifactChunk(c.name, c.offset, c.data, c.total_size, c.sha256, c.mime_type, c.last)


# -- the servicer ----------------------------------------------------------------------------------------

class JobsServicer(jobs_pb2_grpc.JobsServiceServicer):
    def __init__(self, service: JobsService):
        self.service = service

    def Submit(self, request, context):
        which = request.WhichOneof("recipe")
        images = [img.data for img in request.images]
        r = SubmitRequest(recipe_name=request.recipe_name if which == "recipe_name" else "",
                          recipe_yaml=request.recipe_yaml if which == "recipe_yaml" else "",
                          images=images, prompt=request.prompt, options=dict(request.options),
                          models_dir=request.models_dir, priority=request.priority,
                          display_name=request.display_name, labels=dict(request.labels),
                          idempotency_key=request.idempotency_key)
        return job_to_proto(self.service.submit(r))

    def Get(self, request, context):
        return job_to_proto(self.service.get(request.job_id))

    def List(self, request, context):
        states = []
        for i, s in enumerate(request.states):
            if s not in JOB_STATE_NAMES:
                raise InvalidArgument(f"states[{i}]", f"unknown state {s}")
            states.append(JOB_STATE_NAMES[s])
        if request.page_size < 0 or request.page_size > 500:
            raise InvalidArgument("page_size", f"must be 0..500, got {request.page_size}")
        jobs, token = self.service.list(states, request.recipe, dict(request.labels), request.page_size,
                                        request.page_token)
        return jobs_pb2.ListJobsResponse(jobs=[job_to_proto(j) for j in jobs], next_page_token=token)

    def Cancel(self, request, context):
        return job_to_proto(self.service.cancel(request.job_id))

    def WatchProgress(self, request, context):
        stream = self.service.watch(request.job_id, request.after_sequence, request.max_progress_rate,
                                    alive=context.is_active)
        try:
            for event in stream:
                yield event_to_proto(event)
        finally:
            stream.close()

    def FetchArtifacts(self, request, context):
        for c in self.service.fetch(request.job_id, list(request.names), request.offset, request.chunk_bytes):
            yield jobs_pb2.ArtifactChunk(name=c.name, offset=c.offset, data=c.data, total_size=c.total_size,
                                         sha256=c.sha256, mime_type=c.mime_type, last=c.last)

    def Describe(self, request, context):
        d = self.service.describe()
        resp = jobs_pb2.JobsDescribeResponse(
            model_roots=d.model_roots, max_image_bytes=d.max_image_bytes, max_image_pixels=d.max_image_pixels,
            max_active_jobs=d.max_active_jobs, active_jobs=d.active_jobs, max_storage_bytes=d.max_storage_bytes,
            storage_bytes=d.storage_bytes, retention_days=d.retention_days, tenant=d.tenant, version=d.version)
        for r in d.recipes:
            resp.recipes.add(name=r.name, description=r.description, min_images=r.min_images,
                             max_images=r.max_images, prompt_required=r.prompt_required, output=r.output, yaml=r.yaml)
        return resp


def register(service: JobsService):
    def _register(server: grpc.Server) -> list[str]:
        jobs_pb2_grpc.add_JobsServiceServicer_to_server(JobsServicer(service), server)
        return [SERVICE_NAME]
    return _register
