"""Dynamic batching across callers: batched equals unbatched, deadlines, a bounded queue, and a bad request
that fails alone. Fault injection uses small wrappers around the analytic backbone (a gate that holds the
worker, a row that raises), said at each use."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.common.errors import DeadlineExceeded, Internal, ResourceExhausted
from services.guidance.types import Conditions, DistillRequest, GenerateRequest, QueueOptions, TimestepSchedule
from tests.guidance.conftest import analytic_service


def _requests(n=4):
    rng = np.random.default_rng(0)
    prompts = ["red disc", "blue square", "", "red disc"]
    return [DistillRequest(images=rng.uniform(0, 1, (1 + i % 2, 3, 32, 32)).astype(np.float32),
                           conditions=Conditions(prompt=prompts[i % 4]), guidance_scale=[1.0, 7.5, 100.0, 3.0][i % 4],
                           seed=10 + i, return_denoised=True) for i in range(n)]


def _concurrently(svc, reqs, method="distill"):
    with ThreadPoolExecutor(len(reqs)) as pool:
        return list(pool.map(getattr(svc, method), reqs))


def test_batched_results_equal_unbatched():
    reqs = _requests(4)
    alone = analytic_service(max_queue_delay_ms=0)
    expected = [alone.distill(r) for r in reqs]
    assert alone.batcher.stats.largest_batch_requests == 1
    alone.close()

    batched = analytic_service(max_queue_delay_ms=1000, max_batch_images=16)
    got = _concurrently(batched, reqs)
    stats = batched.batcher.stats
    batched.close()
    assert stats.largest_batch_requests >= 3 and stats.batches < len(reqs), stats
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g.grad, e.grad, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(g.denoised, e.denoised, atol=1e-6)
        assert [d.timestep for d in g.diagnostics] == [d.timestep for d in e.diagnostics]


def test_max_batch_images_caps_a_batch():
    svc = analytic_service(max_queue_delay_ms=300, max_batch_images=3)
    reqs = [DistillRequest(images=np.full((2, 3, 32, 32), 0.5, np.float32), seed=i + 1) for i in range(4)]
    _concurrently(svc, reqs)
    assert max(svc.batcher.stats.batch_sizes) <= 3
    svc.close()


def test_requests_with_different_settings_are_not_mixed():
    """Different working resolutions cannot share a batch; both still complete."""
    svc = analytic_service(max_queue_delay_ms=200)
    a = DistillRequest(images=np.full((1, 3, 32, 32), 0.5, np.float32), seed=1)
    b = DistillRequest(images=np.full((1, 3, 32, 32), 0.5, np.float32), seed=1, resolution=16)
    ra, rb = _concurrently(svc, [a, b])
    assert svc.batcher.stats.largest_batch_requests == 1 and svc.batcher.stats.batches == 2
    assert ra.grad.shape == rb.grad.shape == (1, 3, 32, 32)
    svc.close()


class _Gate:
    """Fault injection: wraps a backbone so predict_noise waits for `release` (holds the batch worker)."""

    def __init__(self, inner):
        self.inner, self.release, self.entered = inner, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict_noise(self, *a):
        self.entered.set()
        self.release.wait(10)
        return self.inner.predict_noise(*a)


class _PoisonRow:
    """Fault injection: wraps a backbone so a batch containing timestep 777 raises (a request that passes
    validation but breaks the model)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def predict_noise(self, latents, steps, cond):
        if (steps == 777).any():
            raise RuntimeError("injected failure")
        return self.inner.predict_noise(latents, steps, cond)


def test_deadline_and_queue_full():
    svc = analytic_service(max_queue_delay_ms=0, max_queue_depth=1)
    gate = _Gate(svc.backbones["analytic"])
    svc.backbones["analytic"] = gate
    x = np.full((1, 3, 32, 32), 0.5, np.float32)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(svc.distill, DistillRequest(images=x, seed=1))
        assert gate.entered.wait(5)
        t0 = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            svc.distill(DistillRequest(images=x, seed=2, queue=QueueOptions(deadline=time.time() + 0.3)))
        assert time.monotonic() - t0 < 5.0   # answered at its deadline, not when the worker frees up
        queued = pool.submit(svc.distill, DistillRequest(images=x, seed=3))
        deadline = time.monotonic() + 5
        while svc.batcher.depth() < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(ResourceExhausted) as e:
            svc.distill(DistillRequest(images=x, seed=4))
        assert e.value.reason == "QUEUE_FULL" and e.value.metadata["queue_depth"] == "1"
        gate.release.set()
        assert first.result(10).grad.shape == x.shape
        assert queued.result(10).grad.shape == x.shape
    assert svc.batcher.stats.rejected == 1
    with pytest.raises(DeadlineExceeded):
        svc.distill(DistillRequest(images=x, queue=QueueOptions(deadline=time.time() - 1)))
    svc.close()


