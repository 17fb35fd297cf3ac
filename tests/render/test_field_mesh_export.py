"""A field's density surface as a mesh (marching cubes in FieldRepresentation.mesh_data, the glb / ply /
obj_zip exports): it sits where the density is, faces point outwards, colours are the decoder's."""

from __future__ import annotations

import io

import numpy as np
import pytest
import trimesh

from services.render.representations import mesh_io
from tests.render.test_fields import _blob_field


def test_the_blob_field_exports_as_a_closed_outward_mesh_where_the_blob_is():
    rep = _blob_field((0.5, 0.0, 0.0))
    mesh = trimesh.load(io.BytesIO(rep.export("ply")), file_type="ply", process=False)
    centre = mesh.vertices.mean(0)
    assert np.allclose(centre, (0.5, 0.0, 0.0), atol=0.01)
    radii = np.linalg.norm(mesh.vertices - centre, axis=1)
    assert 0.1 < np.median(radii) < 0.25 and mesh.is_watertight
    assert mesh.volume > 0      # counter-clockwise from outside: a positive signed volume
    colours = np.asarray(mesh.visual.vertex_colors)[:, :3] / 255
    assert np.allclose(colours, colours.mean(0), atol=0.02)     # the blob's decoder is grey
    assert len(rep.export("glb")) > 1000


def test_a_field_without_a_surface_says_so():
    rep = _blob_field((0.5, 0.0, 0.0))
    rep.decoder.layers[1].bias.data[0] = -50.0      # density ~ 0 everywhere
    rep.decoder.layers[1].weight.data.zero_()
    with pytest.raises(mesh_io.EmptyMeshError):
        rep.export("glb")
