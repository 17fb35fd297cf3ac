"""The perceptual term: LPIPS of the reference-view render to the photo with user-given weights (here a
tiny VGG-shaped network with random weights written in torchvision's format; its value means nothing, the
test is about the gradient and the plumbing)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orchestrator.stages.params import Term
from orchestrator.stages.terms import perceptual
from services.core.lpips import LPIPS, random_vgg_state


def test_the_gradient_matches_finite_differences(tmp_path):
    path = tmp_path / "vgg.pth"
    torch.save(random_vgg_state(seed=3), path)
    lpips = LPIPS.from_files(path).double()
    rng = np.random.default_rng(0)
    pred, target = rng.random((1, 3, 32, 32)), rng.random((1, 3, 32, 32))
    loss, grad = perceptual(lambda a, b: lpips(a.double(), b.double()), pred, target)
    assert loss > 0 and grad.shape == pred.shape
    for idx in [(0, 0, 5, 7), (0, 1, 16, 16), (0, 2, 30, 2)]:
        h = 1e-3
        up, down = pred.copy(), pred.copy()
        up[idx] += h
        down[idx] -= h
        fd = (perceptual(lambda a, b: lpips(a.double(), b.double()), up, target)[0]
              - perceptual(lambda a, b: lpips(a.double(), b.double()), down, target)[0]) / (2 * h)
        assert fd == pytest.approx(grad[idx], rel=2e-2, abs=1e-6)
    assert perceptual(lpips, target, target)[0] == pytest.approx(0.0, abs=1e-6)


def test_a_perceptual_term_needs_its_weights():
    with pytest.raises(ValueError, match="lpips_vgg"):
        Term(kind="perceptual")
    assert Term(kind="perceptual", lpips_vgg="/w/vgg16.pth").needs_photo()


def test_relative_weight_paths_resolve_under_the_jobs_models_dir(tmp_path):
    """A job's models_dir (jobs.proto SubmitJobRequest.models_dir) is where the recipe's relative model paths
    (perceptual lpips_vgg / lpips_lin, evaluate clip_model) are on the machine that runs the job."""
    from orchestrator.stages.context import StageContext

    def ctx(models_dir: str) -> StageContext:
        return StageContext(job_id="j", seed=0, images=[], job_prompt="", clients=None, checkpoint_every=10,
                            write_artifact=None, read_artifact=None, report=None, is_cancelled=lambda: False,
                            models_dir=models_dir)

    assert ctx(str(tmp_path)).model_path("lpips/vgg16.pth") == str(tmp_path / "lpips" / "vgg16.pth")
    assert ctx(str(tmp_path)).model_path("/abs/vgg16.pth") == "/abs/vgg16.pth"
    assert ctx("").model_path("lpips/vgg16.pth") == "lpips/vgg16.pth"
    assert ctx(str(tmp_path)).model_path("") == ""
