"""The gRPC server runtime, observed from outside real `headforge serve face` processes on loopback:
health, reflection, auth, error details, message limits, metrics, graceful shutdown and client retry.
One in-process test covers what cannot be injected into a real process (a handler that raises)."""

from __future__ import annotations

import ctypes
import json
import platform
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families

from headforge.v1 import common_pb2, face_pb2, face_pb2_grpc
from services.common.client import RetryPolicy
from services.common.errors import InvalidArgument, Unauthenticated, Unavailable
from services.common.process import ServiceProcess, free_port
from services.face.client import GrpcFaceClient
from tests.conftest import jpeg_bytes, png_bytes

FACE = "headforge.v1.FaceService"
ANALYZE = f"/{FACE}/Analyze"
DESCRIBE = f"/{FACE}/Describe"
TOKEN, TENANT = "tok-a", "tenant-a"
# Loopback only: never let an http(s)_proxy variable route a test call elsewhere.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_CHANNEL_OPTIONS = [("grpc.enable_http_proxy", 0)]


def channel(address: str) -> grpc.Channel:
    ch = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
    grpc.channel_ready_future(ch).result(timeout=30)
    return ch


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def health_status(ch: grpc.Channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


def scrape(port: int) -> dict[tuple[str, frozenset], float]:
    """Every sample on /metrics as {(name, frozenset(labels.items())): value}."""
    text = _NO_PROXY.open(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def sample(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def analyze_request(data: bytes, options: face_pb2.AnalyzeOptions | None = None) -> face_pb2.AnalyzeRequest:
    return face_pb2.AnalyzeRequest(image=common_pb2.ImageInput(encoded=common_pb2.EncodedImage(data=data)),
                                   options=options or face_pb2.AnalyzeOptions(skip_masks=True, skip_crop=True))


def log_records(server: ServiceProcess) -> list[dict]:
    out = []
    for line in server.log_path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # a non-JSON line (a crash traceback) is not a record
    return out


@pytest.fixture(scope="module")
def small_jpeg(astronaut) -> bytes:
    return jpeg_bytes(astronaut, quality=85)


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    """Tokens file, a metrics port and a 1 MiB message limit, all on one process."""
    d = tmp_path_factory.mktemp("secured")
    tokens = d / "tokens.yaml"
    tokens.write_text(f"tokens:\n  {TOKEN}: {TENANT}\n")
    metrics_port = free_port()
    server = ServiceProcess(["face", "--port", "0", "--max-workers", "4", "--tokens-file", str(tokens),
                             "--metrics-port", str(metrics_port), "--max-message-bytes", str(1 << 20)],
                            d / "face.log", env={"HEADFORGE_TOKENS": ""})
    server.metrics_port = metrics_port
    yield server
    server.stop()


@pytest.fixture(scope="module")
def secured_channel(secured):
    ch = channel(secured.address)
    yield ch
    ch.close()


# Health and reflection ------------------------------------------------------------------------------

def test_health_serving_and_unknown_service_not_found(face_server):
    ch = channel(face_server.address)
    try:
        assert health_status(ch, "") == health_pb2.HealthCheckResponse.SERVING
        assert health_status(ch, FACE) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as info:
            health_status(ch, "headforge.v1.NoSuchService")
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        ch.close()


def test_reflection_lists_services(face_server):
    ch = channel(face_server.address)
    try:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        replies = list(stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
        assert len(replies) == 1
        names = {s.name for s in replies[0].list_services_response.service}
        assert {FACE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names
        # and the descriptors behind the name are served too (what grpcurl needs to build requests)
        replies = list(stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(file_containing_symbol=FACE)]), timeout=10))
        assert replies[0].WhichOneof("message_response") == "file_descriptor_response"
        assert replies[0].file_descriptor_response.file_descriptor_proto
    finally:
        ch.close()


# Auth -------------------------------------------------------------------------------------------------

def test_auth_with_tokens_file(secured, secured_channel):
    stub = face_pb2_grpc.FaceServiceStub(secured_channel)
    request = face_pb2.DescribeRequest()
    for metadata, reason in [((), "NO_TOKEN"), (bearer("tok-wrong"), "BAD_TOKEN"),
                             ((("authorization", TOKEN),), "NO_TOKEN")]:  # not "Bearer ..."
        with pytest.raises(grpc.RpcError) as info:
            stub.Describe(request, metadata=metadata, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        status = rpc_status.from_call(info.value)
        err = common_pb2.ErrorInfo()
        assert status.details[0].Unpack(err) and err.reason == reason
    reply = stub.Describe(request, metadata=bearer(TOKEN), timeout=10)
    assert reply.identity_backend == "dlib" and reply.max_message_bytes == 1 << 20

    # health (and reflection) need no token: probes and grpcurl discovery work without one
    assert health_status(secured_channel, FACE) == health_pb2.HealthCheckResponse.SERVING

    # the typed client carries the token, and maps a missing one to Unauthenticated
    client = GrpcFaceClient(secured.address, token=TOKEN, retry=RetryPolicy(max_attempts=1))
    anonymous = GrpcFaceClient(secured.address, retry=RetryPolicy(max_attempts=1))
    try:
        assert client.describe().embedding_dim == 128
        with pytest.raises(Unauthenticated):
            anonymous.describe()
    finally:
        client.close()
        anonymous.close()

    # the structured access log attributes the authorised call to its tenant
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        records = [r for r in log_records(secured) if r.get("msg") == "rpc" and r.get("method") == DESCRIBE]
        if any(r.get("code") == "OK" for r in records):
            break
        time.sleep(0.1)
    ok = [r for r in records if r["code"] == "OK"]
    assert ok and all(r["tenant"] == TENANT for r in ok), records
    assert all(r["service"] == "face" and r["level"] == "info" and "ms" in r for r in records)
    assert any(r["code"] == "UNAUTHENTICATED" for r in records)
    assert not any(r.get("tenant") == TENANT and r["code"] == "UNAUTHENTICATED" for r in records)


# Errors -----------------------------------------------------------------------------------------------

def test_invalid_argument_carries_error_info(face_server):
    ch = channel(face_server.address)
    try:
        stub = face_pb2_grpc.FaceServiceStub(ch)
        with pytest.raises(grpc.RpcError) as info:
            stub.Analyze(analyze_request(b"\x00garbage, not an image" * 10), timeout=30)
        err = info.value
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        status = rpc_status.from_call(err)
        assert status is not None and status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert status.message == err.details()
        infos = [d for d in status.details if d.Is(common_pb2.ErrorInfo.DESCRIPTOR)]
        assert len(infos) == 1
        detail = common_pb2.ErrorInfo()
        infos[0].Unpack(detail)
        assert detail.reason == "IMAGE_UNDECODABLE"
        assert [v.field for v in detail.field_violations] == ["image.encoded.data"]
        assert detail.field_violations[0].description
    finally:
        ch.close()

    client = GrpcFaceClient(face_server.address, retry=RetryPolicy(max_attempts=1))
    try:
        with pytest.raises(InvalidArgument) as info:
            client.analyze(b"\x00garbage, not an image" * 10)
    finally:
        client.close()
    assert info.value.field == "image.encoded.data" and info.value.reason == "IMAGE_UNDECODABLE"
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_message_over_limit_is_resource_exhausted_and_server_stays_up(secured, secured_channel, small_jpeg):
    stub = face_pb2_grpc.FaceServiceStub(secured_channel)
    big = analyze_request(small_jpeg + b"\0" * (2 << 20))
    assert big.ByteSize() > 2 << 20
    with pytest.raises(grpc.RpcError) as info:
        stub.Analyze(big, metadata=bearer(TOKEN), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert secured.proc.poll() is None
    assert health_status(secured_channel, FACE) == health_pb2.HealthCheckResponse.SERVING
    # a request under the limit on the same channel is served normally
    reply = stub.Analyze(analyze_request(small_jpeg), metadata=bearer(TOKEN), timeout=60)
    assert len(reply.faces) == 1 and reply.image_width == 512


# Metrics ----------------------------------------------------------------------------------------------

def test_metrics_count_calls_errors_and_latency(secured, secured_channel, small_jpeg):
    stub = face_pb2_grpc.FaceServiceStub(secured_channel)
    labels = {"service": "face", "method": ANALYZE}
    before = scrape(secured.metrics_port)
    n_ok = 3
    for _ in range(n_ok):
        assert len(stub.Analyze(analyze_request(small_jpeg), metadata=bearer(TOKEN), timeout=60).faces) == 1
    with pytest.raises(grpc.RpcError) as info:
        stub.Analyze(analyze_request(b"not an image"), metadata=bearer(TOKEN), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = scrape(secured.metrics_port)

    def delta(name, **extra):
        return sample(after, name, **labels, **extra) - sample(before, name, **labels, **extra)

    assert delta("headforge_rpc_calls_total", code="OK") == n_ok
    assert delta("headforge_rpc_calls_total", code="INVALID_ARGUMENT") == 1
    assert delta("headforge_rpc_errors_total", code="INVALID_ARGUMENT") == 1
    assert delta("headforge_rpc_errors_total", code="OK") == 0, "successes are not errors"
    assert delta("headforge_rpc_latency_seconds_count") == n_ok + 1
    assert delta("headforge_rpc_latency_seconds_sum") > 0
    buckets = {dict(k[1])["le"]: v for k, v in after.items()
               if k[0] == "headforge_rpc_latency_seconds_bucket" and dict(k[1])["method"] == ANALYZE}
    assert buckets["+Inf"] == sample(after, "headforge_rpc_latency_seconds_count", **labels)
    assert [buckets[le] for le in sorted(buckets, key=float)] == sorted(buckets.values()), "cumulative"
    assert sample(after, "headforge_rpc_in_flight", **labels) == 0


# Graceful shutdown ------------------------------------------------------------------------------------
#
# POSIX lets the kernel hand a process-directed SIGTERM (kill PID) to any thread that does not block it.
# The drain tests below deliver it to the main thread (tgkill), the common case, so that they test
# draining deterministically; test_sigterm_taken_by_another_thread_still_drains covers the other case.

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_TGKILL = {"x86_64": 234, "aarch64": 131}.get(platform.machine(), 234)  # Linux syscall number


def sigterm_thread(pid: int, tid: int) -> None:
    if _libc.syscall(_SYS_TGKILL, pid, tid, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), f"tgkill({pid}, {tid}, SIGTERM) failed")


def sigterm_main_thread(server: ServiceProcess) -> float:
    sigterm_thread(server.proc.pid, server.proc.pid)
    return time.monotonic()


def wait_for_log(server: ServiceProcess, msg: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(r.get("msg") == msg for r in log_records(server)):
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="module")
def slow_request(astronaut) -> face_pb2.AnalyzeRequest:
    """A 2048x2048 PNG of 16 tiled astronauts analysed with upsample 2: several seconds of work."""
    tiled = np.tile(astronaut, (4, 4, 1))
    return face_pb2.AnalyzeRequest(
        image=common_pb2.ImageInput(encoded=common_pb2.EncodedImage(data=png_bytes(tiled))),
        options=face_pb2.AnalyzeOptions(upsample=2, skip_masks=True, skip_crop=True))


def test_sigterm_drains_in_flight_calls_then_exits_zero(tmp_path, slow_request):
    grace_s = 20.0
    metrics_port = free_port()
    server = ServiceProcess(["face", "--port", "0", "--grace-s", str(grace_s), "--metrics-port", str(metrics_port)],
                            tmp_path / "face.log")
    try:
        ch = channel(server.address)
        stub = face_pb2_grpc.FaceServiceStub(ch)
        box: dict = {}

        def slow_call():
            try:
                box["reply"] = stub.Analyze(slow_request, timeout=120)
            except grpc.RpcError as err:
                box["error"] = err
            box["done"] = time.monotonic()

        worker = threading.Thread(target=slow_call, daemon=True)
        worker.start()
        labels = {"service": "face", "method": ANALYZE}
        deadline = time.monotonic() + 30
        while sample(scrape(metrics_port), "headforge_rpc_in_flight", **labels) < 1:
            assert time.monotonic() < deadline and worker.is_alive(), "the slow call never got in flight"
            time.sleep(0.02)
        time.sleep(0.3)  # well inside the call (it takes seconds)
        assert worker.is_alive(), f"the call finished too quickly to test draining ({box})"

        sigterm_at = sigterm_main_thread(server)
        assert wait_for_log(server, "draining", 5), "SIGTERM did not start the drain"
        assert worker.is_alive(), "the in-flight call was cut off (or finished) as the drain started"
        # new calls are refused while the in-flight one drains
        with pytest.raises(grpc.RpcError) as info:
            stub.Describe(face_pb2.DescribeRequest(), timeout=5)
        assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), info.value
        with pytest.raises(grpc.RpcError):
            health_status(ch, FACE)  # the listener is closed: probes see the server go away

        worker.join(grace_s + 10)
        assert "error" not in box, f"the in-flight call failed: {box.get('error')}"
        assert len(box["reply"].faces) == 16 and box["reply"].image_width == 2048
        rc = server.proc.wait(timeout=grace_s + 10)
        exited_after = time.monotonic() - sigterm_at
        assert rc == 0
        assert exited_after < grace_s, f"exit took {exited_after:.1f}s, beyond the grace period"
        assert box["done"] - sigterm_at > 0.5, "the drain waited for the in-flight call"
        messages = [r.get("msg") for r in log_records(server)]
        assert messages[-1] == "stopped"
        ok = [r for r in log_records(server) if r.get("method") == ANALYZE and r.get("code") == "OK"]
        assert len(ok) == 1, "the drained call was logged as OK"
        ch.close()
    finally:
        server.stop()


def _sigterm_during_slow_call(tmp_path, slow_request, grace_s: str):
    """Start a server, get the slow call in flight, SIGTERM it. Returns (server, future, sigterm time)."""
    server = ServiceProcess(["face", "--port", "0", "--grace-s", grace_s], tmp_path / "face.log")
    ch = channel(server.address)
    future = face_pb2_grpc.FaceServiceStub(ch).Analyze.future(slow_request, timeout=120)
    time.sleep(1.0)
    assert not future.done(), "the call finished too quickly to test shutdown"
    return server, future, sigterm_main_thread(server)


def test_sigterm_past_grace_cancels_in_flight_calls(tmp_path, slow_request):
    """The other side of the contract: past the grace period in-flight calls are cut, not waited on."""
    server, future, sigterm_at = _sigterm_during_slow_call(tmp_path, slow_request, "0")
    try:
        assert future.exception(timeout=30) is not None
        assert future.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert time.monotonic() - sigterm_at < 2.0, "the client heard of the cancellation promptly"
        assert wait_for_log(server, "stopped", 5)
    finally:
        _kill(server)  # its exit code is test_process_exits_promptly_once_grace_has_passed's business


def _kill(server: ServiceProcess) -> None:
    if server.proc.poll() is None:
        server.proc.kill()
    server.stop()


def test_process_exits_promptly_once_grace_has_passed(tmp_path, slow_request):
    """Past the grace period the process leaves even though a cancelled handler is still computing in a
    worker thread (Python cannot stop it, and the interpreter would join it at exit): exit time is
    bounded by --grace-s, not by handler work. Here the slow call has seconds of detector work left when
    SIGTERM arrives with --grace-s 0."""
    server, future, sigterm_at = _sigterm_during_slow_call(tmp_path, slow_request, "0")
    try:
        try:
            rc = server.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            rc = None
        assert rc == 0, f"still running {time.monotonic() - sigterm_at:.1f}s after SIGTERM with --grace-s 0"
    finally:
        _kill(server)


def test_sigterm_taken_by_another_thread_still_drains(tmp_path):
    """CPython runs Python signal handlers only on the main thread, when it executes bytecode. A SIGTERM
    the kernel hands to another thread (POSIX allows that for `kill PID`; it happened to about a third of
    the SIGTERMs sent while new calls arrived during a long call) must still start the drain, so the main
    thread must not sleep in an untimed wait."""
    server = ServiceProcess(["face", "--port", "0", "--grace-s", "5"], tmp_path / "face.log")
    try:
        pid = server.proc.pid

        def threads() -> dict[int, str]:
            return {int(p.name): (p / "comm").read_text().strip() for p in Path(f"/proc/{pid}/task").iterdir()}

        before = threads()
        ch = channel(server.address)
        face_pb2_grpc.FaceServiceStub(ch).Describe(face_pb2.DescribeRequest(), timeout=10)
        ch.close()
        # the first call started a handler thread; now idle, it is one the kernel may pick for kill PID
        handler_threads = sorted(tid for tid, name in threads().items() if tid not in before and name == "python")
        assert handler_threads, "the first call started a handler thread"
        sigterm_thread(pid, handler_threads[0])
        try:
            rc = server.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            rc = None
        assert rc == 0, "SIGTERM delivered to a non-main thread did not stop the server within 3 s"
    finally:
        _kill(server)


# Client retry -----------------------------------------------------------------------------------------

def test_client_retries_until_the_server_comes_up(tmp_path):
    port = free_port()
    client = GrpcFaceClient(f"127.0.0.1:{port}", timeout_s=10,
                            retry=RetryPolicy(max_attempts=1000, max_backoff_s=0.5, budget_s=60))
    box: dict = {}

    def call():
        try:
            box["reply"] = client.describe()
        except Exception as e:  # noqa: BLE001  (reported by the assertions below)
            box["error"] = e
        box["done"] = time.monotonic()

    worker = threading.Thread(target=call, daemon=True)
    started = time.monotonic()
    worker.start()
    time.sleep(1.0)
    assert worker.is_alive(), f"gave up while nothing listened: {box}"
    server = ServiceProcess(["face", "--port", str(port)], tmp_path / "face.log")
    try:
        worker.join(60)
        assert "error" not in box, box.get("error")
        assert box["reply"].identity_backend == "dlib"
        assert box["done"] - started < 60
    finally:
        client.close()
        server.stop()


def test_client_gives_up_with_unavailable_on_a_dead_port():
    port = free_port()
    client = GrpcFaceClient(f"127.0.0.1:{port}", timeout_s=5,
                            retry=RetryPolicy(max_attempts=3, initial_backoff_s=0.05, budget_s=1.0))
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable) as info:
            client.describe()
        assert time.monotonic() - started < 3.0
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        client.close()


# A handler bug (in-process) ---------------------------------------------------------------------------

def test_handler_bug_is_internal_with_incident_and_server_survives(caplog, monkeypatch):
    from services.common.server import ServerConfig, start

    monkeypatch.delenv("HEADFORGE_TOKENS", raising=False)
    calls = {"describe": 0}

    class Buggy(face_pb2_grpc.FaceServiceServicer):
        def Describe(self, request, context):
            calls["describe"] += 1
            if calls["describe"] == 1:
                raise RuntimeError("boom: a bug in the handler")
            return face_pb2.DescribeResponse(identity_backend="fine", embedding_dim=7)

        def Compare(self, request, context):
            return {}["missing"]  # KeyError

    def register(server):
        face_pb2_grpc.add_FaceServiceServicer_to_server(Buggy(), server)
        return [FACE]

    running = start("buggy", ServerConfig(port=0, grace_s=0, max_workers=2), register)
    ch = channel(f"127.0.0.1:{running.port}")
    try:
        stub = face_pb2_grpc.FaceServiceStub(ch)
        with caplog.at_level("ERROR", logger="headforge.rpc"):
            with pytest.raises(grpc.RpcError) as info:
                stub.Describe(face_pb2.DescribeRequest(), timeout=10)
        err = info.value
        assert err.code() == grpc.StatusCode.INTERNAL
        assert "incident" in err.details() and "boom" not in err.details(), "no internals leak to the client"
        incident = err.details().split("incident ")[1].split(")")[0]
        status = rpc_status.from_call(err)
        detail = common_pb2.ErrorInfo()
        assert status.details[0].Unpack(detail) and detail.reason == "INTERNAL"
        logged = [r for r in caplog.records if getattr(r, "incident", None) == incident]
        assert len(logged) == 1 and logged[0].exc_info[0] is RuntimeError
        assert logged[0].method == DESCRIBE

        # the same server goes on serving: the next call works, another buggy method is INTERNAL again
        reply = stub.Describe(face_pb2.DescribeRequest(), timeout=10)
        assert reply.identity_backend == "fine" and reply.embedding_dim == 7
        with pytest.raises(grpc.RpcError) as info:
            stub.Compare(face_pb2.CompareRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.INTERNAL and "incident" in info.value.details()
        # a method the servicer leaves to the generated base class is UNIMPLEMENTED, not INTERNAL
        with pytest.raises(grpc.RpcError) as info:
            stub.Analyze(face_pb2.AnalyzeRequest(), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert health_status(ch, FACE) == health_pb2.HealthCheckResponse.SERVING
    finally:
        ch.close()
        running.stop()
