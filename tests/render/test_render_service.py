"""Scene sessions through the render service's client interface, in-process and over gRPC on loopback:
the Render -> ApplyGradients loop, step handles, tenancy, checkpoints, export, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from services.core.cameras import orbit_camera, sample_orbit_cameras
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted
from services.common.process import ServiceProcess
from services.core.camera_batch import CameraBatch
from services.render.client import GrpcRenderClient
from services.render.service import InProcessRenderClient
from services.render.types import LrSchedule, OptimizerSpec
from services.core.procedural_head import head_mesh, render_head
from services.render.service import RenderService
from services.render.types import GradientTerm, RegularizerTerm
from services.render.types import RenderLimits
from tests.helpers import Tenant as _Tenant

LIMITS = dict(max_scenes_per_tenant=4, max_pending_steps_per_scene=3)


@pytest.fixture(scope="module")
def render_server(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    tokens = logs / "tokens.yaml"
    tokens.write_text("tokens: {tok-a: tenant-a, tok-b: tenant-b}\n")
    server = ServiceProcess(["render", "--port", "0", "--tokens-file", str(tokens), "--max-scenes-per-tenant", "4",
                             "--max-pending-steps", "3"],
                            logs / "render.log")
    yield server
    server.stop()


def Tenant(client, tenant: str | None = None):   # noqa: N802 - reads like the class it makes
    return _Tenant(client, tenant, created_by="create_scene", id_field="scene_id", close_method="close_scene")



@pytest.fixture(params=["inprocess", "grpc"])
def clients(request):
    """(client of tenant A, client of tenant B) on one service."""
    if request.param == "inprocess":
        service = RenderService(RenderLimits(**LIMITS))
        pair = Tenant(InProcessRenderClient(service), "tenant-a"), Tenant(InProcessRenderClient(service), "tenant-b")
    else:
        server = request.getfixturevalue("render_server")
        pair = (Tenant(GrpcRenderClient(server.address, token="tok-a")),
                Tenant(GrpcRenderClient(server.address, token="tok-b")))
        pair[0].wait_ready()
    yield pair
    for t in pair:
        t.cleanup()
        t.close()


@pytest.fixture(scope="module")
def coarse_head():
    v, f, c = head_mesh(resolution=32)
    return {"vertices": v, "faces": f}


def cams(n=2, size=48, seed=0):
    return sample_orbit_cameras(n, np.random.default_rng(seed), azimuth=(-60, 60), elevation=(-10, 20),
                                radius=(3.0, 3.0), fov=(40, 40), width=size, height=size)


def test_render_apply_gradients_loop_reduces_loss(clients, coarse_head):
    a, _ = clients
    info = a.create_scene("mesh", {**coarse_head, "texture_size": 64},
                          optimizer=OptimizerSpec(lrs={"texture": LrSchedule.constant(0.05)}), seed=1)
    assert info.kind == "mesh" and info.param_counts["texture"] == 64 * 64 * 3 and info.step == 0
    views = cams(3)
    target = render_head(CameraBatch.from_pinholes(views))["rgb"].numpy()
    losses = []
    for step in range(12):
        out = a.render(info.scene_id, views, ["rgb"], requires_grad=True)
        assert out.outputs["rgb"].shape == (3, 3, 48, 48) and out.step == step and out.step_handle
        diff = out.outputs["rgb"] - target
        losses.append(float((diff ** 2).mean()))
        r = a.apply_gradients(info.scene_id, [GradientTerm(out.step_handle, "rgb", 2 * diff / diff.size, name="l2")])
        assert r.step == step + 1 and not r.skipped and r.learning_rates["texture"] == pytest.approx(0.05)
        assert r.term_grad_norms["l2"] > 0 and r.grad_norms["texture"] > 0
    assert losses[-1] < 0.7 * losses[0]


def test_step_handles_are_single_use_and_go_stale(clients, coarse_head):
    a, _ = clients
    sid = a.create_scene("mesh", coarse_head).scene_id
    v = cams(1)
    h1 = a.render(sid, v, ["rgb"], requires_grad=True)
    h2 = a.render(sid, v, ["rgb"], requires_grad=True)
    grad = np.zeros_like(h1.outputs["rgb"])
    a.apply_gradients(sid, [GradientTerm(h1.step_handle, "rgb", grad)])
    with pytest.raises(NotFound):  # used
        a.apply_gradients(sid, [GradientTerm(h1.step_handle, "rgb", grad)])
    with pytest.raises(NotFound):  # stale: the parameters changed since it was rendered
        a.apply_gradients(sid, [GradientTerm(h2.step_handle, "rgb", grad)])
    handles = [a.render(sid, v, ["rgb"], requires_grad=True) for _ in range(3)]
    with pytest.raises(ResourceExhausted):
        a.render(sid, v, ["rgb"], requires_grad=True)
    assert all(h.step_handle for h in handles)


def test_bad_gradients_leave_the_scene_unchanged(clients, coarse_head):
    a, _ = clients
    sid = a.create_scene("mesh", {**coarse_head, "texture_size": 32}).scene_id
    v = cams(1)
    before = a.get_state(sid)
    out = a.render(sid, v, ["rgb", "uv"], requires_grad=True)
    good = np.ones_like(out.outputs["rgb"]) * 1e-3
    cases = [
        [GradientTerm(out.step_handle, "rgb", good[..., :-1])],                   # wrong shape
        [GradientTerm(out.step_handle, "rgb", good * np.nan)],                   # NaN
        [GradientTerm(out.step_handle, "uv", np.zeros_like(out.outputs["uv"]))],  # not differentiable
        [GradientTerm(out.step_handle, "depth", good)],                          # not rendered
        [GradientTerm(out.step_handle, "rgb", good)] + [GradientTerm("nope", "rgb", good)],
    ]
    for terms in cases:
        with pytest.raises((InvalidArgument, NotFound)):
            a.apply_gradients(sid, terms)
    with pytest.raises(InvalidArgument):
        a.apply_gradients(sid, [GradientTerm(out.step_handle, "rgb", good)], [RegularizerTerm("nonsense", 1.0)])
    assert a.get_state(sid) == before, "a failed call changed the scene"
    r = a.apply_gradients(sid, [GradientTerm(out.step_handle, "rgb", good)], [RegularizerTerm("laplacian", 0.1)])
    assert r.step == 1 and r.regularizer_values["laplacian"] > 0


def test_tenants_cannot_touch_each_others_scenes(clients, coarse_head):
    a, b = clients
    sid = a.create_scene("mesh", coarse_head).scene_id
    for call in (lambda: b.render(sid, cams(1)), lambda: b.get_state(sid), lambda: b.close_scene(sid),
                 lambda: b.export(sid, "glb")):
        with pytest.raises(PermissionDenied):
            call()
    a.close_scene(sid)
    with pytest.raises(NotFound):
        a.render(sid, cams(1))


def test_scene_cap_per_tenant(clients, coarse_head):
    a, b = clients
    created = []
    try:
        with pytest.raises(ResourceExhausted):
            for _ in range(5):
                created.append(a.create_scene("mesh", coarse_head).scene_id)
        assert len(created) <= 4
        other = b.create_scene("mesh", coarse_head).scene_id  # another tenant is not affected
        b.close_scene(other)
    finally:
        for sid in created:
            a.close_scene(sid)
        a.created.clear()


def test_checkpoint_round_trip_restores_parameters_and_optimizer(clients, coarse_head):
    a, _ = clients
    sid = a.create_scene("mesh", {**coarse_head, "texture_size": 32}).scene_id
    v = cams(1)
    out = a.render(sid, v, ["rgb"], requires_grad=True)
    a.apply_gradients(sid, [GradientTerm(out.step_handle, "rgb", np.full_like(out.outputs["rgb"], 1e-3))])
    state = a.get_state(sid)
    reference = a.render(sid, v, ["rgb", "depth"]).outputs
    out = a.render(sid, v, ["rgb"], requires_grad=True)
    a.apply_gradients(sid, [GradientTerm(out.step_handle, "rgb", np.full_like(out.outputs["rgb"], 1e-2))])
    assert not np.allclose(a.render(sid, v, ["rgb"]).outputs["rgb"], reference["rgb"])
    info = a.set_state(sid, state)
    assert info.step == 1
    restored = a.render(sid, v, ["rgb", "depth"]).outputs
    np.testing.assert_allclose(restored["rgb"], reference["rgb"], atol=1e-6)
    clone = a.create_scene("mesh", asset=(state, "checkpoint"))
    assert clone.step == 1
    np.testing.assert_allclose(a.render(clone.scene_id, v, ["rgb"]).outputs["rgb"], reference["rgb"], atol=1e-6)
    with pytest.raises(InvalidArgument):
        a.set_state(sid, b"not a checkpoint")


def test_export_glb_and_reload_renders_the_same(clients, coarse_head):
    a, _ = clients
    sid = a.create_scene("mesh", {**coarse_head, "texture_size": 64}).scene_id
    glb = a.export(sid, "glb")
    assert glb[:4] == b"glTF"
    again = a.create_scene("mesh", asset=(glb, "glb")).scene_id
    v = cams(2)
    x, y = a.render(sid, v, ["rgb", "alpha"]).outputs, a.render(again, v, ["rgb", "alpha"]).outputs
    assert np.abs(x["alpha"] - y["alpha"]).mean() < 1e-3
    assert np.abs(x["rgb"] - y["rgb"]).mean() < 2e-2
    field = a.create_scene("triplane", {"resolution": 16, "channels": 4}).scene_id
    with pytest.raises(FailedPrecondition):
        a.export(field, "glb")


def test_bad_requests_name_the_problem(clients, coarse_head):
    a, _ = clients
    sid = a.create_scene("mesh", coarse_head).scene_id
    good = orbit_camera(0, 0, 3, fov_deg=40, width=32, height=32)
    nan_cam = orbit_camera(0, 0, 3, fov_deg=40, width=32, height=32)
    nan_cam.K = nan_cam.K.copy()
    nan_cam.K[0, 0] = np.nan
    flat_cam = orbit_camera(0, 0, 3, fov_deg=40, width=32, height=32)
    flat_cam.K = flat_cam.K.copy()
    flat_cam.K[1, 1] = 0.0  # degenerate intrinsics
    for call, exc in [
        (lambda: a.render(sid, [flat_cam], ["rgb"]), InvalidArgument),
        (lambda: a.render(sid, [], ["rgb"]), InvalidArgument),
        (lambda: a.render(sid, [good], ["rgb", "nonsense"]), InvalidArgument),
        (lambda: a.render(sid, [nan_cam], ["rgb"]), InvalidArgument),
        (lambda: a.render(sid, [good, orbit_camera(0, 0, 3, fov_deg=40, width=16, height=16)]), InvalidArgument),
        (lambda: a.create_scene("mesh", {"vertices": np.zeros((0, 3), np.float32),
                                         "faces": np.zeros((0, 3), np.int32)}), InvalidArgument),
        (lambda: a.create_scene("mesh", {"vertices": coarse_head["vertices"],
                                         "faces": coarse_head["faces"] + 10**6}), InvalidArgument),
        (lambda: a.create_scene("gaussians", {"num_points": 100}, options={"bogus": "1"}), InvalidArgument),
        (lambda: a.create_scene("mesh", coarse_head, optimizer=OptimizerSpec(lrs={"nope": LrSchedule()})),
         InvalidArgument),
    ]:
        with pytest.raises(exc):
            call()


def test_describe_lists_every_kind_and_limits():
    d = RenderService(RenderLimits(**LIMITS)).describe()
    kinds = {k.kind: k for k in d.kinds}
    assert set(kinds) == {"gaussians", "mesh", "dmtet", "dmtet_expression", "triplane", "trigrid", "pyramid_trigrid"}
    assert "uv" in kinds["mesh"].outputs and "glb" in kinds["mesh"].export_formats
    assert kinds["gaussians"].default_lrs["means"] > 0 and "ply" in kinds["gaussians"].export_formats
    assert d.limits.max_scenes_per_tenant == 4 and d.device == "cpu"


def test_describe_over_grpc(render_server):
    import grpc

    from headforge.v1 import render_pb2, render_pb2_grpc

    channel = grpc.insecure_channel(render_server.address)
    stub = render_pb2_grpc.RenderServiceStub(channel)
    d = stub.Describe(render_pb2.RenderDescribeRequest(), metadata=[("authorization", "Bearer tok-a")], timeout=30)
    assert len(d.kinds) == 7 and d.max_pending_steps_per_scene == 3 and d.device == "cpu"
    mesh = next(k for k in d.kinds if k.kind == render_pb2.SCENE_KIND_MESH)
    assert render_pb2.ASSET_FORMAT_GLB in mesh.export_formats and "laplacian" in mesh.regularizers
    channel.close()


def test_back_projection_writes_the_seen_texels(coarse_head):
    service = RenderService(RenderLimits(**LIMITS))
    sid = service.create_scene("mesh", {**coarse_head, "texture_size": 64}).scene_id
    cam = orbit_camera(0, 0, 3.0, fov_deg=40, width=64, height=64)
    photo = render_head(CameraBatch.from_pinholes([cam]))["rgb"][0].numpy()
    before = service.render(sid, [cam], ["rgb"]).outputs["rgb"]
    r = service.back_project(sid, photo, cam, write="visible")
    assert r.texture.shape == (3, 64, 64) and r.visibility.shape == (1, 64, 64) and r.texels_written > 100
    after = service.render(sid, [cam], ["rgb", "alpha"]).outputs
    inside = after["alpha"][0, 0] > 0.99
    err_before = np.abs(before[0][:, inside] - photo[:, inside]).mean()
    err_after = np.abs(after["rgb"][0][:, inside] - photo[:, inside]).mean()
    assert err_after < 0.5 * err_before
    back = service.create_scene("triplane", {"resolution": 8, "channels": 4}).scene_id
    with pytest.raises(FailedPrecondition):
        service.back_project(back, photo, cam)


def test_gaussians_densify_inside_apply_gradients_and_export_ply(clients):
    a, _ = clients
    rng = np.random.default_rng(0)
    v, f, c = head_mesh(resolution=32)
    idx = rng.integers(0, len(v), 600)
    sid = a.create_scene("gaussians", {"points": v[idx], "colors": np.full((600, 3), 0.5, np.float32),
                                       "opacity": 0.5,
                                       "strategy": {"densify_from": 1, "densify_every": 3, "densify_until": 100,
                                                    "grad_threshold": 1e-7}}, seed=3).scene_id
    views = cams(2, size=48)
    target = render_head(CameraBatch.from_pinholes(views))["rgb"].numpy()
    counts = []
    for _ in range(6):
        out = a.render(sid, views, ["rgb"], requires_grad=True)
        diff = out.outputs["rgb"] - target
        r = a.apply_gradients(sid, [GradientTerm(out.step_handle, "rgb", 2 * diff / diff.size)])
        counts.append((r.num_gaussians, r.densified, r.pruned))
    assert any(d > 0 for _, d, _ in counts), counts
    assert counts[-1][0] > 600
    ply = a.export(sid, "ply")
    assert ply.startswith(b"ply") and b"f_dc_0" in ply and b"rot_3" in ply
    again = a.create_scene("gaussians", asset=(ply, "ply")).scene_id
    x = a.render(sid, views[:1], ["rgb"]).outputs["rgb"]
    y = a.render(again, views[:1], ["rgb"]).outputs["rgb"]
    np.testing.assert_allclose(x, y, atol=1e-4)


def test_upload_asset_then_create_from_it_by_id(render_server, coarse_head):
    """UploadAsset streams a file in chunks; CreateScene takes its id; other tenants cannot use the id."""
    import grpc

    from headforge.v1 import render_pb2

    a = GrpcRenderClient(render_server.address, token="tok-a")
    b = GrpcRenderClient(render_server.address, token="tok-b")
    sid = a.create_scene("mesh", {**coarse_head, "texture_size": 32}).scene_id
    glb = a.export(sid, "glb")
    asset_id = a.upload_asset(glb, "glb", chunk_bytes=4096)
    req = render_pb2.CreateSceneRequest(kind=render_pb2.SCENE_KIND_MESH, asset=render_pb2.AssetSource(asset_id=asset_id))
    made = a.stub.CreateScene(req, metadata=a.transport.metadata, timeout=60)
    assert made.param_counts["vertices"] > 0
    with pytest.raises(grpc.RpcError) as info:
        b.stub.CreateScene(req, metadata=b.transport.metadata, timeout=60)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    for sid_ in (sid, made.scene_id):
        a.close_scene(sid_)
    a.close()
    b.close()
