"""The closed-loop measure (orchestrator/stages/ground_truth.py, a test stage): the known head itself,
meshed, scores as the truth does; its mirror image (what a flipped camera convention would produce) is
caught by the markings; a sphere is far in shape."""

from __future__ import annotations

import numpy as np
import pytest

from orchestrator.stages.ground_truth import measure
from orchestrator.stages.params import GroundTruthCheckParams
from services.core.procedural_head import head_mesh
from services.render.service import InProcessRenderClient


@pytest.fixture(scope="module")
def render():
    return InProcessRenderClient()


def _mesh_scene(render, vertices, faces, colours):
    import trimesh

    ply = trimesh.Trimesh(vertices, faces, vertex_colors=(colours * 255).astype(np.uint8), process=False).export(
        file_type="ply")
    return render.create_scene("mesh", asset=(ply, "ply")).scene_id


def test_the_true_head_scores_as_the_truth_and_its_mirror_is_caught(render):
    v, f, c = head_mesh(128, markings=True)
    params = GroundTruthCheckParams(resolution=64)
    true = measure(render, _mesh_scene(render, v, f, c), params)
    assert true["psnr_db"] > 24 and true["normal_error_deg"] < 8 and true["chamfer"] < 0.03, true
    assert true["markings"]["correct_side"], true["markings"]
    mirrored = measure(render, _mesh_scene(render, v * np.array([-1, 1, 1], np.float32), f[:, ::-1].copy(), c), params)
    assert not mirrored["markings"]["correct_side"], mirrored["markings"]
    assert mirrored["chamfer"] < 0.03            # the shape is symmetric: only the markings tell
    import trimesh

    sphere = trimesh.creation.icosphere(subdivisions=3, radius=1.0)
    far = measure(render, _mesh_scene(render, np.asarray(sphere.vertices, np.float32), np.asarray(sphere.faces, np.int32),
                                      np.full((len(sphere.vertices), 3), 0.7, np.float32)), params)
    assert far["chamfer"] > 3 * true["chamfer"] and far["psnr_db"] < true["psnr_db"] - 3