def test_one_bad_request_fails_alone():
    svc = analytic_service(max_queue_delay_ms=1000)
    svc.backbones["analytic"] = _PoisonRow(svc.backbones["analytic"])
    x = np.full((1, 3, 32, 32), 0.5, np.float32)
    good = [DistillRequest(images=x, seed=i + 1, timesteps=TimestepSchedule(t=[0.5])) for i in range(2)]
    bad = DistillRequest(images=x, seed=9, timesteps=TimestepSchedule(t=[0.777]))
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(svc.distill, r) for r in (good[0], bad, good[1])]
        assert futures[0].result(10).grad.shape == x.shape
        assert futures[2].result(10).grad.shape == x.shape
        with pytest.raises(Internal, match="injected failure"):
            futures[1].result(10)
    assert svc.batcher.stats.largest_batch_requests == 3
    # the service keeps serving
    assert svc.generate(GenerateRequest(num_steps=2, seed=1)).images.shape == (1, 3, 32, 32)
    svc.close()


def test_priority_is_served_first():
    """With the worker held, a high-priority request queued after a low-priority one runs before it (the
    execution order is read from the timesteps the model sees: t 0.1 first, 0.2 low, 0.3 high)."""
    svc = analytic_service(max_queue_delay_ms=0, max_batch_images=1)
    gate = _Gate(svc.backbones["analytic"])
    svc.backbones["analytic"] = gate
    executed = []
    inner_predict = gate.predict_noise

    def recording_predict(latents, steps, cond):
        executed.append(int(steps[0]))
        return inner_predict(latents, steps, cond)

    gate.predict_noise = recording_predict
    x = np.full((1, 3, 32, 32), 0.5, np.float32)

    def call(t, priority):
        svc.distill(DistillRequest(images=x, seed=1, guidance_scale=1.0, timesteps=TimestepSchedule(t=[t]),
                                   queue=QueueOptions(priority=priority)))

    with ThreadPoolExecutor(3) as pool:
        f0 = pool.submit(call, 0.1, 0)
        assert gate.entered.wait(5)
        f1 = pool.submit(call, 0.2, -5)
        while svc.batcher.depth() < 1:
            time.sleep(0.01)
        f2 = pool.submit(call, 0.3, 5)
        while svc.batcher.depth() < 2:
            time.sleep(0.01)
        gate.release.set()
        for f in (f0, f1, f2):
            f.result(10)
    assert executed == [100, 300, 200]
    svc.close()


def test_grpc_client_backs_off_on_a_full_queue():
    """Over gRPC (an in-process server): with the worker held and the one queue slot taken, a raw call is
    RESOURCE_EXHAUSTED QUEUE_FULL, while the guidance client retries with backoff and succeeds once the
    queue drains."""
    from services.common.client import RetryPolicy
    from services.common.server import ServerConfig, start
    from services.guidance.client import GrpcGuidanceClient
    from services.guidance.servicer import register

    svc = analytic_service(max_queue_delay_ms=0, max_queue_depth=1)
    gate = _Gate(svc.backbones["analytic"])
    svc.backbones["analytic"] = gate
    server = start("guidance", ServerConfig(host="127.0.0.1", port=0), register(svc))
    address = f"127.0.0.1:{server.port}"
    x = np.full((1, 3, 32, 32), 0.5, np.float32)
    patient = GrpcGuidanceClient(address, retry=RetryPolicy(max_attempts=1000, max_backoff_s=0.2, budget_s=30))
    impatient = GrpcGuidanceClient(address, retry=RetryPolicy(max_attempts=1))
    impatient.transport.retry.retry_reasons = ()          # no QUEUE_FULL retry: see the raw status
    try:
        with ThreadPoolExecutor(3) as pool:
            first = pool.submit(patient.distill, DistillRequest(images=x, seed=1))
            assert gate.entered.wait(10)
            queued = pool.submit(patient.distill, DistillRequest(images=x, seed=2))
            while svc.batcher.depth() < 1:
                time.sleep(0.01)
            with pytest.raises(ResourceExhausted) as e:
                impatient.distill(DistillRequest(images=x, seed=3))
            assert e.value.reason == "QUEUE_FULL"
            third = pool.submit(patient.distill, DistillRequest(images=x, seed=3))
            time.sleep(0.5)
            gate.release.set()
            assert all(f.result(30).grad.shape == x.shape for f in (first, queued, third))
        assert svc.batcher.stats.rejected >= 2          # the raw call and at least one of the retried ones
    finally:
        patient.close()
        impatient.close()
        server.stop()
        svc.close()
