"""The gRPC server runtime every HeadForge service runs on.

Health checking and reflection, message size limits, a bound on concurrent calls, auth + metrics +
error mapping (interceptor.py), Prometheus on an HTTP port, and graceful shutdown: on SIGTERM/SIGINT
the health status turns NOT_SERVING, new calls are refused and in-flight calls get `grace_s` to finish.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server
from pydantic import BaseModel, Field

from services.common import auth
from services.common.errors import FailedPrecondition

log = logging.getLogger("headforge.server")


class ServerConfig(BaseModel):
    """How a service process listens. Every field has a `headforge serve` flag of the same name."""

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535, description="0 = pick a free port")
    max_message_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_workers: int = Field(8, ge=1, le=256)
    max_concurrent_rpcs: int = Field(64, ge=1, description="calls beyond this get RESOURCE_EXHAUSTED")
    grace_s: float = Field(30.0, ge=0, description="time in-flight calls get to finish on shutdown")
    metrics_port: int | None = Field(None, ge=0, le=65535, description="Prometheus /metrics port")
    tokens_file: str | None = Field(None, description="YAML {tokens: {TOKEN: TENANT}}; none = local mode")


def add_server_arguments(parser, *, default_max_workers: int = 8) -> None:
    """The flags every `headforge serve NAME` takes (one per ServerConfig field, plus --log-level)."""
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=50051, help="0 = any free port (printed on stdout)")
    parser.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics here")
    parser.add_argument("--tokens-file", default=None, help="YAML {tokens: {TOKEN: TENANT}}; none = local mode")
    parser.add_argument("--max-workers", type=int, default=default_max_workers,
                        help=f"handler threads (default {default_max_workers})")
    parser.add_argument("--max-message-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--grace-s", type=float, default=30.0, help="drain time on SIGTERM")
    parser.add_argument("--log-level", default="INFO")


def server_config(args) -> ServerConfig:
    """The ServerConfig of parsed add_server_arguments flags. A bad tokens file fails here, before the
    service loads anything (auth.TokenStore.load: FailedPrecondition)."""
    auth.TokenStore.load(args.tokens_file)
    return ServerConfig(host=args.host, port=args.port, metrics_port=args.metrics_port, tokens_file=args.tokens_file,
                        max_workers=args.max_workers, max_message_bytes=args.max_message_bytes, grace_s=args.grace_s)


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)]


@dataclass
class RunningServer:
    server: grpc.Server
    health: health.HealthServicer
    port: int
    grace_s: float

    def stop(self) -> None:
        """Refuse new calls, let in-flight ones finish within grace_s, then stop."""
        self.health.enter_graceful_shutdown()
        self.server.stop(self.grace_s).wait()


def start(
    name: str,
    config: ServerConfig,
    register: Callable[[grpc.Server], list[str]],
) -> RunningServer:
    """Build and start a server. `register(server)` adds servicers and returns their full service names
    (e.g. ["headforge.v1.FaceService"]) for health and reflection."""
    from services.common.interceptor import ServiceInterceptor

    tokens = auth.TokenStore.load(config.tokens_file)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix=name),
        interceptors=[ServiceInterceptor(name, tokens)],
        # no SO_REUSEPORT: a second server on a busy port must fail, not silently share it
        options=[*channel_options(config.max_message_bytes), ("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    service_names = register(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server)
    try:
        port = server.add_insecure_port(f"{config.host}:{config.port}")
    except RuntimeError:   # grpc's "Failed to bind": in use, or not an address of this host
        port = 0
    if port == 0:
        raise FailedPrecondition(f"cannot listen on {config.host}:{config.port}: the port is in use (or the "
                                 "address is not this machine's); pick another with --port (0 = any free port)",
                                 reason="PORT_IN_USE")
    if config.metrics_port is not None:
        try:
            start_http_server(config.metrics_port, addr=config.host)
        except OSError as e:
            server.stop(0)
            raise FailedPrecondition(f"cannot serve /metrics on {config.host}:{config.metrics_port}: {e.strerror}; "
                                     "pick another --metrics-port", reason="PORT_IN_USE") from None
    server.start()
    for full_name in ["", *service_names]:
        health_servicer.set(full_name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving", extra={"address": f"{config.host}:{port}", "local_mode": tokens.local_mode})
    return RunningServer(server, health_servicer, port, config.grace_s)


def serve_forever(name: str, config: ServerConfig, register: Callable[[grpc.Server], list[str]],
                  on_drain: Callable[[], None] | None = None, on_stop: Callable[[], None] | None = None) -> int:
    """Run a service until SIGTERM/SIGINT, then drain. Prints one JSON line on stdout when ready:
    {"event": "serving", "service": NAME, "address": "HOST:PORT"} (tests and supervisors read it).
    on_drain runs when the drain starts (e.g. the jobs service ends its open watch streams so clients
    reconnect elsewhere), on_stop after it, before the process exits (e.g. it stops its runtime)."""
    running = start(name, config, register)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(json.dumps({"event": "serving", "service": name, "address": f"{config.host}:{running.port}",
                      "metrics_port": config.metrics_port}), flush=True)
    # A timed wait: CPython runs signal handlers on the main thread only when it executes bytecode, so
    # an untimed wait would miss a SIGTERM the kernel delivered to another thread.
    while not stop.wait(0.5):
        pass
    log.info("draining", extra={"grace_s": config.grace_s})
    if on_drain is not None:
        try:
            on_drain()
        except Exception:
            log.exception("on_drain failed")
    running.stop()
    if on_stop is not None:
        try:
            on_stop()
        except Exception:
            log.exception("on_stop failed")
    log.info("stopped")
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    logging.shutdown()
    # Handlers cancelled at the end of the grace period may still be computing in worker threads that
    # the interpreter would join at exit: leave now, the grace period is the contract.
    os._exit(0)
