"""texture_inpaint on a real photo (the astronaut, real dlib face models) and the analytic test prior as
the inpainter (its pictures are not a result; this test is about what gets written where): texels the
photo sees keep the photo's colours, and the views paint what no view had written."""

from __future__ import annotations

import io

import numpy as np
import pytest
import trimesh

from orchestrator.jobs.artifacts import ArtifactStore
from orchestrator.recipes import load_recipe
from orchestrator.runtime.endpoints import ServiceClients
from orchestrator.runtime.execute import execute
from services.common.images import encode_png

RECIPE = """
name: paint
stages:
  - {name: analyse, kind: preprocess, params: {reference: photo}}
  - {name: fit, kind: template_fit, params: {fit_steps: 0}}
  - {name: init, kind: init, params: {representation: mesh, source: fitted_template, texture_size: 128}}
  - name: paint
    kind: texture_inpaint
    params: {cameras: {kind: ring, views: 4, start_azimuth: 90, radius: 6.5, fov: 26, resolution: 64},
             num_steps: 4, prompt: a head, normal_control: 0}   # the analytic prior has no ControlNet
  - {name: export, kind: export, params: {formats: [glb]}}
"""


@pytest.fixture(scope="module")
def clients(face_service):
    from services.face.service import InProcessFaceClient
    from services.guidance.service import InProcessGuidanceClient
    from services.render.service import InProcessRenderClient

    return ServiceClients(InProcessFaceClient(face_service), InProcessRenderClient(), InProcessGuidanceClient())


def _texture(glb: bytes) -> np.ndarray:
    mesh = trimesh.load(io.BytesIO(glb), file_type="glb", force="mesh")
    return np.asarray(mesh.visual.material.baseColorTexture.convert("RGB"), np.float32) / 255


def test_photo_texels_are_never_overwritten(tmp_path, astronaut, clients):
    store = ArtifactStore(tmp_path.as_uri())
    events: list[dict] = []
    state = execute("j", load_recipe(text=RECIPE).yaml, [encode_png(astronaut)], "", clients, store, events.append,
                    lambda: False)
    assert state == "succeeded", events[-1]
    texture = _texture(store.read("j", "export/head.glb"))
    # where the photo projects (the same back-projection the stage made first), the texture is the photo's
    render = clients.render
    scene = render.create_scene("mesh", asset=(store.read("j", "export/head.glb"), "glb"))
    try:
        import json

        st = json.loads(store.read("j", "checkpoints/state.json"))
        from orchestrator.stages.context import camera_from_json
        from services.common.images import decode_png

        photo = decode_png(store.read("j", st["reference"]["image"]))[..., :3]
        mask = (decode_png(store.read("j", st["reference"]["mask"]))[..., 0] > 127).astype(np.float32)
        bp = render.back_project(scene.scene_id, photo, camera_from_json(st["reference"]["camera"]), mask=mask,
                                 min_cosine=0.3)
    finally:
        render.close_scene(scene.scene_id)
    seen = bp.visibility[0] > 0
    assert seen.mean() > 0.05
    photo_texels = bp.texture.transpose(1, 2, 0)[seen]
    assert np.abs(texture[seen] - photo_texels).max() < 3 / 255 + 1e-6
    written = st["texture_inpaint"]["paint"]["written"]
    assert written["photo"] > 0 and sum(v for k, v in written.items() if k != "photo") > 0
    kept = json.loads(store.read("j", "report.json"))["texture_inpaint"]["photo_kept"]
    assert kept["pixels"] > 100 and kept["max_change"] == 0.0   # the stage's own account agrees
    grey = np.abs(texture - 0.5).max(-1) < 1 / 255 + 1e-6
    assert grey[~seen].mean() < 0.9     # the views painted texels the photo does not see
