"""The jobs service's one client interface, with an in-process and a gRPC implementation.

    client = InProcessJobsClient(JobsService(config), tenant="alice")   # embedded
    client = GrpcJobsClient("127.0.0.1:50051", token="...")             # a `headforge serve jobs` process
    job = client.submit(["me.jpg"], recipe="sds_gaussians", options={"stages.optimise.iterations": "100"})
    for event in client.watch(job.id):
        ...
    paths = client.fetch(job.id, dest_dir="out/")

Both return orchestrator.jobs.types records and raise HeadForgeError subclasses. fetch() downloads to
`<dest>/<name>.part`, checks the sha256 and renames; a .part file left by an interrupted download is
resumed from its size.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator

import grpc

from headforge.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc
from orchestrator.jobs import servicer as conv
from orchestrator.jobs.artifacts import validate_name
from orchestrator.jobs.service import JobsService
from orchestrator.jobs.types import ArtifactChunk, JobEvent, JobRecord, JobsDescription, SubmitRequest
from services.common import auth
from services.common.client import GrpcTransport, RetryPolicy
from services.common.errors import HeadForgeError, from_rpc_error


class ChecksumMismatch(HeadForgeError):
    """A downloaded artifact's sha256 differs from the one the server announced."""

    code = grpc.StatusCode.DATA_LOSS


def _image_bytes(image) -> bytes:
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    return bytes(image)


def _submit_request(images, recipe, recipe_yaml, prompt, options, models_dir, priority, display_name, labels,
                    idempotency_key) -> SubmitRequest:
    return SubmitRequest(recipe_name=recipe, recipe_yaml=recipe_yaml, images=[_image_bytes(i) for i in images],
                         prompt=prompt, options=dict(options or {}), models_dir=models_dir, priority=priority,
                         display_name=display_name, labels=dict(labels or {}), idempotency_key=idempotency_key)


def write_artifacts(chunks: Iterable[ArtifactChunk], dest_dir: Path, resumed: dict[str, int] | None = None) -> list[Path]:
    """Write a FetchArtifacts chunk stream under dest_dir (names as relative paths), verifying each artifact's
    sha256. Chunks go to NAME.part (appended to from `resumed[name]` bytes) until the last one arrives."""
    dest_dir = Path(dest_dir)
    paths: list[Path] = []
    current, f, expected = None, None, 0
    try:
        for c in chunks:
            if c.name != current:
                validate_name(c.name)       # the server's names become local paths: never outside dest_dir
                current = c.name
                part = dest_dir / (c.name + ".part")
                part.parent.mkdir(parents=True, exist_ok=True)
                start = (resumed or {}).get(c.name, 0)
                f = open(part, "r+b" if start else "wb")
                f.truncate(start)
                f.seek(start)
                expected = start
            if c.offset != expected:
                raise ChecksumMismatch(f"{c.name}: chunk at offset {c.offset}, expected {expected}",
                                       reason="CHUNK_OUT_OF_ORDER")
            f.write(c.data)
            expected += len(c.data)
            if c.last:
                f.close()
                f = None
                part = dest_dir / (c.name + ".part")
                digest = hashlib.sha256()
                with open(part, "rb") as check:
                    while block := check.read(1 << 20):
                        digest.update(block)
                if expected != c.total_size or digest.hexdigest() != c.sha256:
                    part.unlink()
                    raise ChecksumMismatch(f"{c.name}: downloaded {expected} bytes with sha256 "
                                           f"{digest.hexdigest()}, the server announced {c.total_size} bytes with "
                                           f"{c.sha256}", reason="CHECKSUM_MISMATCH")
                final = dest_dir / c.name
                os.replace(part, final)
                paths.append(final)
                current = None
    finally:
        if f is not None:
            f.close()
    return paths


