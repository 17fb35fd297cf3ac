"""Guidance fixtures: an analytic-prior service (exact closed-form denoiser, no weights) in process."""

from __future__ import annotations

import numpy as np
import pytest

from services.guidance.backbones.analytic import builtin_exemplars
from services.guidance.config import BatchingConfig, GuidanceConfig
from services.guidance.service import GuidanceService


from tests.helpers import single_thread  # noqa: F401 - one torch thread for every module here


def analytic_service(**batching) -> GuidanceService:
    return GuidanceService(GuidanceConfig(batching=BatchingConfig(**batching), device="cpu"))


@pytest.fixture
def analytic():
    svc = analytic_service(max_queue_delay_ms=0)
    yield svc
    svc.close()


@pytest.fixture(scope="session")
def exemplars() -> np.ndarray:
    """(2, 3, 32, 32): [red disc, blue square] in [0, 1]."""
    return builtin_exemplars(32)[0]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((np.asarray(a, np.float64) - b) ** 2) + 1e-12))


@pytest.fixture(scope="module")
def tiny_service(tiny_guidance_yaml):
    from services.guidance.config import load_config

    svc = GuidanceService(load_config(tiny_guidance_yaml, device="cpu").model_copy(
        update={"batching": BatchingConfig(max_queue_delay_ms=0)}))
    yield svc
    svc.close()
