"""Bodies that are not the method's protobuf, sent raw (a generic call with the bytes as they are) to every
method of the face, render, guidance and jobs services: INVALID_ARGUMENT (reason UNDECODABLE_REQUEST,
field "request") where grpc alone would answer INTERNAL; random bytes, which often do parse (unknown
fields are skipped), end with a deliberate status."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import descriptor_pool
from hypothesis import given
from hypothesis import strategies as st

from headforge.v1 import common_pb2, face_pb2, guidance_pb2, jobs_pb2, render_pb2  # noqa: F401 - register the services
from tests.fuzz.protofuzz import DELIBERATE, Code, error_info, examples, fuzz_settings

UNDECODABLE = [b"\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x07\x00", b"\x0a\x05ab", b"\x80" * 11]
SERVERS = {"face_server": "headforge.v1.FaceService", "render_fuzz_server": "headforge.v1.RenderService",
           "guidance_fuzz_server": "headforge.v1.GuidanceService", "jobs_fuzz_server": "headforge.v1.JobsService"}


def raw_call(channel, service, method, body: bytes):
    """(code, ErrorInfo or None, details) of one raw call; a server stream is read to its end."""
    path = f"/{service.full_name}/{method.name}"
    kw = dict(request_serializer=None, response_deserializer=None)
    try:
        if method.client_streaming:
            channel.stream_unary(path, **kw)(iter([body]), timeout=30)
        elif method.server_streaming:
            for _ in channel.unary_stream(path, **kw)(body, timeout=30):
                pass
        else:
            channel.unary_unary(path, **kw)(body, timeout=30)
    except grpc.RpcError as err:
        return err.code(), error_info(err), err.details() or ""
    return Code.OK, None, ""


@pytest.fixture(params=sorted(SERVERS))
def target(request):
    server = request.getfixturevalue(request.param)
    channel = grpc.insecure_channel(server.address)
    yield channel, descriptor_pool.Default().FindServiceByName(SERVERS[request.param])
    channel.close()


def test_undecodable_bodies_are_invalid_argument(target):
    channel, service = target
    for method in service.methods:
        if not method.input_type.fields:
            continue  # an empty message: every body "parses" (unknown fields are skipped)
        for body in UNDECODABLE:
            code, info, details = raw_call(channel, service, method, body)
            assert code == Code.INVALID_ARGUMENT, (method.name, body, code, details)
            assert info.reason == "UNDECODABLE_REQUEST" and info.field_violations[0].field == "request"
            assert method.input_type.full_name in details


def test_random_bodies_end_deliberately(target):
    channel, service = target
    methods = [m for m in service.methods]

    @fuzz_settings(examples(60))
    @given(st.sampled_from(methods), st.binary(max_size=300))
    def run(method, body):
        code, info, details = raw_call(channel, service, method, body)
        assert code in DELIBERATE, (method.name, body, code, details)
        if code not in (Code.OK, Code.RESOURCE_EXHAUSTED):
            assert info is not None and info.reason, (method.name, code, details)

    run()
