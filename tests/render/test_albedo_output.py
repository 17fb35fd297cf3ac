"""The "albedo" render output (render.proto): the base colour before shading, over the background, for
meshes, DMTet and Gaussians (SH degree 0 only); not for radiance fields."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from services.common.errors import InvalidArgument
from services.core.camera_batch import CameraBatch
from services.core.cameras import orbit_camera
from services.core.procedural_head import head_mesh
from services.render.representations.dmtet import DmtetScene
from services.render.representations.gaussians import GaussianScene
from services.render.representations.mesh import MeshScene

BLUE = torch.tensor([0.1, 0.2, 0.9])


def _cams(views, size=32) -> CameraBatch:
    return CameraBatch.from_pinholes([orbit_camera(a, e, 3.0, fov_deg=40, width=size, height=size) for a, e in views])


def _head(resolution=20):
    v, f, c = head_mesh(resolution=resolution)
    return torch.as_tensor(v, dtype=torch.float32), torch.as_tensor(f), torch.as_tensor(c, dtype=torch.float32)


def test_mesh_albedo_is_the_unshaded_colour():
    v, f, c = _head()
    scene = MeshScene.create(v, f, vertex_colors=c)
    cams = _cams([(0, 0), (120, 10)])
    lit = scene.render(cams, ["rgb", "albedo", "alpha"], background=BLUE, shading="diffuse")
    unlit = scene.render(cams, ["rgb"], background=BLUE)
    torch.testing.assert_close(lit["albedo"], unlit["rgb"])
    on = lit["alpha"][:, 0] > 0.99
    assert on.sum() > 100
    # diffuse shading darkens (ambient 0.3 + Lambert <= 1); the albedo is what it darkens
    assert (lit["rgb"] <= lit["albedo"] + 1e-6).all()
    assert float((lit["albedo"] - lit["rgb"]).detach().permute(1, 0, 2, 3)[:, on].mean()) > 0.02
    corner = lit["albedo"][:, :, 0, 0]
    torch.testing.assert_close(corner, BLUE.expand(2, 3))


def test_mesh_albedo_gradient_reaches_the_colours_not_the_shading():
    v, f, c = _head()
    scene = MeshScene.create(v, f, vertex_colors=c)
    out = scene.render(_cams([(30, 0)]), ["albedo"], shading="diffuse")
    out["albedo"].sum().backward()
    grads = {name: p.grad for name, p in scene.named_parameters() if p.grad is not None}
    assert "vertex_colors" in grads and grads["vertex_colors"].abs().sum() > 0


def test_dmtet_albedo_equals_unlit_rgb():
    v, f, c = _head(16)
    from services.render.representations.mesh_io import MeshData
    scene = DmtetScene.create(24, 1.3, mesh=MeshData(v.numpy(), f.numpy(), vertex_colors=c.numpy()), color_field=True)
    out = scene.render(_cams([(0, 0), (-90, 0)]), ["rgb", "albedo", "alpha"], background=BLUE)
    torch.testing.assert_close(out["albedo"], out["rgb"])
    assert out["alpha"].max() > 0.99


def _gaussians(sh_degree: int) -> GaussianScene:
    g = torch.Generator().manual_seed(3)
    P = 200
    scene = GaussianScene(P, sh_degree)
    with torch.no_grad():
        scene.means.copy_(torch.randn(P, 3, generator=g) * 0.3)
        scene.scales.fill_(math.log(0.12))
        scene.opacities.fill_(1.0)
        scene.sh0.copy_(torch.randn(P, 1, 3, generator=g) * 0.5)
        scene.shN.copy_(torch.randn(*scene.shN.shape, generator=g) * 0.6)
    return scene


def test_gaussians_albedo_is_the_view_independent_colour():
    scene = _gaussians(1)
    cams = _cams([(0, 0), (90, 0)])
    out = scene.render(cams, ["rgb", "albedo"], background=BLUE)
    flat = _gaussians(1)
    with torch.no_grad():
        flat.shN.zero_()
    reference = flat.render(cams, ["rgb"], background=BLUE)["rgb"]
    torch.testing.assert_close(out["albedo"], reference, atol=1e-5, rtol=0)
    assert float((out["rgb"] - out["albedo"]).abs().max()) > 0.05   # the view-dependent part is left out
    out["albedo"].sum().backward()
    assert scene.sh0.grad.abs().sum() > 0
    assert scene.shN.grad is None or scene.shN.grad.abs().sum() == 0


def test_render_service_describes_albedo_where_it_exists():
    from services.render.service import InProcessRenderClient

    client = InProcessRenderClient()
    kinds = {k.kind: set(k.outputs) for k in client.describe().kinds}
    assert {k for k, outs in kinds.items() if "albedo" in outs} == {"mesh", "dmtet", "dmtet_expression", "gaussians"}
    sid = client.create_scene("triplane", {}).scene_id
    with pytest.raises(InvalidArgument) as e:
        client.render(sid, [orbit_camera(0, 0, 3.0, fov_deg=30, width=16, height=16)], ["albedo"])
    assert "albedo" in str(e.value)
    client.close()
