"""Bad input gets the right error (and the service keeps serving); the per-subject conditions cache."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.auth import reset_tenant, set_tenant
from services.core.cameras import orbit_camera
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.guidance.prepare import view_suffix
from services.guidance.types import (Conditions, ControlInput, DenoiseRequest, DistillRequest, GenerateRequest,
                                     InpaintRequest, TimestepSchedule)

X = np.full((1, 3, 32, 32), 0.5, np.float32)


def _nan():
    x = X.copy()
    x[0, 0, 0, 0] = np.nan
    return x


BAD_DISTILL = [
    (dict(images=X[0]), InvalidArgument, "images"),
    (dict(images=np.full((1, 4, 32, 32), 0.5, np.float32)), InvalidArgument, "images"),
    (dict(images=np.full((1, 3, 8, 8), 0.5, np.float32)), InvalidArgument, "images"),
    (dict(images=np.full((17, 3, 32, 32), 0.5, np.float32)), InvalidArgument, "images"),
    (dict(images=_nan()), InvalidArgument, "images"),
    (dict(images=X * 3), InvalidArgument, "images"),
    (dict(images=X, guidance_scale=0.5), InvalidArgument, "guidance_scale"),
    (dict(images=X, weighting="nope"), InvalidArgument, "weighting"),
    (dict(images=X, timesteps=TimestepSchedule(t_min=0.8, t_max=0.2)), InvalidArgument, "timesteps.t_min"),
    (dict(images=X, timesteps=TimestepSchedule(t=[1.5])), InvalidArgument, "timesteps.t"),
    (dict(images=X, timesteps=TimestepSchedule(t=[0.1, 0.2])), InvalidArgument, "timesteps.t"),
    (dict(images=X, noise=np.zeros((1, 4, 4, 4), np.float32)), InvalidArgument, "noise"),
    (dict(images=X, resolution=4096), InvalidArgument, "resolution"),
    (dict(images=X, grad_clip=-1), InvalidArgument, "grad_clip"),
    (dict(images=X, conditions=Conditions(backbone="sdxl")), InvalidArgument, "conditions.backbone"),
    (dict(images=X, variant="video"), FailedPrecondition, "VARIANT_UNSUPPORTED"),
    (dict(images=X, conditions=Conditions(identity_embedding=np.ones(512, np.float32))), FailedPrecondition,
     "ADAPTER_UNSUPPORTED"),
    (dict(images=X, conditions=Conditions(controls=[ControlInput(kind="normal", image=np.zeros((3, 32, 32)))])),
     FailedPrecondition, "CONTROL_UNSUPPORTED"),
    (dict(images=X, conditions=Conditions(controls=[ControlInput(name="mystery")])), InvalidArgument,
     "conditions.controls[0].name"),
    (dict(images=X, conditions=Conditions(loras=[("normal", 1.0)])), InvalidArgument, "conditions.loras[0].name"),
    (dict(images=X, conditions=Conditions(expression="smiling")), FailedPrecondition, "ADAPTER_UNSUPPORTED"),
    (dict(images=X, conditions=Conditions(view_dependent_prompt=True)), InvalidArgument, "cameras"),
]


@pytest.mark.parametrize("kwargs,error,where", BAD_DISTILL)
def test_bad_distill_requests(analytic, kwargs, error, where):
    with pytest.raises(error) as e:
        analytic.distill(DistillRequest(**kwargs))
    fields = [v.field for v in e.value.violations]
    assert where in fields or e.value.reason == where, (fields, e.value.reason, e.value.message)
    assert analytic.distill(DistillRequest(images=X, seed=1)).grad.shape == X.shape


@pytest.mark.parametrize("call", [
    lambda s: s.denoise(DenoiseRequest(images=X, strength=0)),
    lambda s: s.denoise(DenoiseRequest(images=X, strength=1.5)),
    lambda s: s.denoise(DenoiseRequest(images=X, strength=0.5, num_steps=2000)),
    lambda s: s.denoise(DenoiseRequest(images=X, strength=0.5, scheduler="plms")),
    lambda s: s.inpaint(InpaintRequest(images=X, mask=np.ones((2, 32, 32), np.float32))),
    lambda s: s.inpaint(InpaintRequest(images=X, mask=np.full((1, 32, 32), 2.0, np.float32))),
    lambda s: s.generate(GenerateRequest(width=8)),
    lambda s: s.generate(GenerateRequest(width=4096, height=4096)),
    lambda s: s.generate(GenerateRequest(num_images=99)),
    lambda s: s.generate(GenerateRequest(guidance_scale=-1)),
])
def test_bad_sampling_requests(analytic, call):
    with pytest.raises(InvalidArgument):
        call(analytic)


def test_text_cache_keys_are_per_tenant(analytic, exemplars):
    X = exemplars[1:2]   # the blue square: prompting "red disc" changes its gradient
    with_text = DistillRequest(images=X, seed=3, conditions=Conditions(prompt="red disc", text_cache_key="job-1"),
                               guidance_scale=10)
    full = analytic.distill(with_text)
    from_cache = analytic.distill(DistillRequest(images=X, seed=3, conditions=Conditions(text_cache_key="job-1"),
                                                 guidance_scale=10))
    np.testing.assert_array_equal(full.grad, from_cache.grad)
    plain = analytic.distill(DistillRequest(images=X, seed=3, guidance_scale=10))
    assert not np.allclose(plain.grad, full.grad)   # the cached prompt really was used
    token = set_tenant("someone-else")
    try:
        with pytest.raises(NotFound) as e:
            analytic.distill(DistillRequest(images=X, conditions=Conditions(text_cache_key="job-1")))
        assert e.value.reason == "CONDITIONS_CACHE_MISS"
    finally:
        reset_tenant(token)


def test_cache_expiry_and_lru():
    from services.guidance.cache import ConditionsCache

    now = [0.0]
    cache = ConditionsCache(max_entries=2, ttl_s=10, clock=lambda: now[0])
    cache.put(("t", "b", "text"), "a", 1)
    cache.put(("t", "b", "text"), "b", 2)
    assert cache.get(("t", "b", "text"), "a", "k") == 1       # refreshes a
    cache.put(("t", "b", "text"), "c", 3)                     # evicts b (least recently used)
    with pytest.raises(NotFound):
        cache.get(("t", "b", "text"), "b", "k")
    now[0] = 11
    with pytest.raises(NotFound):
        cache.get(("t", "b", "text"), "a", "k")


def test_view_dependent_prompts():
    cams = [orbit_camera(az, el, 3.0, fov_deg=30, width=32, height=32)
            for az, el in ((0, 0), (90, 10), (-170, 0), (30, 75))]
    assert [view_suffix(c) for c in cams] == [", front view", ", side view", ", back view", ", overhead view"]
