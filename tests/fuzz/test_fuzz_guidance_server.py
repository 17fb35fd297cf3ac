"""Hypothesis fuzzing of a running guidance service (`headforge serve guidance`, the analytic prior, on
loopback): Distill, Denoise, Inpaint, Generate and Describe get generated and near-valid requests
(tests/fuzz/protofuzz.py holds the contract). Afterwards the server still answers a Distill with a finite
gradient of the image's shape, and its memory grew less than protofuzz.RSS_GROWTH_LIMIT_MB.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headforge.v1 import common_pb2, guidance_pb2
from services.core.cameras import sample_orbit_cameras
from tests.fuzz.protofuzz import Caller, Code, Generator, examples, fuzz_settings, method_requests

SERVICE = "headforge.v1.GuidanceService"
SIZE = 32


def _camera(seed: int = 0) -> common_pb2.Camera:
    return sample_orbit_cameras(1, np.random.default_rng(seed), width=SIZE, height=SIZE)[0].to_proto()


def _images(n: int = 1, seed: int = 0) -> common_pb2.Tensor:
    a = np.random.default_rng(seed).random((n, 3, SIZE, SIZE)).astype("<f4")
    return common_pb2.Tensor(dtype=common_pb2.Tensor.FLOAT32, shape=list(a.shape), data=a.tobytes())


def _mask() -> common_pb2.Tensor:
    m = np.zeros((1, SIZE, SIZE), "<f4")
    m[:, 8:24, 8:24] = 1
    return common_pb2.Tensor(dtype=common_pb2.Tensor.FLOAT32, shape=list(m.shape), data=m.tobytes())


def seeds() -> dict[str, list]:
    cond = guidance_pb2.Conditions(prompt="a portrait")
    return {
        "Describe": [guidance_pb2.GuidanceDescribeRequest()],
        "Distill": [guidance_pb2.DistillRequest(images=_images(2), conditions=cond, seed=1, resolution=SIZE),
                    guidance_pb2.DistillRequest(images=_images(1), cameras=[_camera()], seed=2, resolution=SIZE,
                                                conditions=guidance_pb2.Conditions(prompt="x", view_dependent_prompt=True),
                                                return_noise=True, return_denoised=True)],
        "Denoise": [guidance_pb2.DenoiseRequest(images=_images(1), conditions=cond, strength=0.3, num_steps=2,
                                                seed=3, resolution=SIZE)],
        "Inpaint": [guidance_pb2.InpaintRequest(images=_images(1), mask=_mask(), conditions=cond, num_steps=2,
                                                seed=4, resolution=SIZE)],
        "Generate": [guidance_pb2.GenerateRequest(conditions=cond, num_images=1, width=SIZE, height=SIZE,
                                                  num_steps=2, seed=5)],
    }


# Work per request is bounded by the service's own limits; these keep the valid ones cheap on 2 cores.
STEP_FIELDS = {"num_steps"}
SIZE_FIELDS = {"resolution", "width", "height"}


def _cheap(request):
    """Caps the fields whose valid values only cost time (steps, sizes): the contract, not the speed, is
    under test."""
    for name in STEP_FIELDS:
        if hasattr(request, name) and 8 < getattr(request, name) <= 1000:
            setattr(request, name, 8)
    for name in SIZE_FIELDS:
        if hasattr(request, name) and 64 < getattr(request, name) <= 2048:
            setattr(request, name, 64)
    if hasattr(request, "num_images") and request.num_images > 2:
        request.num_images = min(request.num_images, 2) if request.num_images <= 8 else request.num_images
    return request


@pytest.fixture(scope="module")
def caller(guidance_fuzz_server):
    c = Caller(guidance_fuzz_server, SERVICE)
    yield c
    c.close()


def assert_server_distills(caller: Caller) -> None:
    code, reply, _ = caller("Distill", guidance_pb2.DistillRequest(images=_images(1, 9), seed=7, resolution=SIZE))
    assert code == Code.OK
    g = np.frombuffer(reply.grad.data, "<f4" if reply.grad.dtype == common_pb2.Tensor.FLOAT32 else "<f2")
    assert list(reply.grad.shape) == [1, 3, SIZE, SIZE] and np.isfinite(g).all() and np.abs(g).max() > 0


def test_fuzz_guidance_server(caller):
    by_method = seeds()
    words = {"prompt": ["a portrait", "", "p" * 4097], "negative_prompt": ["", "blurry"],
             "backbone": ["", "analytic", "nope"], "scheduler": ["", "ddim", "euler", "x"],
             "text_cache_key": ["", "k1"], "identity_cache_key": ["", "k2"], "name": ["", "x"],
             "expression": ["", "smile"], "identity_adapter": ["", "x"]}
    gen = Generator(words, special={"headforge.v1.Camera": st.one_of(
        st.integers(0, 50).map(_camera), Generator(words).message(common_pb2.Camera.DESCRIPTOR))})
    @fuzz_settings(examples(400))
    @given(method_requests(by_method, gen, caller))
    def run(case):
        method, request = case
        caller(method, _cheap(request))

    run()
    assert_server_distills(caller)
    figures = caller.finish("guidance")
    seen = figures["statuses"]
    assert seen.get("OK", 0) >= 0.05 * figures["requests"] and seen.get("INVALID_ARGUMENT", 0) >= 0.2 * figures["requests"], seen
    for method in ("Distill", "Denoise", "Inpaint", "Generate"):
        assert figures["by_method"].get(f"{method}:OK", 0) >= 1, (method, figures["by_method"])


def test_regression_long_prompt_and_unknown_enums_name_the_field(caller):
    base = seeds()["Distill"][0]
    cases = []
    for field, change in [("conditions.prompt", lambda r: setattr(r.conditions, "prompt", "p" * 4097)),
                          ("conditions.negative_prompt", lambda r: setattr(r.conditions, "negative_prompt", "n" * 5000)),
                          ("variant", lambda r: setattr(r, "variant", 99)),
                          ("weighting", lambda r: setattr(r, "weighting", 42)),
                          ("timesteps.sampling", lambda r: setattr(r.timesteps, "sampling", 17)),
                          ("grad_dtype", lambda r: setattr(r, "grad_dtype", 55))]:
        r = guidance_pb2.DistillRequest()
        r.CopyFrom(base)
        change(r)
        cases.append(("Distill", r, field))
    cases.append(("Generate", guidance_pb2.GenerateRequest(conditions=guidance_pb2.Conditions(prompt="x" * (16 << 20)),
                                                           width=SIZE, height=SIZE, num_steps=1), "conditions.prompt"))
    for method, request, field in cases:
        code, _, info = caller(method, request)
        assert code == Code.INVALID_ARGUMENT, (field, code)
        assert info.field_violations[0].field == field, (field, info)


def test_regression_largest_seed_generates(caller):
    """Image i uses seed + i: with the largest uint64 seed that wrapped past a torch generator's range."""
    code, reply, _ = caller("Generate", guidance_pb2.GenerateRequest(num_images=2, seed=2**64 - 1, width=SIZE,
                                                                     height=SIZE, num_steps=1))
    assert code == Code.OK and list(reply.images.shape) == [2, 3, SIZE, SIZE]
