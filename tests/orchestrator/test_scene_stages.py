"""init / convert / the per-stage optimiser: every representation the render service has can start a job,
from each source a recipe may name, and conversions hand the job to a new scene of the same head."""

from __future__ import annotations

import io

import numpy as np
import pytest
import trimesh

from orchestrator.jobs.artifacts import ArtifactStore
from orchestrator.recipes import load_recipe
from orchestrator.runtime.endpoints import ServiceClients
from orchestrator.runtime.execute import execute
from services.common.errors import InvalidArgument
from services.render.service import InProcessRenderClient


@pytest.fixture()
def run(tmp_path):
    """Run recipe YAML text with an in-process render service; returns (state, events, store, render)."""
    render = InProcessRenderClient()
    store = ArtifactStore(tmp_path.as_uri())

    def go(text: str, job: str = "j"):
        events: list[dict] = []
        state = execute(job, load_recipe(text=text).yaml, [], "", ServiceClients(None, render, None), store,
                        events.append, lambda: False)
        return state, events, store

    go.render = render
    go.store_url = tmp_path.as_uri()
    return go


def _recipe(*stages: str) -> str:
    return "name: t\ninputs: {min_images: 0, max_images: 0}\nstages:\n" + "".join(f"  - {s}\n" for s in stages)


def _glb(store, job="j"):
    return trimesh.load(io.BytesIO(store.read(job, "export/head.glb")), file_type="glb", force="mesh")


@pytest.mark.parametrize("init, fmt, check", [
    ("{representation: gaussians, num_points: 64, color_from_photo: false, gaussians: {sh_degree: 2, opacity: 0.3}}",
     "ply", lambda data: b"f_rest_" in data[:4000]),                          # SH degree 2 -> f_rest fields
    ("{representation: mesh, source: sphere, radius: 0.5, texture_size: 64}", "glb", None),
    ("{representation: mesh, source: head_template, texture_size: 64}", "glb", None),
    ("{representation: dmtet, source: sphere, radius: 0.6, dmtet: {grid_resolution: 32}}", "glb", None),
    ("{representation: triplane, field: {resolution: 16, channels: 8}}", "npz", None),
    ("{representation: pyramid_trigrid, field: {levels: [8, 16], channels: 4, decoder: frozen}}", "npz", None),
])
def test_every_representation_starts_a_job(run, init, fmt, check):
    state, events, store = run(_recipe(f"{{name: init, kind: init, params: {init}}}",
                                       f"{{name: export, kind: export, params: {{formats: [{fmt}]}}}}"))
    assert state == "succeeded", events[-1]
    data = store.read("j", f"export/head.{'zip' if fmt == 'obj_zip' else fmt}")
    assert len(data) > 100 and (check is None or check(data))
    assert run.render.service.store.count() == 0


def test_sphere_and_template_meshes_have_their_shapes(run):
    state, _, store = run(_recipe("{name: init, kind: init, params: {representation: mesh, source: sphere, radius: 0.5}}",
                                  "{name: export, kind: export, params: {formats: [glb]}}"))
    radii = np.linalg.norm(_glb(store).vertices, axis=1)
    assert state == "succeeded" and np.allclose(radii, 0.5, atol=1e-3)
    state, _, store = run(_recipe("{name: init, kind: init, params: {representation: mesh, source: head_template}}",
                                  "{name: export, kind: export, params: {formats: [glb]}}"), job="k")
    from orchestrator.head_template.build import load_template

    extent = np.ptp(_glb(store, "k").vertices, axis=0)
    assert state == "succeeded" and np.allclose(extent, np.ptp(load_template().vertices, axis=0), rtol=1e-3)


def test_mesh_to_dmtet_to_mesh_keeps_the_head(run):
    """A sphere mesh -> DMTet (its SDF on a grid) -> a mesh with xatlas UVs: the surface stays a sphere."""
    state, events, store = run(_recipe(
        "{name: init, kind: init, params: {representation: mesh, source: sphere, radius: 0.6}}",
        "{name: to_dmtet, kind: convert, params: {to: dmtet, dmtet: {grid_resolution: 32}}}",
        "{name: to_mesh, kind: convert, params: {to: mesh, texture_size: 64}}",
        "{name: export, kind: export, params: {formats: [glb]}}"))
    assert state == "succeeded", events[-1]
    mesh = _glb(store)
    radii = np.linalg.norm(mesh.vertices, axis=1)
    assert abs(np.median(radii) - 0.6) < 0.06 and mesh.visual.uv is not None
    assert run.render.service.store.count() == 0


