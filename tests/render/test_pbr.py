"""PBR materials (roughness / metallic UV maps) and shading "pbr" under an equirectangular environment map
(services/render/representations/pbr.py), through the real render service where a scene is needed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from services.common.errors import InvalidArgument
from services.common.process import ServiceProcess
from services.core.cameras import orbit_camera, rotation_y
from services.core.procedural_head import head_mesh
from services.render.client import GrpcRenderClient
from services.render.representations import mesh_io
from services.render.representations.pbr import Environment, env_brdf_approx, pbr_terms, shade_pbr
from services.render.service import InProcessRenderClient, RenderService
from services.render.types import EnvironmentMap, GradientTerm
from tests.helpers import Tenant

SIZE = 40


def uv_sphere(radius=0.8, rows=12, cols=24):
    """A lat-long sphere with per-vertex UVs (u = azimuth, v = polar angle, v down), CCW from outside."""
    verts, uvs = [], []
    for i in range(rows + 1):
        th = math.pi * i / rows
        for j in range(cols + 1):
            ph = 2 * math.pi * j / cols
            verts.append([radius * math.sin(th) * math.sin(ph), radius * math.cos(th), radius * math.sin(th) * math.cos(ph)])
            uvs.append([j / cols, i / rows])
    faces = []
    for i in range(rows):
        for j in range(cols):
            a, b = i * (cols + 1) + j, i * (cols + 1) + j + 1
            c, d = a + cols + 1, b + cols + 1
            faces += [[a, c, b], [b, c, d]]
    return np.array(verts, np.float32), np.array(faces, np.int32), np.array(uvs, np.float32)


def cam(azimuth=0.0, elevation=0.0):
    return orbit_camera(azimuth, elevation, 3.0, fov_deg=40, width=SIZE, height=SIZE)


def sphere_init(texture_value=1.0, **materials):
    v, f, uv = uv_sphere()
    return {"vertices": v, "faces": f, "uvs": uv, "texture": np.full((3, 16, 16), texture_value, np.float32),
            "texture_size": 16, **materials}


def patch_env(azimuth_deg: float, h=16, w=32) -> np.ndarray:
    """Black map with a bright 4 x 4 patch at the equator at this azimuth (0 = +Z, 90 = +X)."""
    env = np.zeros((3, h, w), np.float32)
    col = int(round((azimuth_deg / 360 + 0.5) * w - 0.5)) % w
    env[:, h // 2 - 2:h // 2 + 2, [(col + k) % w for k in range(-2, 2)]] = 20.0
    return env


@pytest.fixture()
def client():
    t = Tenant(InProcessRenderClient(RenderService(device="cpu")), "tenant-a", created_by="create_scene",
               id_field="scene_id", close_method="close_scene")
    yield t
    t.cleanup()


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


# ----------------------------------------------------------------------------------------------- white furnace

def test_white_furnace_shading_function():
    """Constant radiance 1: the diffuse term of albedo 1 (linear), metallic 0 is 1 at every normal (SH
    irradiance of a constant map is exactly pi; 2% allows for the quadrature); a metal of albedo 1 reflects
    1 at every roughness and angle: the prefiltered levels are normalised means (exactly 1) and Filament's
    energy compensation divides out Karis' DFG fit (F0 = 1: (A + B) / (A + B)). Without the compensation
    the fit gives A + B = 1 - 0.55 roughness (the single-scattering GGX loss), checked too."""
    env = Environment.from_map(torch.ones(3, 16, 32))
    g = torch.Generator().manual_seed(0)
    n = _unit(torch.randn(500, 3, generator=g))
    v = _unit(torch.randn(500, 3, generator=g))
    v = torch.where((n * v).sum(-1, keepdim=True) < 0, -v, v)                 # seen from the front
    for r in (0.0, 0.3, 0.6, 1.0):
        rough = torch.full((500, 1), r)
        diffuse, _ = pbr_terms(torch.ones(500, 3), rough, torch.zeros(500, 1), n, v, env)
        assert (diffuse - 1).abs().max() < 0.02, r
        _, spec = pbr_terms(torch.ones(500, 3), rough, torch.ones(500, 1), n, v, env)
        assert (spec - 1).abs().max() < 0.02, r
        A, B = env_brdf_approx(torch.ones(1, 1), torch.full((1, 1), r))
        assert abs(float(A + B) - (1 - 0.55 * r)) < 1e-3


def test_white_furnace_render(client):
    """A white metal sphere (metallic 1) under radiance 1 renders 1 wherever it is fully seen."""
    sid = client.create_scene("mesh", sphere_init(1.0, metallic=1.0, roughness=0.4)).scene_id
    env = EnvironmentMap(np.ones((3, 8, 16), np.float32))
    out = client.render(sid, [cam(20, 10)], ["rgb", "alpha", "metallic", "roughness"], shading="pbr",
                        environment=env, background=(0.0, 0.0, 0.0)).outputs
    inside = out["alpha"][0, 0] > 0.999
    assert inside.sum() > 200
    assert np.abs(out["rgb"][0][:, inside] - 1).max() < 0.02
    assert np.allclose(out["metallic"][0, 0][inside], 1, atol=1e-5)
    assert np.allclose(out["roughness"][0, 0][inside], 0.4, atol=1e-5)


# ----------------------------------------------------------------------------------------------- rotation

def test_y_rotation_equivariance(client):
    """Object, camera and environment rotated together by theta about +Y: the same image. Rotating the
    object and camera alone changes it (the test has teeth)."""
    v, f, c = head_mesh(resolution=20)
    rng = np.random.default_rng(3)
    env = np.repeat(np.repeat(rng.uniform(0, 2, (3, 4, 8)).astype(np.float32), 4, 1), 4, 2)   # (3, 16, 32)
    theta = 73.0
    base = client.create_scene("mesh", {"vertices": v, "faces": f}).scene_id
    turned = client.create_scene("mesh", {"vertices": (v @ rotation_y(theta).T).astype(np.float32),
                                          "faces": f}).scene_id
    kw = dict(outputs=["rgb"], shading="pbr", background=(0.0, 0.0, 0.0))
    a = client.render(base, [cam(10, 5)], environment=EnvironmentMap(env, 0.0), **kw).outputs["rgb"]
    b = client.render(turned, [cam(10 + theta, 5)], environment=EnvironmentMap(env, theta), **kw).outputs["rgb"]
    wrong = client.render(turned, [cam(10 + theta, 5)], environment=EnvironmentMap(env, 0.0), **kw).outputs["rgb"]
    assert np.abs(a - b).mean() < 2e-3 and np.quantile(np.abs(a - b), 0.99) < 0.02
    assert np.abs(a - wrong).mean() > 10 * np.abs(a - b).mean()


# ----------------------------------------------------------------------------------------------- direction

def test_bright_patch_lights_the_side_facing_it(client):
    """Seen from +Z, image right is world +X: a patch at azimuth +90 lights the right half, at -90 the left."""
    sid = client.create_scene("mesh", sphere_init(0.8)).scene_id
    halves = []
    for az in (90.0, -90.0):
        rgb = client.render(sid, [cam()], ["rgb"], shading="pbr", environment=EnvironmentMap(patch_env(az)),
                            background=(0.0, 0.0, 0.0)).outputs["rgb"][0].mean(0)
        halves.append((rgb[:, :SIZE // 2].mean(), rgb[:, SIZE // 2:].mean()))
    (left_a, right_a), (left_b, right_b) = halves
    assert right_a > 2 * left_a and left_b > 2 * right_b


def test_rotation_moves_the_patch(client):
    """A patch at +Z rotated by +90 degrees lights +X (right half), as a patch placed at +X does."""
    sid = client.create_scene("mesh", sphere_init(0.8)).scene_id
    kw = dict(outputs=["rgb"], shading="pbr", background=(0.0, 0.0, 0.0))
    turned = client.render(sid, [cam()], environment=EnvironmentMap(patch_env(0.0), 90.0), **kw).outputs["rgb"]
    placed = client.render(sid, [cam()], environment=EnvironmentMap(patch_env(90.0), 0.0), **kw).outputs["rgb"]
    assert np.abs(turned - placed).max() < 0.05


# ----------------------------------------------------------------------------------------------- gradients

def test_gradients_reach_the_material_maps(client):
    sid = client.create_scene("mesh", sphere_init(0.6, roughness=0.3, metallic=0.5)).scene_id
    r = client.render(sid, [cam(15, 10)], ["rgb", "roughness", "metallic"], shading="pbr", requires_grad=True,
                      environment=EnvironmentMap(patch_env(40.0) + 0.2))
    step = client.apply_gradients(sid, [GradientTerm(r.step_handle, "rgb", np.ones_like(r.outputs["rgb"]))])
    assert step.grad_norms["roughness"] > 0 and step.grad_norms["metallic"] > 0 and step.grad_norms["texture"] > 0


def test_diffuse_only_shading_is_the_diffuse_lobe_and_leaves_the_materials_alone(client):
    """"pbr_diffuse": a white sphere under radiance 1 renders 1 whatever its metallic (the lobe of a dielectric),
    darker than "pbr" adds with its specular; no gradient reaches roughness or metallic, the albedo's does."""
    sid = client.create_scene("mesh", sphere_init(1.0, roughness=0.3, metallic=0.8)).scene_id
    env = EnvironmentMap(np.ones((3, 8, 16), np.float32))
    out = client.render(sid, [cam(20, 10)], ["rgb", "alpha"], shading="pbr_diffuse", environment=env,
                        background=(0.0, 0.0, 0.0)).outputs
    inside = out["alpha"][0, 0] > 0.999
    assert inside.sum() > 200 and np.abs(out["rgb"][0][:, inside] - 1).max() < 0.02
    lit = EnvironmentMap(patch_env(40.0) + 0.2)
    r = client.render(sid, [cam(15, 10)], ["rgb"], shading="pbr_diffuse", requires_grad=True, environment=lit)
    step = client.apply_gradients(sid, [GradientTerm(r.step_handle, "rgb", np.ones_like(r.outputs["rgb"]))])
    assert step.grad_norms["texture"] > 0
    assert step.grad_norms.get("roughness", 0.0) == 0 and step.grad_norms.get("metallic", 0.0) == 0
    with pytest.raises(InvalidArgument, match="environment"):
        client.render(sid, [cam()], ["rgb"], shading="pbr_diffuse")


