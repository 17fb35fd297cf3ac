"""The fast recipe's GLB is in metres (glTF's unit) with a real head size, and HeadForge reads it back in
world units (the scale is recorded in the GLB's asset.extras)."""

from __future__ import annotations

import numpy as np


def test_fast_glb_is_a_real_head_in_metres(astronaut_head):
    import trimesh

    result, _ = astronaut_head
    mesh = trimesh.load(result.glb, force="mesh")
    width, height, depth = mesh.bounds[1] - mesh.bounds[0]
    assert 0.13 < width < 0.30 and 0.18 < height < 0.40 and 0.15 < depth < 0.35, mesh.bounds


def test_glb_scale_round_trips_to_world_units():
    from services.render.representations.mesh_io import MeshData, export_glb, glb_scale, load_mesh

    rng = np.random.default_rng(0)
    v = rng.normal(size=(4, 3)).astype(np.float32)
    m = MeshData(v, np.array([[0, 1, 2], [0, 2, 3]], np.int64))
    data = export_glb(m, scale=0.1)
    assert abs(glb_scale(data) - 0.1) < 1e-9
    np.testing.assert_allclose(load_mesh(data).vertices, v, rtol=1e-5, atol=1e-6)
    assert glb_scale(export_glb(m)) == 1.0 and glb_scale(b"not a glb at all....") == 1.0
