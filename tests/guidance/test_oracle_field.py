"""The oracle prior (a TEST prior) on a field exemplar: with `exemplar_field` its known head is a field file (here a
sample of the tiny random pyramid tri-grid generator, exported as the inversion service exports it), rendered by
services/core/field_render.py exactly as the render service renders that file; Denoise returns it at each camera and
Distill of the exact exemplar has no pull. Nothing here is a result: the weights are random."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from services.common.errors import FailedPrecondition
from services.core.camera_batch import CameraBatch
from services.core.cameras import orbit_camera
from services.core.field_render import FieldRenderer
from services.guidance.config import BatchingConfig, GuidanceConfig
from services.guidance.service import GuidanceService, InProcessGuidanceClient
from services.guidance.types import Conditions, DenoiseRequest, DistillRequest, TimestepSchedule
from services.inversion.tiny import tiny_generator
from services.render.representations.fields import load_field_npz
from tests.guidance.conftest import psnr

SIZE = 32


def camera(azimuth: float, size: int = SIZE):
    return orbit_camera(azimuth, 5.0, 2.7, fov_deg=25, width=size, height=size)


@pytest.fixture(scope="module")
def field_file(tmp_path_factory):
    gen = tiny_generator("tiny-pyramid", seed=0, shape_prior=True, prior_steps=60)
    with torch.no_grad():
        ws = gen.map(torch.randn(1, gen.cfg.z_dim, generator=torch.Generator().manual_seed(2)))
    path = tmp_path_factory.mktemp("exemplar") / "g_w2.npz"
    path.write_bytes(gen.export_field(ws))
    return path


@pytest.fixture(scope="module")
def oracle(field_file):
    entry = {"name": "oracle", "backend": "oracle", "default": True, "native_resolution": SIZE,
             "exemplar_field": field_file.name, "supersample": 1}
    svc = GuidanceService(GuidanceConfig(backbones=[entry], device="cpu", base_dir=str(field_file.parent),
                                         batching=BatchingConfig(max_queue_delay_ms=0)))
    yield InProcessGuidanceClient(svc)
    svc.close()


def test_field_renderer_renders_the_file_as_the_render_service_does(field_file):
    data = field_file.read_bytes()
    cams = CameraBatch.from_pinholes([camera(0), camera(70), camera(180)])
    bg = torch.tensor([[0.2, 0.4, 0.9]] * 3)
    ours = FieldRenderer.from_npz(data).render(cams, ["rgb", "alpha", "normal_camera"], bg)
    with torch.no_grad():
        theirs = load_field_npz(data).render(cams, ["rgb", "alpha", "normal_camera"], bg)
    for k in ours:
        assert torch.allclose(ours[k], theirs[k], atol=1e-4), k
    assert 0.05 < ours["alpha"].mean() < 0.95   # a solid object in view, not empty space or a wall


def test_denoise_returns_the_field_at_each_camera(oracle, field_file):
    cams = [camera(0), camera(90), camera(-120)]
    truth = FieldRenderer.from_npz(field_file.read_bytes()).render(CameraBatch.from_pinholes(cams), ["rgb"])["rgb"].numpy()
    out = oracle.denoise(DenoiseRequest(np.full((3, 3, SIZE, SIZE), 0.5, np.float32), strength=1.0, cameras=cams,
                                        num_steps=10, seed=3)).images
    assert psnr(out, truth) > 28
    assert psnr(out[1:2], truth[2:3]) < psnr(out[1:2], truth[1:2]) - 6   # each image is its own camera's view


def test_distill_of_the_exemplar_has_no_pull(oracle, field_file):
    cam = camera(40)
    exact = FieldRenderer.from_npz(field_file.read_bytes()).render(CameraBatch.from_pinholes([cam]), ["rgb"])["rgb"].numpy()
    other = np.full_like(exact, 0.5)
    grads = [np.abs(oracle.distill(DistillRequest(x, Conditions(prompt="a head"), cameras=[cam], seed=5,
                                                  timesteps=TimestepSchedule(t_min=0.02, t_max=0.3))).grad).mean()
             for x in (exact, other)]
    assert grads[0] < 0.1 * grads[1]
    assert oracle.describe().backbones[0][0].models[0].name == "oracle-field-g_w2.npz"


def test_a_missing_or_bad_exemplar_field_names_the_file(tmp_path):
    for name, content in (("absent.npz", None), ("bad.npz", b"not a zip")):
        if content is not None:
            (tmp_path / name).write_bytes(content)
        entry = {"name": "oracle", "backend": "oracle", "exemplar_field": name}
        with pytest.raises(FailedPrecondition, match=name):
            GuidanceService(GuidanceConfig(backbones=[entry], device="cpu", base_dir=str(tmp_path)))
