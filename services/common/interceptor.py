"""The server interceptor every service runs behind: auth, error mapping, metrics and access logs.

Service code raises services.common.errors.HeadForgeError; this turns it into a gRPC status with
ErrorInfo details. Any other exception becomes INTERNAL with an incident id in the message and the
traceback in the log: a bug in one handler never takes the server down.
"""

from __future__ import annotations

import logging
import time
import uuid

import grpc
from grpc_status import rpc_status

from services.common import auth, metrics
from services.common.errors import HeadForgeError, Internal, InvalidArgument

log = logging.getLogger("headforge.rpc")

# Standard infrastructure services: reachable without a token (probes, grpcurl discovery).
_OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class _Call:
    """Bookkeeping for one RPC: tenant, metrics and the final status."""

    def __init__(self, service: str, method: str, tokens: auth.TokenStore, context):
        self.service, self.method, self.context = service, method, context
        self.open = method.startswith(_OPEN_PREFIXES)
        self.tokens = tokens
        self.code = grpc.StatusCode.OK
        self.start = time.perf_counter()
        self.tenant_token = None

    def enter(self) -> None:
        metrics.RPC_IN_FLIGHT.labels(self.service, self.method).inc()
        tenant = auth.LOCAL_TENANT if self.open else self.tokens.tenant_for(self.context.invocation_metadata())
        self.tenant_token = auth.set_tenant(tenant)

    def fail(self, exc: BaseException) -> None:
        """Record the failure and abort the RPC with the right status (raises)."""
        if not isinstance(exc, HeadForgeError):
            incident = uuid.uuid4().hex[:12]
            log.error("unhandled error", exc_info=exc,
                      extra={"method": self.method, "incident": incident})
            exc = Internal(f"internal error (incident {incident}); the server log has the details",
                           reason="INTERNAL")
        self.code = exc.code
        self.context.abort_with_status(rpc_status.to_status(exc.to_status()))

    def exit(self) -> None:
        elapsed = time.perf_counter() - self.start
        metrics.RPC_IN_FLIGHT.labels(self.service, self.method).dec()
        metrics.RPC_LATENCY.labels(self.service, self.method).observe(elapsed)
        code = self.code.name
        metrics.RPC_CALLS.labels(self.service, self.method, code).inc()
        if self.code != grpc.StatusCode.OK:
            metrics.RPC_ERRORS.labels(self.service, self.method, code).inc()
        if not self.open:
            tenant = auth.current_tenant() if self.tenant_token is not None else None  # None: auth failed
            log.info("rpc", extra={"method": self.method, "code": code, "ms": round(elapsed * 1e3, 2),
                                   "tenant": tenant})
        if self.tenant_token is not None:
            auth.reset_tenant(self.tenant_token)


def _is_abort(exc: BaseException, context) -> bool:
    # context.abort*() raises a plain Exception after setting the code: let it through untouched.
    code = context.code() if hasattr(context, "code") else None
    return code is not None and code != grpc.StatusCode.OK


class _Undecodable:
    """What the request deserializer returns for bytes that are not the method's message: grpc would
    answer INTERNAL ("Exception deserializing request"); the handler raises INVALID_ARGUMENT instead."""

    def __init__(self, message_name: str, error: Exception):
        self.message_name, self.error = message_name, error

    def refuse(self) -> InvalidArgument:
        return InvalidArgument("request", f"the body is not a valid {self.message_name} protobuf "
                               f"({type(self.error).__name__})", reason="UNDECODABLE_REQUEST")


def _lenient(deserializer):
    if deserializer is None:
        return None
    name = getattr(getattr(deserializer, "__self__", None), "DESCRIPTOR", None)
    name = name.full_name if name is not None else "request"

    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except Exception as e:  # protobuf's DecodeError and friends
            return _Undecodable(name, e)
    return deserialize


def _checked(request):
    if isinstance(request, _Undecodable):
        raise request.refuse()
    return request


def _checked_stream(requests):
    for request in requests:
        yield _checked(request)


class ServiceInterceptor(grpc.ServerInterceptor):
    def __init__(self, service: str, tokens: auth.TokenStore):
        self.service = service
        self.tokens = tokens

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary or handler.stream_unary:
            inner = handler.unary_unary or handler.stream_unary
            factory = (grpc.unary_unary_rpc_method_handler if handler.unary_unary
                       else grpc.stream_unary_rpc_method_handler)
            wrapped = self._wrap_unary(inner, method, streaming_request=bool(handler.stream_unary))
        else:
            inner = handler.unary_stream or handler.stream_stream
            factory = (grpc.unary_stream_rpc_method_handler if handler.unary_stream
                       else grpc.stream_stream_rpc_method_handler)
            wrapped = self._wrap_stream(inner, method, streaming_request=bool(handler.stream_stream))
        return factory(wrapped, request_deserializer=_lenient(handler.request_deserializer),
                       response_serializer=handler.response_serializer)

    def _wrap_unary(self, behavior, method, streaming_request: bool):
        def wrapped(request, context):
            call = _Call(self.service, method, self.tokens, context)
            try:
                call.enter()
                request = _checked_stream(request) if streaming_request else _checked(request)
                return behavior(request, context)
            except Exception as exc:
                if _is_abort(exc, context):
                    call.code = context.code()
                    raise
                call.fail(exc)
            finally:
                call.exit()
        return wrapped

    def _wrap_stream(self, behavior, method, streaming_request: bool):
        def wrapped(request, context):
            call = _Call(self.service, method, self.tokens, context)
            try:
                call.enter()
                request = _checked_stream(request) if streaming_request else _checked(request)
                yield from behavior(request, context)
            except Exception as exc:
                if _is_abort(exc, context):
                    call.code = context.code()
                    raise
                call.fail(exc)
            finally:
                call.exit()
        return wrapped
