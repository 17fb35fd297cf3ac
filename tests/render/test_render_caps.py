"""Size caps of CreateScene and UploadAsset (issue 22 items 1 and 6), over gRPC to a real render process.

Every size-like init field is bounded, and the bytes a scene would hold are estimated from the request and
checked against the per-scene and per-tenant caps BEFORE anything is allocated: the server's peak memory
(VmHWM) stays small although the refused requests ask for gigabytes. Staged uploads share the tenant's
byte cap with its scenes.
"""

from __future__ import annotations

import json
import time

import grpc
import numpy as np
import pytest

from headforge.v1 import render_pb2
from services.common.errors import InvalidArgument
from services.common.process import ServiceProcess
from services.render.client import GrpcRenderClient
from services.render.convert import chunks, init_to_proto
from services.render.representations import SCENE_KINDS
from services.render.service import RenderService
from services.render.types import RenderLimits

TENANT_BYTES = 32 << 20
Code = grpc.StatusCode
TRIANGLE = {"vertices": np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32), "faces": np.array([[0, 1, 2]], np.int32)}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    proc = ServiceProcess(["render", "--port", "0", "--max-tenant-bytes", str(TENANT_BYTES), "--max-workers", "4"],
                          logs / "render.log")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server):
    c = GrpcRenderClient(server.address, timeout_s=60)
    c.wait_ready()
    yield c
    c.close()


