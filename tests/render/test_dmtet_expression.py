"""Expression DMTet (kind "dmtet_expression"): zero-initialised networks render the template, gradients
reach every network, per-expression codes fit two different shapes, per-expression GLB export with baked
materials, the `expression` field's checks in process and over gRPC, the state round trip, the hash grid
and per-vertex materials in render_triangles. Small sizes (r = 32, small hash grids), one torch thread."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from services.common.errors import InvalidArgument
from services.common.process import ServiceProcess
from services.core.camera_batch import CameraBatch
from services.core.cameras import orbit_camera
from services.render.client import GrpcRenderClient
from services.render.representations.dmtet import DmtetScene
from services.render.representations.dmtet_expression import ExpressionDmtetScene, expression_dmtet_bytes
from services.render.representations.hash_grid import HashGrid
from services.render.representations.mesh_raster import TorchRasterizer, edge_neighbors
from services.render.representations.mesh_render import render_triangles
from services.render.service import InProcessRenderClient, RenderService
from services.render.types import GradientTerm, LrSchedule, OptimizerSpec, RegularizerTerm
from tests.helpers import Tenant as _Tenant

SMALL = {"hash_levels": "4", "hash_features": "2", "hash_log2_size": "12"}
SIZE = 48
VIEWS = ((0, 0), (90, 0), (0, 80))        # front (sees x-y), side (z-y), top (x-z)


def pinholes(views=VIEWS, size=SIZE):
    return [orbit_camera(a, e, 3.0, fov_deg=40, width=size, height=size) for a, e in views]


def init(expressions=2, **kw):
    return {"grid_resolution": 32, "extent": 1.2, "sphere_radius": 0.56, "expressions": expressions, **kw}


@pytest.fixture(scope="module")
def render_server(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    tokens = logs / "tokens.yaml"
    tokens.write_text("tokens: {tok-a: tenant-a}\n")
    server = ServiceProcess(["render", "--port", "0", "--tokens-file", str(tokens)], logs / "render.log")
    yield server
    server.stop()


@pytest.fixture(params=["inprocess", "grpc"])
def client(request):
    if request.param == "inprocess":
        c = _Tenant(InProcessRenderClient(RenderService()), "tenant-a", created_by="create_scene",
                    id_field="scene_id", close_method="close_scene")
    else:
        server = request.getfixturevalue("render_server")
        c = _Tenant(GrpcRenderClient(server.address, token="tok-a"), created_by="create_scene",
                    id_field="scene_id", close_method="close_scene")
        c.wait_ready()
    yield c
    c.cleanup()
    c.close()


@pytest.fixture()
def inprocess():
    c = _Tenant(InProcessRenderClient(RenderService()), "tenant-a", created_by="create_scene", id_field="scene_id",
                close_method="close_scene")
    yield c
    c.cleanup()


# ------------------------------------------------------------------------------------------ pieces

def test_hash_grid_shapes_interpolation_and_gradients():
    g = HashGrid(levels=3, features=2, log2_table_size=8, base_resolution=4, growth=2.0)
    assert g.resolutions == [4, 8, 16]          # 5^3 = 125 <= 256: dense; 9^3 and 17^3: hashed
    x = torch.rand(100, 3)
    out = g(x)
    assert out.shape == (100, 3, 2)
    # trilinear: at a grid corner the feature is that corner's row exactly
    corner = torch.tensor([[0.25, 0.5, 0.75]])
    ijk = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(g(corner)[0, 0], g.tables[0][g._index(ijk, 0)][0])
    # continuous across a cell face
    a, b = torch.tensor([[0.5 - 1e-6, 0.3, 0.3]]), torch.tensor([[0.5 + 1e-6, 0.3, 0.3]])
    assert (g(a) - g(b)).abs().max() < 1e-7
    out.sum().backward()
    assert g.tables.grad.abs().sum() > 0


def test_render_triangles_takes_per_vertex_materials():
    v = torch.tensor([[-1, -1, 0], [1, -1, 0], [0, 1, 0.]])
    f = torch.tensor([[0, 1, 2]])
    cams = CameraBatch.from_pinholes(pinholes(((0, 0),), 32))
    rough = torch.tensor([[0.2], [0.2], [0.8]])
    metal = torch.tensor([[0.0], [1.0], [0.0]])
    out = render_triangles(TorchRasterizer(), v, f, edge_neighbors(f), cams, ["roughness", "metallic", "alpha"],
                           vertex_roughness=rough, vertex_metallic=metal)
    inside = out["alpha"][0, 0] > 0.99
    r, m = out["roughness"][0, 0][inside], out["metallic"][0, 0][inside]
    assert 0.2 <= float(r.min()) and float(r.max()) <= 0.8 and float(r.max() - r.min()) > 0.3
    assert float(m.max() - m.min()) > 0.5


# ------------------------------------------------------------------------------------------ scene

def test_new_scene_renders_the_template_and_init_bytes():
    scene = ExpressionDmtetScene.create(32, 1.2, sphere_radius=0.56, expressions=3, max_offset=0.2, levels=4,
                                        log2_table_size=12)
    plain = DmtetScene.create(32, 1.2, sphere_radius=0.56)
    cams = CameraBatch.from_pinholes(pinholes())
    names = ["alpha", "normal_camera", "depth"]
    ref = plain.render(cams, names)
    for e in range(3):
        with torch.no_grad():
            out = scene.render(cams, names + ["albedo", "roughness", "metallic"], expression=e)
        for k in names:
            torch.testing.assert_close(out[k], ref[k])
        inside = out["alpha"] > 0.99
        assert torch.allclose(out["albedo"][inside.expand(-1, 3, -1, -1)], torch.tensor(0.5), atol=1e-5)
        assert torch.allclose(out["roughness"][inside], torch.tensor(0.5), atol=1e-5)
        assert torch.allclose(out["metallic"][inside], torch.tensor(0.02), atol=1e-5)
    assert len(scene.band()) < 0.4 * 33 ** 3
    assert scene.memory_bytes() == expression_dmtet_bytes(32, 3, 32, 4, 2, 12)


def test_gradients_reach_sdf_net_codes_and_material_net(inprocess):
    info = inprocess.create_scene("dmtet_expression", init(), options=SMALL, seed=3)
    assert set(info.param_counts) == {"sdf_net", "codes", "deform", "material_net", "material_codes"}
    cams = pinholes()
    seen = {}
    for step in range(2):        # the zero read-outs pass gradients to the codes from the second step on
        r = inprocess.render(info.scene_id, cams, ["rgb", "alpha"], requires_grad=True, expression=step % 2)
        terms = [GradientTerm(r.step_handle, "alpha", np.ones_like(r.outputs["alpha"])),
                 GradientTerm(r.step_handle, "rgb", np.ones_like(r.outputs["rgb"]))]
        s = inprocess.apply_gradients(info.scene_id, terms, [RegularizerTerm("laplacian", 1.0),
                                                            RegularizerTerm("sdf_sign", 0.01)])
        for k, v in s.grad_norms.items():
            seen[k] = max(seen.get(k, 0.0), v)
    assert seen["sdf_net"] > 0 and seen["codes"] > 0 and seen["material_net"] > 0 and seen["deform"] > 0
    assert seen["material_codes"] > 0


def ellipsoid_sdf(points: torch.Tensor, axes) -> torch.Tensor:
    a = torch.tensor(axes)
    return ((points / a).norm(dim=-1) - 1) * a.min()


def chamfer(a: torch.Tensor, b: torch.Tensor) -> float:
    d = torch.cdist(a.double(), b.double())
    return float(d.min(1).values.mean() + d.min(0).values.mean()) / 2


def test_expression_codes_fit_two_shapes(inprocess):
    """Template: a sphere of radius 0.56; expression 0 fits an ellipsoid long in x (0.72, 0.48, 0.48),
    expression 1 one long in y (0.48, 0.72, 0.48) (2.2 cells of difference at r = 32), by the service's
    Render -> ApplyGradients loop: 60 steps, expressions alternating, 3 views at 64 x 64, L2 on alpha
    and camera normals, L1 on depth where both are covered (the torch rasteriser's silhouette gradients
    of alpha alone are sparse when triangles are smaller than pixels). Each expression ends nearer its
    own target than the template was and nearer its own target than the other one (about 0.051 vs
    0.059 world units; the template is 0.058 from both). About 30 s on one core."""
    from services.render.representations.dmtet_marching import grid_vertices

    views = pinholes(size=64)
    cams = CameraBatch.from_pinholes(views)
    names = ["alpha", "normal_camera", "depth"]
    template = DmtetScene.create(32, 1.2, sphere_radius=0.56).extract().vertices.detach()
    targets = []
    for axes in ((0.72, 0.48, 0.48), (0.48, 0.72, 0.48)):
        t = DmtetScene(32, 1.2)
        t.sdf.data.copy_(ellipsoid_sdf(grid_vertices(32, 1.2), axes))
        with torch.no_grad():
            targets.append((t.extract().vertices, {k: v.numpy() for k, v in t.render(cams, names).items()}))
    lrs = {"sdf_net": LrSchedule.constant(3e-3), "codes": LrSchedule.constant(3e-3)}
    info = inprocess.create_scene("dmtet_expression", init(max_offset=0.22), options=SMALL, seed=1,
                                  optimizer=OptimizerSpec(lrs=lrs, frozen={"deform", "material_net", "material_codes"}))
    for step in range(60):
        e = step % 2
        r = inprocess.render(info.scene_id, views, names, requires_grad=True, expression=e)
        o, g = r.outputs, targets[e][1]
        both = ((o["alpha"] > 0.5) & (g["alpha"] > 0.5)).astype(np.float32)
        n = o["alpha"].size
        inprocess.apply_gradients(info.scene_id, [
            GradientTerm(r.step_handle, "alpha", 2 * (o["alpha"] - g["alpha"]) / n * 10),
            GradientTerm(r.step_handle, "normal_camera", 2 * (o["normal_camera"] - g["normal_camera"]) / n),
            GradientTerm(r.step_handle, "depth", np.sign(o["depth"] - g["depth"]) * both / n)])
    scene = inprocess.service.store.get("tenant-a", info.scene_id).rep
    with torch.no_grad():
        meshes = [scene.extract(e).vertices for e in range(2)]
    c = [[chamfer(meshes[e], targets[o][0]) for o in range(2)] for e in range(2)]
    for e in range(2):
        assert c[e][e] < 0.95 * chamfer(template, targets[e][0]), c
        assert c[e][e] < 0.95 * c[e][1 - e], c


def test_export_glb_per_expression_with_baked_materials(inprocess):
    import trimesh

    info = inprocess.create_scene("dmtet_expression", init(), options=SMALL, seed=2)
    scene = inprocess.service.store.get("tenant-a", info.scene_id).rep
    with torch.no_grad():      # make the expressions differ: shape and material via the read-outs
        scene.sdf_net.head.bias.fill_(0.3)
        scene.codes[1].mul_(-1)
        scene.material_codes[1].mul_(-1)
        scene.sdf_net.head.weight.normal_(0, 1.0)
        scene.material_net.head.weight.normal_(0, 1.0)
    glbs = [inprocess.export(info.scene_id, "glb", texture_size=64, expression=e) for e in range(2)]
    assert glbs[0] != glbs[1]
    verts = []
    for data in glbs:
        loaded = trimesh.load(io.BytesIO(data), file_type="glb", force="mesh")
        mat = loaded.visual.material
        assert mat.baseColorTexture is not None and mat.metallicRoughnessTexture is not None
        assert np.asarray(mat.baseColorTexture).shape[:2] == (64, 64)
        verts.append(len(loaded.vertices))
    for fmt in ("obj_zip", "ply", "npz"):
        assert len(inprocess.export(info.scene_id, fmt, texture_size=32, expression=1)) > 100


def test_expression_field_is_checked(client):
    info = client.create_scene("dmtet_expression", init(), options=SMALL, seed=1)
    plain = client.create_scene("dmtet", {"grid_resolution": 32, "sphere_radius": 0.5})
    cams = pinholes(((0, 0),), 16)
    client.render(info.scene_id, cams, ["alpha"], expression=1)
    for bad in (2, -1):
        with pytest.raises(InvalidArgument) as err:
            client.render(info.scene_id, cams, ["alpha"], expression=bad)
        assert err.value.field == "expression"
        with pytest.raises(InvalidArgument) as err:
            client.export(info.scene_id, "glb", texture_size=16, expression=bad)
        assert err.value.field == "expression"
    client.render(plain.scene_id, cams, ["alpha"], expression=0)
    with pytest.raises(InvalidArgument) as err:
        client.render(plain.scene_id, cams, ["alpha"], expression=1)
    assert err.value.field == "expression"
    with pytest.raises(InvalidArgument) as err:
        client.export(plain.scene_id, "glb", expression=1)
    assert err.value.field == "expression"
    with pytest.raises(InvalidArgument) as err:        # the kind needs its codes; plain dmtet has none
        client.create_scene("dmtet_expression", init(expressions=0), options=SMALL)
    assert err.value.field == "dmtet.expressions"
    with pytest.raises(InvalidArgument) as err:
        client.create_scene("dmtet", {"grid_resolution": 32, "expressions": 2})
    assert err.value.field == "dmtet.expressions"
    kinds = {k.kind: k for k in client.describe().kinds}
    assert kinds["dmtet_expression"].default_lrs == {"sdf_net": 1e-4, "codes": 1e-3, "deform": 1e-2,
                                                     "material_net": 1e-2, "material_codes": 1e-2}


def test_state_round_trip(client):
    info = client.create_scene("dmtet_expression", init(), options=SMALL, seed=4,
                               optimizer=OptimizerSpec(lrs={"sdf_net": LrSchedule.constant(1e-2)}))
    cams = pinholes(((0, 0), (90, 0)), 24)
    for e in (0, 1):
        r = client.render(info.scene_id, cams, ["alpha"], requires_grad=True, expression=e)
        client.apply_gradients(info.scene_id, [GradientTerm(r.step_handle, "alpha", np.ones_like(r.outputs["alpha"]))])
    before = [client.render(info.scene_id, cams, ["alpha", "rgb"], expression=e).outputs for e in (0, 1)]
    state = client.get_state(info.scene_id)
    other = client.create_scene("dmtet_expression", init(), options=SMALL, seed=9)
    client.set_state(other.scene_id, state)
    restored = client.create_scene("dmtet_expression", asset=(state, "checkpoint"))
    for sid in (other.scene_id, restored.scene_id):
        for e in (0, 1):
            after = client.render(sid, cams, ["alpha", "rgb"], expression=e).outputs
            for k in ("alpha", "rgb"):
                np.testing.assert_allclose(after[k], before[e][k], atol=1e-5)


def test_a_mesh_templates_band_follows_the_surface_not_the_grid():
    """From a mesh, the template's distance is exact past the band (max_offset + a cell), so the network sees a
    shell around the surface; a distance truncated nearer (mesh_sdf_grid's 4 cells) made every vertex 'near'."""
    from services.core.procedural_head import head_mesh
    from services.render.representations.dmtet_expression import ExpressionDmtetScene

    v, f, _ = head_mesh(48)
    scene = ExpressionDmtetScene.create(64, 1.6, mesh=(v, f), expressions=2, max_offset=0.3, levels=2,
                                        log2_table_size=8)
    band = len(scene.band())
    assert 0.05 * 65 ** 3 < band < 0.6 * 65 ** 3, band
