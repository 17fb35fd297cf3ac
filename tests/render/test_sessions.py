"""Scene store rules with a controllable clock: idle expiry, step-handle expiry, caps."""

from __future__ import annotations

import numpy as np
import pytest

from services.common import auth
from services.core.cameras import orbit_camera
from services.common.errors import NotFound, ResourceExhausted
from services.core.procedural_head import head_mesh
from services.render.service import RenderService
from services.render.types import GradientTerm
from services.render.types import RenderLimits


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def setup():
    clock = Clock()
    service = RenderService(RenderLimits(scene_idle_ttl_s=60, step_handle_ttl_s=10, max_tenant_bytes=50_000_000))
    service.store.clock = clock
    v, f, _ = head_mesh(resolution=24)
    return service, clock, {"vertices": v, "faces": f}


def test_idle_scenes_expire_and_calls_refresh_them(setup):
    service, clock, mesh = setup
    sid = service.create_scene("mesh", mesh).scene_id
    cam = [orbit_camera(0, 0, 3, fov_deg=40, width=16, height=16)]
    clock.now += 50
    service.render(sid, cam)           # refreshes
    clock.now += 50
    service.render(sid, cam)           # still alive: 50 s since the last call
    clock.now += 61
    with pytest.raises(NotFound, match="expired"):
        service.render(sid, cam)
    assert service.store.count() == 0


def test_step_handles_expire(setup):
    service, clock, mesh = setup
    sid = service.create_scene("mesh", mesh).scene_id
    cam = [orbit_camera(0, 0, 3, fov_deg=40, width=16, height=16)]
    out = service.render(sid, cam, ["rgb"], requires_grad=True)
    clock.now += 11
    with pytest.raises(NotFound):
        service.apply_gradients(sid, [GradientTerm(out.step_handle, "rgb", np.zeros_like(out.outputs["rgb"]))])


def test_tenant_memory_cap(setup):
    service, clock, mesh = setup
    token = auth.set_tenant("t")
    try:
        service.create_scene("mesh", {**mesh, "texture_size": 1024})      # 12 MB texture
        with pytest.raises(ResourceExhausted) as info:
            for _ in range(4):
                service.create_scene("mesh", {**mesh, "texture_size": 1024})
        assert info.value.metadata["limit"] == "max_tenant_bytes"
    finally:
        auth.reset_tenant(token)


def test_export_scale_and_unsupported_options(setup):
    from services.common.errors import FailedPrecondition

    service, _, mesh = setup
    sid = service.create_scene("mesh", mesh).scene_id
    import io

    import trimesh

    big = trimesh.load(io.BytesIO(service.export(sid, "ply", scale=10.0)), file_type="ply")
    small = trimesh.load(io.BytesIO(service.export(sid, "ply")), file_type="ply")
    assert big.extents == pytest.approx(small.extents * 10, rel=1e-4)
    field = service.create_scene("triplane", {"resolution": 8, "channels": 4}).scene_id
    with pytest.raises(FailedPrecondition):
        service.export(field, "npz", scale=2.0)
