"""The client side of the gRPC transport: channels, auth metadata, deadlines, retry with backoff.

Every service's gRPC client builds on GrpcTransport.call(); failures come back as the same
HeadForgeError subclasses the in-process implementation raises.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.auth import ACT_FOR_HEADER
from services.common.errors import DeadlineExceeded, Unavailable, from_rpc_error
from services.common.server import channel_options

INPROCESS = "inprocess"  # the endpoint that every service's client.connect() answers with an in-process client


@dataclass
class RetryPolicy:
    """Retry calls that fail with UNAVAILABLE (server restarting, not yet up), and RESOURCE_EXHAUSTED
    errors whose reason is listed in retry_reasons (e.g. the guidance queue's "QUEUE_FULL"), with
    exponential backoff and full jitter. Gives up after max_attempts or once budget_s seconds have passed
    since the first attempt, whichever comes first."""

    max_attempts: int = 8
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    multiplier: float = 2.0
    budget_s: float = 60.0
    retry_reasons: tuple[str, ...] = ()

    def backoff(self, attempt: int) -> float:
        cap = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** attempt)
        return random.uniform(0, cap)


@dataclass(frozen=True)
class ServiceCredentials:
    """A HeadForge component's service token acting for one tenant: the calls carry the token and
    ACT_FOR_HEADER, and the services treat them as that tenant's (services.common.auth)."""

    token: str
    tenant: str


class GrpcTransport:
    """One channel to one service address, with a token, a default deadline and a retry policy."""

    def __init__(self, target: str, *, token: "str | ServiceCredentials | None" = None, timeout_s: float = 60.0,
                 retry: RetryPolicy | None = None, max_message_bytes: int = 64 * 1024 * 1024):
        self.target = target
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        if isinstance(token, ServiceCredentials):
            self.metadata = (("authorization", f"Bearer {token.token}"), (ACT_FOR_HEADER, token.tenant))
        else:
            self.metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self.channel = grpc.insecure_channel(target, options=channel_options(max_message_bytes))

    def call(self, method, request, *, timeout_s: float | None = None):
        """Invoke a unary stub method; retries UNAVAILABLE, raises HeadForgeError on failure."""
        timeout = self.timeout_s if timeout_s is None else timeout_s
        first = time.monotonic()
        attempt = 0
        while True:
            try:
                return method(request, timeout=timeout, metadata=self.metadata)
            except grpc.RpcError as err:
                retryable = err.code() == grpc.StatusCode.UNAVAILABLE or (
                    err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and self.retry.retry_reasons
                    and from_rpc_error(err).reason in self.retry.retry_reasons)
                attempt += 1
                elapsed = time.monotonic() - first
                if not retryable or attempt >= self.retry.max_attempts or elapsed >= self.retry.budget_s:
                    raise from_rpc_error(err) from None
                time.sleep(min(self.retry.backoff(attempt), max(0.0, self.retry.budget_s - elapsed)))

    def wait_ready(self, service: str = "", timeout_s: float = 30.0) -> None:
        """Block until the server reports SERVING for `service` ("" = the whole server)."""
        stub = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout_s
        last = None
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last = f"status {reply.status}"
            except grpc.RpcError as err:
                last = f"{err.code().name}: {err.details()}"
            time.sleep(0.1)
        raise (Unavailable if last else DeadlineExceeded)(
            f"{self.target} not serving after {timeout_s}s ({last})")

    def close(self) -> None:
        self.channel.close()