def test_shading_gradient_matches_finite_differences():
    env = Environment.from_map(torch.as_tensor(patch_env(30.0) + 0.3))
    n = _unit(torch.tensor([[0.3, 0.2, 0.9]]))
    v = _unit(torch.tensor([[0.0, 0.1, 1.0]]))
    albedo = torch.tensor([[0.7, 0.5, 0.4]])
    for r0, m0 in ((0.35, 0.3), (0.7, 0.8)):
        rough = torch.tensor([[r0]], requires_grad=True)
        metal = torch.tensor([[m0]], requires_grad=True)
        shade_pbr(albedo, rough, metal, n, v, env).sum().backward()
        h = 1e-2
        f = lambda r, m: float(shade_pbr(albedo, torch.tensor([[r]]), torch.tensor([[m]]), n, v, env).sum())  # noqa: E731
        fd_r = (f(r0 + h, m0) - f(r0 - h, m0)) / (2 * h)
        fd_m = (f(r0, m0 + h) - f(r0, m0 - h)) / (2 * h)
        assert abs(float(rough.grad) - fd_r) < 0.05 * abs(fd_r) + 1e-3
        assert abs(float(metal.grad) - fd_m) < 0.05 * abs(fd_m) + 1e-3


# ----------------------------------------------------------------------------------------------- export

