"""What the gRPC fuzzers of render, guidance and jobs share: requests generated from the proto descriptors
(any field, any value: boundary integers, NaN/inf floats, long strings, unknown enum values, odd tensors),
near-valid requests (a valid seed with one to three fields overwritten), the status contract every answer
must keep, and the server's memory.

The contract: OK or a deliberate status (INVALID_ARGUMENT, FAILED_PRECONDITION, RESOURCE_EXHAUSTED,
NOT_FOUND, OUT_OF_RANGE, PERMISSION_DENIED, the server's own DEADLINE_EXCEEDED) carrying headforge.v1.ErrorInfo, INVALID_ARGUMENT naming at least one field;
never INTERNAL, UNKNOWN, UNAVAILABLE or the client's deadline; and a request holding an unknown enum value is never
answered OK (proto3 enums are open: an unknown value must be refused, naming the field, not read as a
default).

Examples per fuzzer: HEADFORGE_FUZZ_EXAMPLES (`make fuzz` sets 10000 per service; scaled() shares them out
between a file's tests); unset, the fixed-seed share `make test` runs. Each run writes its figures (requests, statuses, server RSS before and after) to
HEADFORGE_FUZZ_REPORT_DIR when that is set.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections import Counter
from pathlib import Path

import grpc
from google.protobuf.descriptor import FieldDescriptor as FD
from grpc_status import rpc_status
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from headforge.v1 import common_pb2

Code = grpc.StatusCode
# DEADLINE_EXCEEDED only as the server's own answer (a queue deadline already passed: it carries ErrorInfo),
# never the client's timeout
DELIBERATE = {Code.OK, Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION, Code.RESOURCE_EXHAUSTED, Code.NOT_FOUND,
              Code.OUT_OF_RANGE, Code.DEADLINE_EXCEEDED, Code.PERMISSION_DENIED}
DType = common_pb2.Tensor.DType
RSS_GROWTH_LIMIT_MB = 400   # resident memory a fuzz run may add to a server (caches, allocator high-water)


def examples(share: int) -> int:
    """HEADFORGE_FUZZ_EXAMPLES, else `share` (the fixed-seed part `make test` runs)."""
    return int(os.environ.get("HEADFORGE_FUZZ_EXAMPLES", share))


def scaled(share: int, file_share: int, margin: float = 1.0) -> int:
    """One fuzz test's examples in a file of several: `share` in `make test`; with HEADFORGE_FUZZ_EXAMPLES = N,
    its part of N x margin (the file's shares sum to file_share), so the file sends about N requests in all
    (margin > 1 where Hypothesis ends some tests early, having made every distinct example it can)."""
    n = os.environ.get("HEADFORGE_FUZZ_EXAMPLES")
    return share if n is None else math.ceil(share * int(n) * margin / file_share)


def write_figures(service: str, requests: int, statuses: dict[str, int], rss_before: float, rss_after: float,
                  seconds: float, **extra) -> dict:
    """A fuzz run's figures, printed and (when HEADFORGE_FUZZ_REPORT_DIR is set) written there as
    <service>.json; RSS in MB."""
    figures = {"service": service, "requests": requests, "statuses": statuses, **extra,
               "rss_mb_before": round(rss_before, 1), "rss_mb_after": round(rss_after, 1), "seconds": round(seconds, 1)}
    out_dir = os.environ.get("HEADFORGE_FUZZ_REPORT_DIR")
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / f"{service}.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps({k: v for k, v in figures.items() if k != "by_method"}))
    return figures


def fuzz_settings(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=list(HealthCheck))


# Values -------------------------------------------------------------------------------------------------

INT_EDGES = [0, 1, 2, 3, 7, 16, 64, 255, 256, 1024, 4096, 8192, 65536, 2**31 - 1, -1, -2, -(2**31)]
FLOAT_EDGES = [0.0, 1.0, 0.5, -1.0, 1e-9, 1e9, 1e30, -1e30, math.nan, math.inf, -math.inf, 3.4e38]


def _int(field) -> st.SearchStrategy:
    bits = 64 if field.type in (FD.TYPE_INT64, FD.TYPE_UINT64, FD.TYPE_SINT64, FD.TYPE_FIXED64,
                                FD.TYPE_SFIXED64) else 32
    unsigned = field.type in (FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64)
    lo, hi = (0, 2**bits - 1) if unsigned else (-(2**(bits - 1)), 2**(bits - 1) - 1)
    edges = [v for v in INT_EDGES + [lo, hi] if lo <= v <= hi]
    return st.one_of(st.integers(0, 8), st.sampled_from(edges), st.integers(lo, hi))


def _float(field) -> st.SearchStrategy:
    width = 32 if field.type == FD.TYPE_FLOAT else 64
    return st.one_of(st.floats(-2, 2, width=width), st.sampled_from(FLOAT_EDGES),
                     st.floats(width=width, allow_nan=True, allow_infinity=True))


def _string(words: list[str]) -> st.SearchStrategy:
    return st.one_of(st.sampled_from(words or [""]), st.text(max_size=12), st.just(""),
                     st.integers(257, 20_000).map(lambda n: "x" * n), st.sampled_from(["../../etc/passwd", "\x00",
                                                                                         "é" * 300, "a,b,,c", "1e400"]))


def _enum(field) -> st.SearchStrategy:
    known = [v.number for v in field.enum_type.values]
    return st.one_of(st.sampled_from(known), st.sampled_from(known), st.integers(-3, 40),
                     st.sampled_from([2**31 - 1, -(2**31)]))


@st.composite
def tensors(draw):
    """A common.Tensor: any dtype value, any shape, data fitting the shape, nearly fitting or random."""
    dtype = draw(st.one_of(st.sampled_from(list(DType.values())), st.integers(-2, 12)))
    shape = draw(st.lists(st.one_of(st.integers(0, 6), st.integers(-2, -1), st.integers(7, 300),
                                    st.sampled_from([2**31, 2**62, 2**63 - 1, -(2**63)])), max_size=5))
    size = {DType.FLOAT32: 4, DType.FLOAT16: 2, DType.UINT8: 1, DType.INT32: 4, DType.INT64: 8}.get(dtype)
    count = math.prod(shape) if shape else 1
    exact = size * count if size and count >= 0 else None
    how = draw(st.sampled_from(["exact", "off_by", "random"]))
    if how == "exact" and exact is not None and exact <= 1 << 16:
        data = draw(st.binary(min_size=exact, max_size=exact))
        if dtype in (DType.FLOAT32, DType.FLOAT16) and draw(st.booleans()):  # mostly sane values
            import numpy as np
            a = np.random.default_rng(draw(st.integers(0, 2**16))).random(count)
            data = a.astype("<f4" if dtype == DType.FLOAT32 else "<f2").tobytes()
    elif how == "off_by" and exact is not None and exact <= 1 << 16:
        data = bytes(max(0, exact + draw(st.sampled_from([-1, 1, -4, 4]))))
    else:
        data = draw(st.binary(max_size=128))
    return common_pb2.Tensor(dtype=dtype, shape=shape, data=data)


class Generator:
    """Hypothesis strategies for messages of a descriptor. words: strings worth drawing per field name
    (valid ids, names), special: full message name -> strategy (e.g. a camera generator)."""

    def __init__(self, words: dict[str, list[str]] | None = None, special: dict[str, st.SearchStrategy] | None = None,
                 max_depth: int = 4):
        self.words = words or {}
        self.special = {"headforge.v1.Tensor": tensors(), **(special or {})}
        self.max_depth = max_depth

    def value(self, field, depth: int) -> st.SearchStrategy:
        if field.type == FD.TYPE_MESSAGE:
            return self.message(field.message_type, depth + 1)
        if field.type == FD.TYPE_ENUM:
            return _enum(field)
        if field.type == FD.TYPE_BOOL:
            return st.booleans()
        if field.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
            return _float(field)
        if field.type == FD.TYPE_STRING:
            return _string(self.words.get(field.name, []))
        if field.type == FD.TYPE_BYTES:
            return st.one_of(st.binary(max_size=64), st.sampled_from([b"glTF", b"PK\x03\x04", b"ply\n"]))
        return _int(field)

    def message(self, descriptor, depth: int = 0) -> st.SearchStrategy:
        if descriptor.full_name in self.special:
            return self.special[descriptor.full_name]
        return self._message(descriptor, depth)

    @st.composite
    def _message(draw, self, descriptor, depth):
        msg = _new(descriptor)
        if depth > self.max_depth:
            return msg
        oneofs = {o.name: draw(st.sampled_from([None, *[f.name for f in o.fields]])) for o in descriptor.oneofs}
        for field in descriptor.fields:
            if field.containing_oneof is not None:
                if oneofs[field.containing_oneof.name] != field.name:
                    continue
            elif not draw(st.integers(0, 2)):  # each field set 2 times in 3
                continue
            set_field(msg, field, draw, self, depth)
        return msg


def _new(descriptor):
    from google.protobuf import message_factory
    return message_factory.GetMessageClass(descriptor)()


def _is_map(field) -> bool:
    return field.type == FD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def set_field(msg, field, draw, gen: Generator, depth: int) -> None:
    """Overwrite one field of msg with generated values (a list for repeated, a dict for maps)."""
    if _is_map(field):
        key_f, val_f = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
        target = getattr(msg, field.name)
        target.clear()
        for _ in range(draw(st.integers(0, 3))):
            k = draw(gen.value(key_f, depth))
            if val_f.type == FD.TYPE_MESSAGE:
                target[k].CopyFrom(draw(gen.value(val_f, depth)))
            else:
                target[k] = draw(gen.value(val_f, depth))
        return
    if field.is_repeated:
        target = getattr(msg, field.name)
        del target[:]
        values = draw(st.lists(gen.value(field, depth), max_size=3))
        if field.type == FD.TYPE_MESSAGE:
            for v in values:
                target.add().CopyFrom(v)
        else:
            target.extend(values)
        return
    if field.type == FD.TYPE_MESSAGE:
        getattr(msg, field.name).CopyFrom(draw(gen.value(field, depth)))
    else:
        setattr(msg, field.name, draw(gen.value(field, depth)))


@st.composite
def mutated(draw, seed, gen: Generator):
    """A copy of a valid request with 1..3 fields, anywhere in it, overwritten (a set sub-message may be
    descended into)."""
    msg = type(seed)()
    msg.CopyFrom(seed)
    for _ in range(draw(st.integers(1, 3))):
        node, depth = msg, 0
        while True:
            fields = list(node.DESCRIPTOR.fields)
            if not fields:
                return msg
            field = draw(st.sampled_from(fields))
            child_set = (field.type == FD.TYPE_MESSAGE and not field.is_repeated
                         and node.HasField(field.name))
            if child_set and field.message_type.full_name not in gen.special and draw(st.booleans()):
                node, depth = getattr(node, field.name), depth + 1
                continue
            set_field(node, field, draw, gen, depth)
            break
    return msg


def unknown_enums(msg, prefix: str = "") -> list[str]:
    """Paths of set enum fields (anywhere in msg) holding a value the enum does not define."""
    out = []
    for field, value in msg.ListFields():
        path = f"{prefix}{field.name}"
        if _is_map(field):
            val_f = field.message_type.fields_by_name["value"]
            if val_f.type == FD.TYPE_MESSAGE:
                for k, v in value.items():
                    out += unknown_enums(v, f"{path}[{k}].")
            continue
        items = list(value) if field.is_repeated else [value]
        for i, item in enumerate(items):
            p = f"{path}[{i}]" if field.is_repeated else path
            if field.type == FD.TYPE_ENUM and field.enum_type.values_by_number.get(item) is None:
                out.append(p)
            elif field.type == FD.TYPE_MESSAGE:
                out += unknown_enums(item, p + ".")
    return out


# Calling and the contract -------------------------------------------------------------------------------

def rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Caller:
    """Calls one service through raw multicallables and enforces the contract on every answer."""

    def __init__(self, server, service_name: str, metadata=(), timeout_s: float = 60):
        self.server, self.metadata, self.timeout_s = server, tuple(metadata), timeout_s
        self.channel = grpc.insecure_channel(server.address, options=[
            ("grpc.enable_http_proxy", 0), ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20)])
        from google.protobuf import descriptor_pool
        self.service = descriptor_pool.Default().FindServiceByName(service_name)
        self.outcomes: Counter = Counter()
        self.requests = 0
        self.rss_before = rss_mb(server.proc.pid)
        self.started = time.monotonic()

    def method(self, name: str):
        return self.service.methods_by_name[name]

    def __call__(self, name: str, request):
        """(code, reply or None, ErrorInfo or None); raises AssertionError when the contract breaks.
        A server-streaming reply is read to its end (at most 64 messages kept)."""
        m = self.method(name)
        path = f"/{self.service.full_name}/{name}"
        out_cls = _new(m.output_type).__class__
        self.requests += 1
        try:
            if m.client_streaming:
                call = self.channel.stream_unary(path, request_serializer=lambda x: x.SerializeToString(),
                                                 response_deserializer=out_cls.FromString)
                reply = call(iter(request), metadata=self.metadata, timeout=self.timeout_s)
            elif m.server_streaming:
                call = self.channel.unary_stream(path, request_serializer=lambda x: x.SerializeToString(),
                                                 response_deserializer=out_cls.FromString)
                reply = list(call(request, metadata=self.metadata, timeout=self.timeout_s))[:64]
            else:
                call = self.channel.unary_unary(path, request_serializer=lambda x: x.SerializeToString(),
                                                response_deserializer=out_cls.FromString)
                reply = call(request, metadata=self.metadata, timeout=self.timeout_s)
        except grpc.RpcError as err:
            return self._refused(name, request, err)
        self.outcomes[f"{name}:OK"] += 1
        requests = list(request) if m.client_streaming else [request]
        bad = [p for r in requests for p in unknown_enums(r)]
        assert not bad, f"{name} accepted unknown enum value(s) at {bad}: {summary(request)}"
        return Code.OK, reply, None

    def _refused(self, name, request, err):
        code, details = err.code(), err.details() or ""
        if code not in DELIBERATE:
            log = incident_log(self.server, details) if code == Code.INTERNAL else ""
            raise AssertionError(f"{name} ended {code.name}: {details[:500]}\nrequest: {summary(request)}\n"
                                 f"server log:\n{log}")
        self.outcomes[f"{name}:{code.name}"] += 1
        info = error_info(err)
        if code != Code.RESOURCE_EXHAUSTED:  # the transport's own size refusal carries no details
            assert info is not None and info.reason, f"{name} {code.name} without ErrorInfo: {details[:300]}"
        if code == Code.INVALID_ARGUMENT:
            fields = [v.field for v in info.field_violations]
            assert fields and all(fields), f"{name} INVALID_ARGUMENT naming no field: {details[:300]}"
        assert len(details) <= 1100, f"{name}: a {len(details)}-character error message"
        return code, None, info


    def statuses(self) -> dict[str, int]:
        """Status name -> count over all methods."""
        out: Counter = Counter()
        for key, n in self.outcomes.items():
            out[key.split(":")[1]] += n
        return dict(out)

    def finish(self, service: str, rss_limit_mb: float = RSS_GROWTH_LIMIT_MB) -> dict:
        """The run's figures (also written to HEADFORGE_FUZZ_REPORT_DIR/<service>.json when set); asserts
        the server's RSS grew less than rss_limit_mb."""
        after = rss_mb(self.server.proc.pid)
        figures = write_figures(service, self.requests, self.statuses(), self.rss_before, after,
                                time.monotonic() - self.started, by_method=dict(sorted(self.outcomes.items())))
        figures["rss_limit_mb"] = rss_limit_mb
        assert after - self.rss_before < rss_limit_mb, figures
        return figures

    def close(self):
        self.channel.close()


def error_info(err: grpc.RpcError) -> "common_pb2.ErrorInfo | None":
    """The ErrorInfo detail of a failed call's rich status, or None."""
    status = rpc_status.from_call(err)
    for d in (status.details if status is not None else []):
        if d.Is(common_pb2.ErrorInfo.DESCRIPTOR):
            info = common_pb2.ErrorInfo()
            d.Unpack(info)
            return info
    return None


def incident_log(server, details: str) -> str:
    """The server log's lines of the incident an INTERNAL error names (its last 4000 characters)."""
    m = re.search(r"incident ([0-9a-f]+)", details or "")
    if not m:
        return ""
    lines = [line for line in server.log_path.read_text().splitlines() if m.group(1) in line]
    return "\n".join(lines)[-4000:]


def summary(request) -> str:
    """A request (or a list of streamed ones) for a failure message, cut at 1500 characters."""
    if not hasattr(request, "ByteSize"):
        return f"a stream of {len(request)} messages: " + "; ".join(summary(r) for r in request[:3])
    text = str(request)
    return text if len(text) < 1500 else text[:1500] + f"... ({request.ByteSize()} bytes)"


def method_requests(by_method: dict, gen: Generator, caller, extra: dict | None = None):
    """A strategy of (method, request): a method name, then near-valid mutations of its seed requests
    (weighted double), a seed as is, or a request generated from the method's input descriptor. extra:
    {method: strategy} for methods whose requests are not one message (e.g. a client stream)."""
    extra = dict(extra or {})

    def requests(method: str):
        if method in extra:
            return extra[method]
        near = [mutated(s, gen) for s in by_method[method]]
        return st.one_of(*near, *near, st.sampled_from(by_method[method]), gen.message(caller.method(method).input_type))

    methods = sorted(set(by_method) | set(extra))
    strategies = {m: requests(m) for m in methods}
    return st.sampled_from(methods).flatmap(lambda m: st.tuples(st.just(m), strategies[m]))
