"""GradientCosine: the cosine of candidate parameter gradients with a reference one, answered by the render
service without stepping (PortraitDiffusion's resampling retention), in-process and over gRPC on loopback."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.errors import InvalidArgument, NotFound
from services.common.process import ServiceProcess
from services.core.cameras import sample_orbit_cameras
from services.core.gradient_retention import keep_new
from services.core.procedural_head import head_mesh
from services.render.client import GrpcRenderClient
from services.render.service import InProcessRenderClient, RenderService
from services.render.types import GradientTerm, LrSchedule, OptimizerSpec
from tests.helpers import Tenant as _Tenant

SIZE = 32


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


@pytest.fixture(scope="module")
def coarse_head():
    v, f, _ = head_mesh(resolution=24)
    return {"vertices": v, "faces": f, "texture_size": 32}


def views(n=2):
    return sample_orbit_cameras(n, np.random.default_rng(0), azimuth=(-40, 40), elevation=(0, 10),
                                radius=(3.0, 3.0), fov=(40, 40), width=SIZE, height=SIZE)


def test_cosine_of_reference_negation_and_other_and_nothing_changes(client, coarse_head):
    info = client.create_scene("mesh", coarse_head, optimizer=OptimizerSpec(lrs={"texture": LrSchedule.constant(0.05)}),
                               seed=1)
    out = client.render(info.scene_id, views(), ["rgb"], requires_grad=True)
    h = out.step_handle
    rng = np.random.default_rng(1)
    g = rng.standard_normal(out.outputs["rgb"].shape).astype(np.float32)
    other = rng.standard_normal(g.shape).astype(np.float32)
    near = (g + 0.3 * other).astype(np.float32)
    before = client.get_state(info.scene_id)
    r = client.gradient_cosine(info.scene_id, [GradientTerm(h, "rgb", g)],
                               [[GradientTerm(h, "rgb", g)], [GradientTerm(h, "rgb", -g)],
                                [GradientTerm(h, "rgb", near)], [GradientTerm(h, "rgb", other)]])
    assert r.cosines[0] == pytest.approx(1.0, abs=1e-6) and r.cosines[1] == pytest.approx(-1.0, abs=1e-6)
    assert r.reference_norm > 0 and r.candidate_norms[0] == pytest.approx(r.reference_norm, rel=1e-6)
    assert abs(r.cosines[3]) < r.cosines[2] < 1.0
    assert keep_new(r.cosines[2], r.cosines[3]) and not keep_new(r.cosines[3], r.cosines[2])
    assert r.step == 0
    # weights scale a set, not its direction
    w = client.gradient_cosine(info.scene_id, [GradientTerm(h, "rgb", g)], [[GradientTerm(h, "rgb", g, weight=3.0)]])
    assert w.cosines[0] == pytest.approx(1.0, abs=1e-6) and w.candidate_norms[0] == pytest.approx(3 * w.reference_norm, rel=1e-5)
    # parameters, optimiser state and step unchanged, exactly; the handle still steps
    assert client.get_state(info.scene_id) == before
    step = client.apply_gradients(info.scene_id, [GradientTerm(h, "rgb", g)])
    assert step.step == 1 and client.get_state(info.scene_id) != before


def test_errors_name_the_field(client, coarse_head):
    info = client.create_scene("mesh", coarse_head, seed=2)
    out = client.render(info.scene_id, views(), ["rgb"], requires_grad=True)
    h, g = out.step_handle, np.zeros(out.outputs["rgb"].shape, np.float32)
    with pytest.raises(InvalidArgument) as e:
        client.gradient_cosine(info.scene_id, [GradientTerm(h, "rgb", g)], [[GradientTerm(h, "rgb", g[:, :, :8])]])
    assert e.value.field == "candidates[0].terms[0].grad.shape"
    with pytest.raises(InvalidArgument) as e:
        client.gradient_cosine(info.scene_id, [GradientTerm(h, "rgb", g[:1])], [[GradientTerm(h, "rgb", g)]])
    assert e.value.field == "reference.terms[0].grad.shape"
    with pytest.raises(InvalidArgument) as e:
        client.gradient_cosine(info.scene_id, [GradientTerm(h, "rgb", g)], [])
    assert e.value.field == "candidates"
    with pytest.raises(InvalidArgument) as e:
        client.gradient_cosine(info.scene_id, [GradientTerm(h, "rgb", g)], [[GradientTerm(h, "rgb", g)]] * 17)
    assert e.value.field == "candidates"
    with pytest.raises(NotFound):
        client.gradient_cosine(info.scene_id, [GradientTerm("feed" * 8, "rgb", g)], [[GradientTerm(h, "rgb", g)]])
    with pytest.raises(NotFound):
        client.gradient_cosine("0" * 32, [GradientTerm(h, "rgb", g)], [[GradientTerm(h, "rgb", g)]])
