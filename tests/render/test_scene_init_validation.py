"""CreateScene with bad init values or options, for every scene kind, in process and over gRPC: the
error is INVALID_ARGUMENT and names the field ("gaussians.opacity", "field.resolution", ...)."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from headforge.v1 import render_pb2, render_pb2_grpc
from services.common.errors import InvalidArgument
from services.common.process import ServiceProcess
from services.render import convert
from services.render.service import InProcessRenderClient, RenderService

TRIANGLE = {"vertices": np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32),
            "faces": np.array([[0, 1, 2]], np.int32)}

# (kind, init, options, the field the error must name)
BAD = [
    ("gaussians", {"num_points": 10, "opacity": 1.5}, {}, "gaussians.opacity"),
    ("gaussians", {"num_points": 10, "sh_degree": 4}, {}, "gaussians.sh_degree"),
    ("gaussians", {"num_points": 10, "radius": -1.0}, {}, "gaussians.radius"),
    ("gaussians", {"num_points": 3_000_000}, {}, "gaussians.num_points"),
    ("gaussians", {"num_points": 10, "strategy": {"densify_every": -5}}, {}, "gaussians.strategy.densify_every"),
    ("gaussians", {"num_points": 10}, {"tile_size": "12"}, "options.tile_size"),
    ("gaussians", {"num_points": 10}, {"backend": "opengl"}, "options.backend"),
    ("mesh", {**TRIANGLE, "texture_size": -1}, {}, "mesh.texture_size"),
    ("mesh", {**TRIANGLE, "faces": np.array([[0, 1, 7]], np.int32)}, {}, "mesh.faces"),
    ("mesh", TRIANGLE, {"flat_normals": "maybe"}, "options.flat_normals"),
    ("dmtet", {"grid_resolution": 100}, {}, "dmtet.grid_resolution"),
    ("dmtet", {"grid_resolution": 32, "extent": -1.0}, {}, "dmtet.extent"),
    ("dmtet", {"grid_resolution": 32, "extent": 1.0, "sphere_radius": 5.0}, {}, "dmtet.sphere_radius"),
    ("dmtet", {"grid_resolution": 32, "texture_size": -4}, {}, "dmtet.texture_size"),
    ("triplane", {"resolution": -1}, {}, "field.resolution"),
    ("trigrid", {"resolution": 8, "box_size": -1.0}, {}, "field.box_size"),
    ("trigrid", {"resolution": 8, "channels": -3}, {}, "field.channels"),
    ("pyramid_trigrid", {"levels": [16, 8]}, {}, "field.levels"),
]
IDS = [f"{kind}-{field}" for kind, _, _, field in BAD]


@pytest.fixture(scope="module")
def render_server(tmp_path_factory):
    server = ServiceProcess(["render", "--port", "0"], tmp_path_factory.mktemp("logs") / "render.log")
    yield server
    server.stop()


@pytest.mark.parametrize("kind, init, options, field", BAD, ids=IDS)
def test_bad_init_names_the_field_in_process(kind, init, options, field):
    client = InProcessRenderClient(RenderService(device="cpu"))
    with pytest.raises(InvalidArgument) as info:
        client.create_scene(kind, init, options=options)
    assert info.value.field == field
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("kind, init, options, field", BAD, ids=IDS)
def test_bad_init_names_the_field_over_grpc(render_server, kind, init, options, field):
    req = render_pb2.CreateSceneRequest(kind=convert.KIND_ENUMS[kind], options=options)
    convert.init_to_proto(req, kind, init)
    with grpc.insecure_channel(render_server.address) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        with pytest.raises(grpc.RpcError) as info:
            render_pb2_grpc.RenderServiceStub(channel).CreateScene(req, timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(f"{field}:"), info.value.details()


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(InvalidArgument) as info:
        InProcessRenderClient(RenderService(device="cpu")).create_scene("voxels", {})
    assert info.value.field == "kind"
    for kind in ("gaussians", "mesh", "dmtet", "triplane", "trigrid", "pyramid_trigrid"):
        assert kind in info.value.message


def _sphere_glb() -> bytes:
    import trimesh

    return trimesh.creation.icosphere(subdivisions=2, radius=0.5).export(file_type="glb")


def test_dmtet_from_a_mesh_asset_fits_that_mesh(render_server):
    """dmtet init mesh_asset (a GLB) gives the SDF of that mesh, in process and over gRPC (it used to be
    ignored: the default sphere came back), and the extracted surface has the asset's radius."""
    import trimesh

    from services.render.client import GrpcRenderClient

    glb = _sphere_glb()
    client = GrpcRenderClient(render_server.address)
    try:
        for c in (InProcessRenderClient(RenderService(device="cpu")), client):
            info = c.create_scene("dmtet", {"grid_resolution": 32, "extent": 1.2, "mesh_asset": (glb, "glb")})
            mesh = trimesh.load(__import__("io").BytesIO(c.export(info.scene_id, "glb")), file_type="glb",
                                force="mesh")
            radii = np.linalg.norm(mesh.vertices, axis=1)
            assert abs(float(np.median(radii)) - 0.5) < 0.06, float(np.median(radii))
    finally:
        client.close()


def test_dmtet_mesh_asset_that_is_not_a_mesh_names_the_field():
    client = InProcessRenderClient(RenderService(device="cpu"))
    with pytest.raises(InvalidArgument) as info:
        client.create_scene("dmtet", {"grid_resolution": 32, "mesh_asset": "not bytes"})
    assert info.value.field == "dmtet.mesh_asset"


def test_describe_over_grpc_is_the_in_process_description(render_server):
    from services.render.client import GrpcRenderClient

    client = GrpcRenderClient(render_server.address)
    try:
        remote = client.describe()
    finally:
        client.close()
    local = RenderService(device="cpu").describe()
    assert remote.limits == local.limits and remote.kinds == local.kinds
    assert remote.dmtet_resolutions == local.dmtet_resolutions
