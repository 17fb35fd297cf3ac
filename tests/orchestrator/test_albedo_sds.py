"""An sds term on the "albedo" output with random backgrounds, through the optimise stage against the oracle
prior (a TEST prior): the view-independent colour of Gaussians approaches the known head's, over whatever
background each view drew, because the request carries that background (DistillRequest.background)."""

from __future__ import annotations

import numpy as np
import torch

from orchestrator.jobs.artifacts import ArtifactStore
from orchestrator.recipes import load_recipe
from orchestrator.runtime.endpoints import ServiceClients
from orchestrator.runtime.execute import execute
from services.core.camera_batch import CameraBatch
from services.core.cameras import orbit_camera
from services.core.procedural_head import render_head
from services.guidance.config import BatchingConfig, GuidanceConfig
from services.guidance.service import GuidanceService, InProcessGuidanceClient
from services.render.service import InProcessRenderClient

RECIPE = """
name: albedo_check
inputs: {min_images: 0, max_images: 0, prompt_required: false}
seed: 3
stages:
  - name: init
    kind: init
    params: {representation: gaussians, source: random, num_points: 1000, radius: 0.9, color_from_photo: false,
             gaussians: {sh_degree: 1, opacity: 0.1, strategy: {disabled: true}},
             lrs: {sh0: 0.05, shN: 0.05, means: 0.005, scales: 0.01, opacities: 0.1}}
  - name: optimise
    kind: optimise
    params:
      iterations: 80
      views_per_step: 2
      cameras: {kind: ring, views: 8, elevation: 10, radius: 3.0, fov: 40, resolution: 32, background: {kind: random}}
      terms:
        - {kind: sds, backbone: oracle, output: albedo, guidance_scale: 1, t_range: [0.02, 0.5],
           view_dependent_prompt: false}
  - {name: export, kind: export, params: {formats: [ply]}}
"""


def _albedo_psnr(render, ply: bytes, cams, colours) -> float:
    sid = render.create_scene("gaussians", {}, asset=(ply, "ply")).scene_id
    got = np.concatenate([render.render(sid, [c], ["albedo"], background=b).outputs["albedo"] for c, b in zip(cams, colours)])
    render.close_scene(sid)
    want = render_head(CameraBatch.from_pinholes(cams), torch.from_numpy(colours))["rgb"].numpy()
    return float(10 * np.log10(1 / np.mean((got - want) ** 2)))


def test_albedo_sds_over_random_backgrounds_recovers_the_heads_colour(tmp_path):
    render = InProcessRenderClient()
    guidance = GuidanceService(GuidanceConfig(backbones=[{"name": "oracle", "backend": "oracle", "default": True,
                                                          "native_resolution": 32, "markings": False}],
                                              device="cpu", batching=BatchingConfig(max_queue_delay_ms=0)))
    store = ArtifactStore(tmp_path.as_uri())
    events: list[dict] = []
    state = execute("j", load_recipe(text=RECIPE).yaml, [], "", ServiceClients(None, render, InProcessGuidanceClient(guidance)),
                    store, events.append, lambda: False)
    guidance.close()
    assert state == "succeeded", events[-1]
    cams = [orbit_camera(a, 10, 3.0, fov_deg=40, width=32, height=32) for a in (22.5, 112.5, -157.5)]  # held out
    colours = np.random.default_rng(0).uniform(0, 1, (3, 3)).astype(np.float32)
    grey = render.create_scene("gaussians", {"num_points": 1000, "radius": 0.9}).scene_id
    before = _albedo_psnr(render, render.export(grey, "ply"), cams, colours)
    after = _albedo_psnr(render, store.read("j", "export/head.ply"), cams, colours)
    print(f"held-out albedo PSNR {before:.1f} -> {after:.1f} dB")
    assert after > before + 4, (before, after)
