"""refine: Denoise targets at a view list, then regress the scene onto them. With the analytic test prior
(its targets are pictures of its exemplars, not a result) the regression must pull every view towards its
target: the per-step loss falls, on whole views and on random patches."""

from __future__ import annotations

import io

import numpy as np
import pytest

from orchestrator.jobs.artifacts import ArtifactStore
from orchestrator.recipes import load_recipe
from orchestrator.runtime.endpoints import ServiceClients
from orchestrator.runtime.execute import execute


def _recipe(patch: int) -> str:
    return f"""
name: r
inputs: {{min_images: 0, max_images: 0}}
stages:
  - {{name: init, kind: init, params: {{representation: gaussians, num_points: 400, radius: 0.9, color_from_photo: false,
                                      lrs: {{sh0: 0.05, means: 0.002, scales: 0.005, opacities: 0.05}}}}}}
  - name: refine
    kind: refine
    params: {{cameras: {{kind: ring, views: 4, radius: 3.0, fov: 30, resolution: 32,
                        background: {{kind: fixed, color: [0.5, 0.5, 0.5]}}}},
             iterations: 60, strength: 0.9, num_steps: 8, prompt: a red disc, patch_size: {patch}}}
"""


@pytest.mark.parametrize("patch", [0, 16])
def test_regression_pulls_the_views_to_their_denoised_targets(tmp_path, patch):
    from services.guidance.service import InProcessGuidanceClient
    from services.render.service import InProcessRenderClient

    store = ArtifactStore(tmp_path.as_uri())
    events: list[dict] = []
    clients = ServiceClients(None, InProcessRenderClient(), InProcessGuidanceClient())
    state = execute("j", load_recipe(text=_recipe(patch)).yaml, [], "", clients, store, events.append, lambda: False)
    assert state == "succeeded", events[-1]
    targets = np.load(io.BytesIO(store.read("j", "refine/refine/targets_0.npz")))
    assert targets["images"].shape == (4, 3, 32, 32) and targets["K"].shape == (4, 3, 3)
    losses = [e["progress"].metrics["refine"] for e in events if e["kind"] == "progress"]
    assert len(losses) == 60
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    assert last < 0.6 * first, (first, last)