def test_materials_round_trip_through_glb(client):
    """GLB: baseColorTexture the albedo, metallicRoughnessTexture G = roughness, B = metallic (8-bit PNG)."""
    import io

    import trimesh
    from PIL import Image

    rough = np.tile(np.linspace(0.1, 0.9, 16, dtype=np.float32), (16, 1))
    sid = client.create_scene("mesh", sphere_init(0.5, roughness=rough, metallic=0.7)).scene_id
    glb = client.export(sid, "glb")
    mat = trimesh.load(io.BytesIO(glb), file_type="glb", force="mesh").visual.material
    mr = np.asarray(mat.metallicRoughnessTexture.convert("RGB"), np.float32) / 255
    assert np.abs(mr[..., 1] - rough).max() < 1 / 255 and np.abs(mr[..., 2] - 0.7).max() < 1 / 255
    assert isinstance(mat.baseColorTexture, Image.Image)
    m = mesh_io.load_mesh(glb)
    assert np.abs(m.roughness - rough).max() < 1 / 255 and np.abs(m.metallic - 0.7).max() < 1 / 255
    back = client.create_scene("mesh", asset=(glb, "glb")).scene_id
    assert {"roughness", "metallic"} <= set(client.describe().kinds[[k.kind for k in client.describe().kinds].index("mesh")].outputs)
    a = client.render(sid, [cam(30)], ["roughness", "metallic", "alpha"]).outputs
    b = client.render(back, [cam(30)], ["roughness", "metallic", "alpha"]).outputs
    inside = (a["alpha"][0, 0] > 0.999) & (b["alpha"][0, 0] > 0.999)
    for name in ("roughness", "metallic"):
        assert np.abs(a[name][0, 0][inside] - b[name][0, 0][inside]).mean() < 0.02
    assert "metallicRoughness" not in client.export(sid, "obj_zip").decode("latin-1")


