"""Bounded work on the jobs service (issue 22 item 7), over gRPC to the session's `headforge serve jobs`:
a prompt over 4096 characters, a 10,000-character job id and deeply nested recipe YAML each get a short,
deliberate error (INVALID_ARGUMENT / NOT_FOUND) instead of work, a header overflow or a RecursionError."""

from __future__ import annotations

import time

import grpc
import numpy as np
import pytest

from headforge.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc
from tests.conftest import png_bytes

Code = grpc.StatusCode
META = [("authorization", "Bearer tok-a")]


@pytest.fixture(scope="module")
def stub(jobs_server):
    channel = grpc.insecure_channel(jobs_server.address, options=[("grpc.max_send_message_length", 64 << 20)])
    yield jobs_pb2_grpc.JobsServiceStub(channel)
    channel.close()


def call(method, request):
    """(code, details) of a call that must fail; unary or the first message of a stream."""
    try:
        reply = method(request, metadata=META, timeout=60)
        if not hasattr(reply, "ByteSize"):
            next(iter(reply))
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    pytest.fail(f"{request.DESCRIPTOR.name} was accepted")


def test_long_prompt_is_refused_quickly(stub):
    photo = png_bytes(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8))
    for n in (4097, 16 << 20):
        start = time.monotonic()
        code, details = call(stub.Submit, jobs_pb2.SubmitJobRequest(
            recipe_name="sds_gaussians", images=[common_pb2.EncodedImage(data=photo)], prompt="p" * n))
        assert code == Code.INVALID_ARGUMENT and details.startswith("prompt: at most 4096"), (code, details[:200])
        assert time.monotonic() - start < 10


def test_huge_job_id_is_not_found_with_a_short_message(stub):
    job_id = "x" * 10_000
    for method, request in [(stub.Get, jobs_pb2.GetJobRequest(job_id=job_id)),
                            (stub.Cancel, jobs_pb2.CancelJobRequest(job_id=job_id)),
                            (stub.WatchProgress, jobs_pb2.WatchProgressRequest(job_id=job_id)),
                            (stub.FetchArtifacts, jobs_pb2.FetchArtifactsRequest(job_id=job_id))]:
        code, details = call(method, request)
        assert code in (Code.NOT_FOUND, Code.INVALID_ARGUMENT), (method, code, details[:200])
        assert len(details) <= 1024, len(details)


@pytest.mark.parametrize("text", [
    "name: deep\nstages: " + "[" * 5000 + "]" * 5000 + "\n",
    "name: deep\nstages:\n" + "".join("  " * i + "- \n" for i in range(3000)),
    "name: deep\nx: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n",
    "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    "c: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nname: laughs\nstages: []\n",
])
def test_deep_or_aliased_recipe_yaml_is_invalid_argument(stub, text):
    code, details = call(stub.Submit, jobs_pb2.SubmitJobRequest(recipe_yaml=text))
    assert code == Code.INVALID_ARGUMENT and details.startswith("recipe_yaml"), (code, details[:300])


def test_deep_option_value_and_path_are_invalid_argument(stub):
    for options in ({"stages.optimise.iterations": "[" * 5000 + "]" * 5000},
                    {".".join(["k"] * 5000): "1"}):
        code, details = call(stub.Submit, jobs_pb2.SubmitJobRequest(recipe_name="sds_gaussians", options=options))
        assert code == Code.INVALID_ARGUMENT and details.startswith("options"), (code, details[:300])
