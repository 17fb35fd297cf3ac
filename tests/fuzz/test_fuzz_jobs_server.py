"""Hypothesis fuzzing of a running jobs service (`headforge serve jobs --runtime none` on loopback):
Submit, Get, List, Cancel, WatchProgress, FetchArtifacts and Describe get generated and near-valid
requests (tests/fuzz/protofuzz.py holds the contract). Every job a fuzzed Submit creates is cancelled at
once, so watches end and the active-job quota stays free. "@job" in a job id is resolved to a live
(cancelled) job of the tenant. Afterwards the server still accepts, lists and cancels a job, and its
memory grew less than protofuzz.RSS_GROWTH_LIMIT_MB.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headforge.v1 import common_pb2, jobs_pb2
from orchestrator.recipes import builtin_names, load_recipe
from tests.conftest import png_bytes
from tests.fuzz.protofuzz import Caller, Code, Generator, examples, fuzz_settings, method_requests

SERVICE = "headforge.v1.JobsService"
RECIPE = "sds_gaussians"


@pytest.fixture(scope="module")
def photo() -> bytes:
    return png_bytes(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def caller(jobs_fuzz_server):
    c = Caller(jobs_fuzz_server, SERVICE, timeout_s=30)
    yield c
    c.close()


def submit_request(photo: bytes, **kw) -> jobs_pb2.SubmitJobRequest:
    return jobs_pb2.SubmitJobRequest(recipe_name=RECIPE, images=[common_pb2.EncodedImage(data=photo)], **kw)


def seeds(photo: bytes) -> dict[str, list]:
    inline = jobs_pb2.SubmitJobRequest(recipe_yaml=load_recipe(RECIPE).yaml,
                                       images=[common_pb2.EncodedImage(data=photo)])
    return {
        "Describe": [jobs_pb2.JobsDescribeRequest()],
        "Submit": [submit_request(photo), inline,
                   submit_request(photo, options={"stages.optimise.iterations": "5", "seed": "7"}, priority=3,
                                  display_name="fuzz", labels={"k": "v"}, idempotency_key="key")],
        "Get": [jobs_pb2.GetJobRequest(job_id="@job")],
        "List": [jobs_pb2.ListJobsRequest(states=[jobs_pb2.Job.CANCELLED], page_size=5),
                 jobs_pb2.ListJobsRequest(recipe=RECIPE, labels={"k": "v"})],
        "Cancel": [jobs_pb2.CancelJobRequest(job_id="@job")],
        "WatchProgress": [jobs_pb2.WatchProgressRequest(job_id="@job", after_sequence=1, max_progress_rate=5)],
        "FetchArtifacts": [jobs_pb2.FetchArtifactsRequest(job_id="@job", names=["asset.ply"], chunk_bytes=1024)],
    }


def test_fuzz_jobs_server(caller, photo):
    code, job, _ = caller("Submit", submit_request(photo))
    assert code == Code.OK
    live = job.id
    assert caller("Cancel", jobs_pb2.CancelJobRequest(job_id=live))[0] == Code.OK
    by_method = seeds(photo)
    words = {"job_id": ["@job", "", "0" * 32], "recipe_name": [*builtin_names(), "nope"], "recipe": [RECIPE, "inline"],
             "models_dir": ["", "/etc", "models"], "page_token": ["", "abc"], "names": ["asset.ply", "report.json"],
             "idempotency_key": ["", "key"]}
    gen = Generator(words, special={"headforge.v1.EncodedImage": st.one_of(
        st.just(common_pb2.EncodedImage(data=photo)), Generator(words).message(common_pb2.EncodedImage.DESCRIPTOR))})
    @fuzz_settings(examples(300))
    @given(method_requests(by_method, gen, caller))
    def run(case):
        method, request = case
        if getattr(request, "job_id", None) == "@job":
            request.job_id = live
        code, reply, _ = caller(method, request)
        if method == "Submit" and code == Code.OK and reply.state in (jobs_pb2.Job.QUEUED, jobs_pb2.Job.RUNNING):
            assert caller("Cancel", jobs_pb2.CancelJobRequest(job_id=reply.id))[0] == Code.OK

    run()
    # still serving: a job is accepted, listed and cancelled
    code, job, _ = caller("Submit", submit_request(photo, display_name="after"))
    assert code == Code.OK and job.state == jobs_pb2.Job.QUEUED
    code, listed, _ = caller("List", jobs_pb2.ListJobsRequest(states=[jobs_pb2.Job.QUEUED]))
    assert [j.id for j in listed.jobs] == [job.id]
    assert caller("Cancel", jobs_pb2.CancelJobRequest(job_id=job.id))[0] == Code.OK
    figures = caller.finish("jobs")
    seen = figures["statuses"]
    assert seen.get("OK", 0) >= 0.05 * figures["requests"] and seen.get("INVALID_ARGUMENT", 0) >= 0.2 * figures["requests"], seen
    for method in ("Submit", "List", "WatchProgress", "Get"):
        assert figures["by_method"].get(f"{method}:OK", 0) >= 1, (method, figures["by_method"])


def test_regression_unknown_state_names_the_field(caller):
    code, _, info = caller("List", jobs_pb2.ListJobsRequest(states=[jobs_pb2.Job.QUEUED, 42]))
    assert code == Code.INVALID_ARGUMENT and info.field_violations[0].field == "states[1]"