def peak_rss_mb(server) -> float:
    for line in open(f"/proc/{server.proc.pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def create(client, kind: str, init: dict, options: dict | None = None):
    """(status code, reply) of a raw CreateScene."""
    req = render_pb2.CreateSceneRequest(kind=getattr(render_pb2, f"SCENE_KIND_{kind.upper()}"), options=options or {})
    init_to_proto(req, kind, init)
    try:
        return Code.OK, client.stub.CreateScene(req, timeout=60)
    except grpc.RpcError as err:
        return err.code(), err.details()


def test_oversized_inits_are_refused_before_allocation(server, client):
    client.close_scene(client.create_scene("mesh", {**TRIANGLE, "texture_size": 64}).scene_id)  # warm
    before = peak_rss_mb(server)
    cases = [  # (kind, init, options, expected status)
        ("mesh", {**TRIANGLE, "texture_size": 8192}, {}, Code.RESOURCE_EXHAUSTED),     # 1 GiB of texture
        ("mesh", {**TRIANGLE, "texture_size": 2**31 - 1}, {}, Code.INVALID_ARGUMENT),
        ("dmtet", {"grid_resolution": 512}, {}, Code.RESOURCE_EXHAUSTED),              # 2 GiB of grid
        ("dmtet", {"grid_resolution": 2**30}, {}, Code.INVALID_ARGUMENT),
        ("triplane", {"resolution": 4096, "channels": 1024}, {}, Code.RESOURCE_EXHAUSTED),
        ("trigrid", {"resolution": 1024, "channels": 64, "depth": 64}, {}, Code.RESOURCE_EXHAUSTED),
        ("triplane", {"resolution": 16}, {"hidden": "100000,100000"}, Code.RESOURCE_EXHAUSTED),
        ("triplane", {"resolution": 16}, {"rgb_channels": "1000000000"}, Code.RESOURCE_EXHAUSTED),
        ("pyramid_trigrid", {"levels": [2048, 4096]}, {}, Code.RESOURCE_EXHAUSTED),
        ("gaussians", {"num_points": 1_999_999, "sh_degree": 3}, {}, Code.RESOURCE_EXHAUSTED),
        ("gaussians", {"num_points": 2**31 - 1}, {}, Code.INVALID_ARGUMENT),
    ]
    for kind, init, options, expected in cases:
        code, details = create(client, kind, init, options)
        assert code == expected, (kind, init, options, code, details)
    growth = peak_rss_mb(server) - before
    assert growth < 200, f"peak RSS grew {growth:.0f} MB serving refused requests"
    assert client.describe().limits.max_tenant_bytes == TENANT_BYTES  # alive


def test_huge_coordinates_do_not_hang_the_uv_unwrap(client):
    """xatlas loops forever on a triangle with coordinates near 1e30 (its float normals overflow)."""
    mesh = {"vertices": np.array([[0, 0, 0], [1e30, 0, 0], [0, 1e30, 0]], np.float32), "faces": TRIANGLE["faces"]}
    start = time.monotonic()
    code, reply = create(client, "mesh", {**mesh, "texture_size": 64})
    assert code == Code.OK, reply
    assert time.monotonic() - start < 30
    client.close_scene(reply.scene_id)


def upload(client, nbytes: int, seed: int):
    data = np.random.default_rng(seed).bytes(nbytes)
    try:
        return Code.OK, client.stub.UploadAsset(chunks(data, "glb", 1 << 20), timeout=60)
    except grpc.RpcError as err:
        return err.code(), err.details()


def test_uploads_count_against_the_tenant_byte_cap(client):
    first = upload(client, 12 << 20, 1)
    second = upload(client, 12 << 20, 2)
    assert first[0] == second[0] == Code.OK, (first, second)
    code, details = upload(client, 12 << 20, 3)   # 36 MiB > 32 MiB
    assert code == Code.RESOURCE_EXHAUSTED and "max_tenant_bytes" in details, (code, details)
    # a scene of 10 MiB no longer fits beside the 24 MiB of staged assets
    code, details = create(client, "mesh", {**TRIANGLE, "texture_size": 800})
    assert code == Code.RESOURCE_EXHAUSTED, (code, details)
    code, reply = create(client, "mesh", {**TRIANGLE, "texture_size": 256})   # 1 MiB does
    assert code == Code.OK, reply
    client.close_scene(reply.scene_id)


@pytest.mark.parametrize("kind, init, options", [
    ("mesh", {**TRIANGLE, "texture_size": 32}, {}),
    ("mesh", TRIANGLE, {}),
    ("dmtet", {"grid_resolution": 32}, {"color_field": "true"}),
    ("triplane", {"resolution": 16, "channels": 8}, {"hidden": "16,8", "rgb_channels": "5"}),
    ("trigrid", {"resolution": 8, "channels": 4, "depth": 3}, {}),
    ("pyramid_trigrid", {"levels": [8, 16], "channels": 4}, {}),
    ("gaussians", {"num_points": 100, "sh_degree": 2}, {}),
])
def test_estimate_is_the_memory_the_scene_holds(kind, init, options):
    service = RenderService(device="cpu")
    estimate = SCENE_KINDS.get(kind).init_bytes(init, options, service.limits)
    info = service.create_scene(kind, init, options=options)
    if kind == "mesh" and "texture_size" in init:   # xatlas makes at most 3 UVs per face
        assert info.memory_bytes <= estimate <= info.memory_bytes + 3 * 8
    else:
        assert estimate == info.memory_bytes, (estimate, info.memory_bytes)


def test_forged_checkpoint_config_is_refused_before_allocation():
    from safetensors.torch import load, save

    service = RenderService(device="cpu")
    sid = service.create_scene("triplane", {"resolution": 8, "channels": 4}).scene_id
    data = service.get_state(sid)
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    meta = json.loads(header["__metadata__"]["headforge"])
    meta["config"].update(resolution=4096, channels=1024)
    forged = save(load(data), metadata={"headforge": json.dumps(meta)})
    with pytest.raises(InvalidArgument) as info:
        service.create_scene("triplane", asset=(forged, "checkpoint"))
    assert info.value.field == "checkpoint" and "declares" in info.value.message
    with pytest.raises(InvalidArgument):
        service.set_state(sid, forged)


def test_huge_scene_id_is_not_found_with_a_short_message(client):
    with pytest.raises(grpc.RpcError) as info:
        client.stub.CloseScene(render_pb2.CloseSceneRequest(scene_id="s" * 10_000), timeout=30)
    assert info.value.code() == Code.NOT_FOUND and len(info.value.details()) <= 1024, info.value.details()[:200]
