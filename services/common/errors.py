"""Errors every service raises, and their mapping to gRPC status with headforge.v1.ErrorInfo details.

Service code raises these (never grpc.aborts itself); the server runtime turns them into a status, and
the gRPC client turns the status back into the same exception type, so callers handle one error
hierarchy whichever transport they use.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import status_pb2
from grpc_status import rpc_status

from headforge.v1 import common_pb2


# Bounds on what an error puts on the wire: the status travels in response headers (grpc-message and
# grpc-status-details-bin, the latter base64), and a header over the channel's metadata limit (8 KiB by
# default) turns the client's NOT_FOUND into RESOURCE_EXHAUSTED. Messages echo request values.
MAX_MESSAGE_CHARS = 1024
MAX_FIELD_CHARS = 200


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """text, cut to at most `limit` characters with a marker saying how long it was."""
    if len(text) <= limit:
        return text
    marker = f"... ({len(text)} characters)"
    return text[:max(0, limit - len(marker))] + marker


def quoted(value: str, limit: int = 64) -> str:
    """repr(value) for a message, a long value cut (a 10,000-character id is not echoed whole)."""
    return repr(value) if len(value) <= limit else repr(value[:limit]) + f"... ({len(value)} characters)"


@dataclass
class FieldViolation:
    field: str
    description: str


class HeadForgeError(Exception):
    """Base class: a gRPC status code, a human message, a machine reason and field violations."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        violations: list[FieldViolation] | None = None,
        metadata: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.violations = list(violations or [])
        self.metadata = dict(metadata or {})

    def to_status(self) -> status_pb2.Status:
        """The wire status; message, fields and descriptions clipped (MAX_MESSAGE_CHARS) to fit in headers."""
        info = common_pb2.ErrorInfo(reason=clip(self.reason, MAX_FIELD_CHARS),
                                    metadata={clip(k, MAX_FIELD_CHARS): clip(v, MAX_FIELD_CHARS)
                                              for k, v in list(self.metadata.items())[:16]})
        for v in self.violations[:8]:
            info.field_violations.add(field=clip(v.field, MAX_FIELD_CHARS), description=clip(v.description, 512))
        detail = any_pb2.Any()
        detail.Pack(info)
        return status_pb2.Status(code=self.code.value[0], message=clip(self.message), details=[detail])


class InvalidArgument(HeadForgeError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, description: str, *, reason: str = "INVALID_ARGUMENT", **kw):
        super().__init__(f"{field}: {description}", reason=reason,
                         violations=[FieldViolation(field, description)], **kw)

    @property
    def field(self) -> str:
        return self.violations[0].field if self.violations else ""


class FailedPrecondition(HeadForgeError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class NotFound(HeadForgeError):
    code = grpc.StatusCode.NOT_FOUND


class PermissionDenied(HeadForgeError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(HeadForgeError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhausted(HeadForgeError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(HeadForgeError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(HeadForgeError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Internal(HeadForgeError):
    code = grpc.StatusCode.INTERNAL


class Unimplemented(HeadForgeError):
    code = grpc.StatusCode.UNIMPLEMENTED


_BY_CODE: dict[grpc.StatusCode, type[HeadForgeError]] = {
    cls.code: cls
    for cls in (FailedPrecondition, NotFound, PermissionDenied, Unauthenticated, ResourceExhausted,
                Unavailable, DeadlineExceeded, Internal, Unimplemented)
}


def error_from_code(code_name: str, message: str, reason: str = "") -> HeadForgeError:
    """The HeadForgeError of a gRPC status name ("FAILED_PRECONDITION", ...), e.g. from a job's error_code."""
    code = getattr(grpc.StatusCode, code_name, grpc.StatusCode.INTERNAL)
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        exc: HeadForgeError = InvalidArgument.__new__(InvalidArgument)
        HeadForgeError.__init__(exc, message, reason=reason)
        return exc
    return _BY_CODE.get(code, Internal)(message, reason=reason)


def from_rpc_error(err: grpc.RpcError) -> HeadForgeError:
    """The HeadForgeError a failed call carries (its details when present, else code + message)."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    message = err.details() if hasattr(err, "details") else str(err)
    info = common_pb2.ErrorInfo()
    try:
        status = rpc_status.from_call(err)
    except ValueError:
        status = None
    if status is not None:
        for d in status.details:
            if d.Is(common_pb2.ErrorInfo.DESCRIPTOR):
                d.Unpack(info)
                break
    violations = [FieldViolation(v.field, v.description) for v in info.field_violations]
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        exc: HeadForgeError = InvalidArgument.__new__(InvalidArgument)
        HeadForgeError.__init__(exc, message or "", reason=info.reason, violations=violations,
                                metadata=dict(info.metadata))
        return exc
    cls = _BY_CODE.get(code)
    if cls is None:
        exc = HeadForgeError(message or "", reason=info.reason, violations=violations)
        exc.code = code
        return exc
    return cls(message or "", reason=info.reason, violations=violations, metadata=dict(info.metadata))


def require(condition: bool, field: str, description: str) -> None:
    """Raise InvalidArgument(field, description) unless `condition` holds."""
    if not condition:
        raise InvalidArgument(field, description)