# ----------------------------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("env, field", [
    (EnvironmentMap(-np.ones((3, 8, 16), np.float32)), "environment.values"),
    (EnvironmentMap(np.full((3, 8, 16), np.nan, np.float32)), "environment.values"),
    (EnvironmentMap(np.ones((4, 8, 16), np.float32)), "environment.values"),
    (EnvironmentMap(np.ones((3, 1, 16), np.float32)), "environment.height"),
    (EnvironmentMap(np.ones((3, 8, 16), np.float32), float("inf")), "environment.rotation_y_deg"),
    (None, "environment"),
])
def test_bad_environment_is_invalid_argument(client, env, field):
    sid = client.create_scene("mesh", sphere_init()).scene_id
    with pytest.raises(InvalidArgument) as info:
        client.render(sid, [cam()], ["rgb"], shading="pbr", environment=env)
    assert info.value.field == field


def test_unknown_shading_is_invalid_argument(client):
    sid = client.create_scene("mesh", sphere_init()).scene_id
    with pytest.raises(InvalidArgument) as info:
        client.render(sid, [cam()], ["rgb"], shading="phong")
    assert info.value.field == "shading"


def test_pbr_over_grpc(tmp_path):
    """Over gRPC: a good map renders; a map whose value count is not 3 x height x width is INVALID_ARGUMENT
    naming environment.values; a negative radiance too."""
    import grpc

    from headforge.v1 import render_pb2, render_pb2_grpc

    server = ServiceProcess(["render", "--port", "0"], tmp_path / "render.log")
    try:
        c = GrpcRenderClient(server.address)
        sid = c.create_scene("mesh", sphere_init(1.0, metallic=1.0)).scene_id
        out = c.render(sid, [cam()], ["rgb", "alpha"], shading="pbr",
                       environment=EnvironmentMap(np.ones((3, 8, 16), np.float32))).outputs
        assert np.abs(out["rgb"][0][:, out["alpha"][0, 0] > 0.999] - 1).max() < 0.02
        stub = render_pb2_grpc.RenderServiceStub(grpc.insecure_channel(server.address))
        for env, field in ((render_pb2.EnvironmentMap(values=[1.0] * 10, height=2, width=4), "environment.values"),
                           (render_pb2.EnvironmentMap(values=[-1.0] * 24, height=2, width=4), "environment.values")):
            req = render_pb2.RenderSceneRequest(scene_id=sid, cameras=[cam().to_proto()], outputs=["rgb"],
                                                shading="pbr", environment=env)
            with pytest.raises(grpc.RpcError) as info:
                stub.Render(req, timeout=60)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in info.value.details()
        c.close()
    finally:
        server.stop()


def test_material_maps_survive_a_checkpoint(client):
    sid = client.create_scene("mesh", sphere_init(0.5, roughness=0.25, metallic=0.75)).scene_id
    back = client.create_scene("mesh", asset=(client.get_state(sid), "checkpoint"))
    assert back.param_counts["roughness"] == back.param_counts["metallic"] == 16 * 16
    out = client.render(back.scene_id, [cam()], ["roughness", "metallic", "alpha"]).outputs
    inside = out["alpha"][0, 0] > 0.999
    assert np.allclose(out["roughness"][0, 0][inside], 0.25, atol=1e-5)
    assert np.allclose(out["metallic"][0, 0][inside], 0.75, atol=1e-5)