class _JobsClientBase:
    """fetch() on top of get() and fetch_chunks(), shared by both clients."""

    def get(self, job_id: str) -> JobRecord:
        raise NotImplementedError

    def fetch_chunks(self, job_id: str, names: list[str] = (), offset: int = 0,
                     chunk_bytes: int = 0) -> Iterator[ArtifactChunk]:
        """The raw FetchArtifacts stream (chunks in order, `last` on each artifact's final one)."""
        raise NotImplementedError

    def fetch(self, job_id: str, names: Iterable[str] = (), dest_dir: str | Path = ".",
              chunk_bytes: int = 0) -> list[Path]:
        """Download artifacts (all complete ones when names is empty) to dest_dir; returns their paths.
        Resumes NAME.part files left by an interrupted download."""
        dest = Path(dest_dir)
        names = list(names) or [a.name for a in self.get(job_id).artifacts]
        for n in names:
            validate_name(n)
        partial = {n: (dest / (n + ".part")).stat().st_size for n in names if (dest / (n + ".part")).is_file()}
        paths: list[Path] = []
        fresh = [n for n in names if n not in partial]
        if fresh:
            paths += write_artifacts(self.fetch_chunks(job_id, fresh, 0, chunk_bytes), dest)
        for n, size in partial.items():
            paths += write_artifacts(self.fetch_chunks(job_id, [n], size, chunk_bytes), dest, {n: size})
        order = {n: i for i, n in enumerate(names)}
        return sorted(paths, key=lambda p: order[p.relative_to(dest).as_posix()])


class InProcessJobsClient(_JobsClientBase):
    """Plain calls on a JobsService in this process, as `tenant` (default: the caller's current tenant)."""

    def __init__(self, service: JobsService, tenant: str | None = None):
        self.service = service
        self.tenant = tenant

    @contextlib.contextmanager
    def _as_tenant(self):
        if self.tenant is None:
            yield
            return
        token = auth.set_tenant(self.tenant)
        try:
            yield
        finally:
            auth.reset_tenant(token)

    def submit(self, images=(), *, recipe: str = "", recipe_yaml: str = "", prompt: str = "", options=None,
               models_dir: str = "", priority: int = 0, display_name: str = "", labels=None,
               idempotency_key: str = "") -> JobRecord:
        with self._as_tenant():
            return self.service.submit(_submit_request(images, recipe, recipe_yaml, prompt, options, models_dir,
                                                       priority, display_name, labels, idempotency_key))

    def get(self, job_id: str) -> JobRecord:
        with self._as_tenant():
            return self.service.get(job_id)

    def list(self, states=(), recipe: str = "", labels=None, page_size: int = 0,
             page_token: str = "") -> tuple[list[JobRecord], str]:
        with self._as_tenant():
            return self.service.list(list(states), recipe, dict(labels or {}), page_size, page_token)

    def cancel(self, job_id: str) -> JobRecord:
        with self._as_tenant():
            return self.service.cancel(job_id)

    def watch(self, job_id: str, after_sequence: int = 0, max_progress_rate: float = 0.0) -> Iterator[JobEvent]:
        with self._as_tenant():
            return self.service.watch(job_id, after_sequence, max_progress_rate)

    def fetch_chunks(self, job_id, names=(), offset=0, chunk_bytes=0):
        with self._as_tenant():
            return self.service.fetch(job_id, names, offset, chunk_bytes)

    def describe(self) -> JobsDescription:
        with self._as_tenant():
            return self.service.describe()

    def close(self) -> None:
        pass