def test_a_conversion_that_does_not_exist_fails_at_load_with_what_exists():
    with pytest.raises(InvalidArgument) as err:
        load_recipe(text=_recipe("{name: init, kind: init, params: {representation: triplane}}",
                                 "{name: c, kind: convert, params: {to: gaussians}}"))
    assert err.value.field == "stages[1].params.to" and "triplane -> gaussians" in err.value.message
    assert "('triplane', 'mesh')" in err.value.message


def test_init_from_an_artifact_starts_from_exactly_that_field(run):
    """A field exported by one job starts another (source: artifact, with the decoder frozen): the same
    tensors come back out."""
    state, _, store = run(_recipe("{name: init, kind: init, params: {representation: triplane, field: {resolution: 16}}}",
                                  "{name: export, kind: export, params: {formats: [npz]}}"))
    assert state == "succeeded"
    store.write("k", "given/field.npz", store.read("j", "export/head.npz"), "")
    state, events, _ = run(_recipe(
        "{name: init, kind: init, params: {representation: triplane, source: artifact, artifact: given/field.npz, "
        "field: {decoder: frozen}}}", "{name: export, kind: export, params: {formats: [npz]}}"), job="k")
    assert state == "succeeded", events[-1]
    a, b = np.load(io.BytesIO(store.read("j", "export/head.npz"))), np.load(io.BytesIO(store.read("k", "export/head.npz")))
    assert set(a.files) == set(b.files) and all(np.array_equal(a[k], b[k]) for k in a.files)


@pytest.mark.parametrize("params, where", [
    ("{representation: mesh, source: random}", "stages[0].params"),
    ("{representation: gaussians, source: artifact}", "stages[0].params"),
    ("{representation: dmtet, dmtet: {grid_resolution: 48}}", "stages[0].params.dmtet.grid_resolution"),
    ("{representation: gaussians, gaussians: {sh_degree: 4}}", "stages[0].params.gaussians.sh_degree"),
    ("{representation: gaussians, optimizer: {kind: adan, betas: [0.9, 0.99]}}", "stages[0].params.optimizer"),
    ("{lrs: {means: 0.1}, optimizer: {lrs: {means: 0.2}}}", "stages[0].params"),
])
def test_bad_init_params_fail_at_load_naming_the_path(params, where):
    with pytest.raises(InvalidArgument) as err:
        load_recipe(text=_recipe(f"{{name: init, kind: init, params: {params}}}"))
    assert err.value.violations[0].field.startswith(where), err.value.violations


def test_optimizer_params_reach_the_render_service():
    from orchestrator.stages.params import OptimizerParams
    from orchestrator.stages.scene import optimizer_spec

    spec = optimizer_spec(OptimizerParams(kind="adan", lrs={"means": [0, 0.01, 0.001, 100], "sh0": 0.02},
                                          interpolation="exponential", betas=(0.98, 0.92, 0.99), eps=1e-15,
                                          weight_decay=0.01, max_grad_norm=1.0, frozen=["opacities"]))
    assert spec.kind == "adan" and spec.betas == (0.98, 0.92, 0.99) and spec.frozen == {"opacities"}
    assert spec.lrs["means"](0) == 0.01 and spec.lrs["means"](100) == pytest.approx(0.001)
    assert spec.lrs["means"](50) == pytest.approx(np.sqrt(0.01 * 0.001))      # exponential between the ends
    assert spec.lrs["sh0"](1000) == 0.02 and spec.eps == 1e-15 and spec.max_grad_norm == 1.0



def test_a_field_converts_to_a_textured_mesh(run, tmp_path):
    """A tri-plane -> mesh (its density surface by marching cubes, xatlas UVs): the job goes on with a mesh."""
    from tests.render.test_fields import _blob_field

    blob = _blob_field((0.5, 0.0, 0.0)).export("npz")
    state, events, store = run(_recipe(
        "{name: init, kind: init, params: {representation: triplane, source: artifact, artifact: given/blob.npz}}",
        "{name: to_mesh, kind: convert, params: {to: mesh, texture_size: 64}}",
        "{name: export, kind: export, params: {formats: [glb]}}"), job="blob") if _put(run, "blob", blob) else None
    assert state == "succeeded", events[-1]
    mesh = _glb(store, "blob")
    assert np.allclose(mesh.vertices.mean(0), (0.5, 0.0, 0.0), atol=0.02) and mesh.visual.uv is not None


def _put(run, job: str, blob: bytes) -> bool:
    store = ArtifactStore(run.store_url)
    store.write(job, "given/blob.npz", blob, "")
    return True