class GrpcJobsClient(_JobsClientBase):
    """The same interface over gRPC (a `headforge serve jobs` process)."""

    def __init__(self, target: str, *, token: str | None = None, timeout_s: float = 60.0,
                 retry: RetryPolicy | None = None):
        self.transport = GrpcTransport(target, token=token, timeout_s=timeout_s, retry=retry)
        self.stub = jobs_pb2_grpc.JobsServiceStub(self.transport.channel)

    def submit(self, images=(), *, recipe: str = "", recipe_yaml: str = "", prompt: str = "", options=None,
               models_dir: str = "", priority: int = 0, display_name: str = "", labels=None,
               idempotency_key: str = "") -> JobRecord:
        r = _submit_request(images, recipe, recipe_yaml, prompt, options, models_dir, priority, display_name, labels,
                            idempotency_key)
        req = jobs_pb2.SubmitJobRequest(images=[common_pb2.EncodedImage(data=d) for d in r.images], prompt=r.prompt,
                                        options=r.options, models_dir=r.models_dir, priority=r.priority,
                                        display_name=r.display_name, labels=r.labels,
                                        idempotency_key=r.idempotency_key)
        if r.recipe_yaml:
            req.recipe_yaml = r.recipe_yaml
        if r.recipe_name:
            req.recipe_name = r.recipe_name
        # Submit is safe to retry only with an idempotency key; the transport retries UNAVAILABLE (the call
        # never reached the server, or the server is restarting)
        return conv.job_from_proto(self.transport.call(self.stub.Submit, req))

    def get(self, job_id: str) -> JobRecord:
        return conv.job_from_proto(self.transport.call(self.stub.Get, jobs_pb2.GetJobRequest(job_id=job_id)))

    def list(self, states=(), recipe: str = "", labels=None, page_size: int = 0,
             page_token: str = "") -> tuple[list[JobRecord], str]:
        req = jobs_pb2.ListJobsRequest(states=[conv.JOB_STATES[s] for s in states], recipe=recipe,
                                       labels=dict(labels or {}), page_size=page_size, page_token=page_token)
        resp = self.transport.call(self.stub.List, req)
        return [conv.job_from_proto(j) for j in resp.jobs], resp.next_page_token

    def cancel(self, job_id: str) -> JobRecord:
        return conv.job_from_proto(self.transport.call(self.stub.Cancel, jobs_pb2.CancelJobRequest(job_id=job_id)))

    def _stream(self, method, request, convert: Callable, timeout_s: float | None) -> Iterator:
        call = method(request, timeout=timeout_s, metadata=self.transport.metadata)
        try:
            for msg in call:
                yield convert(msg)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None
        finally:
            call.cancel()

    def watch(self, job_id: str, after_sequence: int = 0, max_progress_rate: float = 0.0,
              timeout_s: float | None = None, reconnect: bool = True) -> Iterator[JobEvent]:
        """Events until the job is terminal (no deadline unless timeout_s). Errors surface on iteration.
        reconnect: when the stream breaks with UNAVAILABLE (server restarting or draining), call again with
        after_sequence = the highest sequence seen, with the transport's retry policy; the new stream starts
        with a fresh snapshot, then replays the state/stage/artifact events that were missed."""
        return self._watch(job_id, after_sequence, max_progress_rate, timeout_s, reconnect)

    def _watch(self, job_id, after_sequence, max_progress_rate, timeout_s, reconnect) -> Iterator[JobEvent]:
        seen, attempt, first_failure = after_sequence, 0, None
        retry = self.transport.retry
        while True:
            req = jobs_pb2.WatchProgressRequest(job_id=job_id, after_sequence=seen,
                                                max_progress_rate=max_progress_rate)
            call = self.stub.WatchProgress(req, timeout=timeout_s, metadata=self.transport.metadata)
            try:
                for msg in call:
                    event = conv.event_from_proto(msg)
                    attempt, first_failure = 0, None
                    seen = max(seen, event.sequence)
                    yield event
                return
            except grpc.RpcError as err:
                now = time.monotonic()
                first_failure = first_failure or now
                attempt += 1
                if (not reconnect or err.code() != grpc.StatusCode.UNAVAILABLE or attempt >= retry.max_attempts
                        or now - first_failure >= retry.budget_s):
                    raise from_rpc_error(err) from None
                time.sleep(retry.backoff(attempt))
            finally:
                call.cancel()

    def fetch_chunks(self, job_id, names=(), offset=0, chunk_bytes=0):
        req = jobs_pb2.FetchArtifactsRequest(job_id=job_id, names=list(names), offset=offset, chunk_bytes=chunk_bytes)
        return self._stream(self.stub.FetchArtifacts, req, conv.chunk_from_proto, None)

    def describe(self) -> JobsDescription:
        return conv.describe_from_proto(self.transport.call(self.stub.Describe, jobs_pb2.JobsDescribeRequest()))

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        self.transport.wait_ready(conv.SERVICE_NAME, timeout_s)

    def close(self) -> None:
        self.transport.close()
