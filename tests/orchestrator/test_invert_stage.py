"""The invert stage (orchestrator/stages/invert.py) in a recipe preprocess -> invert -> export -> evaluate,
run by run_local on the astronaut: the aligned crop is inverted by the inversion service (in-process, or a
`headforge serve inversion` process on loopback) and the generator's field or mesh becomes the job's scene.

The generator is the project's tiny one (`headforge models make-tiny`'s tiny-triplane): RANDOM WEIGHTS
(plus a blob-shaped density prior). What it renders is not a head and not a result; these tests check the
plumbing (crop, camera, Invert/PTI, the scene hand-over, export, report), and that the optimisation lowers
its loss on this image."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from orchestrator.local import run_local
from orchestrator.recipes import load_recipe
from orchestrator.runtime.endpoints import Endpoints, ServiceClients, build_clients
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.images import encode_png
from services.common.process import ServiceProcess
from services.render.service import InProcessRenderClient
from tests.helpers import single_thread  # noqa: F401 - one torch thread for this module



def _recipe(output: str, export: str, **invert) -> str:
    params = {"generator": "tiny-triplane", "steps": 30, "pti": True, "pti_steps": 10, "progress_every": 5,
              "crop_size": 128, "output": output, "mesh_resolution": 48, **invert}
    return f"""
name: inverted_head
inputs: {{min_images: 1, max_images: 1}}
stages:
  - {{name: preprocess, kind: preprocess, params: {{crop_size: 128}}}}
  - {{name: invert, kind: invert, params: {json.dumps(params)}}}
  - {{name: export, kind: export, params: {{formats: [{export}]}}}}
  - {{name: evaluate, kind: evaluate, params: {{resolution: 64, geometry_resolution: 64, turntable_frames: 0}}}}
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """DIR/inversion/tiny-triplane as `headforge models make-tiny` writes it (random weights, tests only)."""
    from services.inversion.tiny import write_tiny_generators

    root = tmp_path_factory.mktemp("models")
    write_tiny_generators(root / "inversion", names=("tiny-triplane",))
    return root


def _check_inversion(report: dict, kind: str) -> dict:
    inv = report["inversion"]
    assert inv["generator"]["name"] == "tiny-triplane" and inv["generator"]["kind"] == "triplane"
    assert inv["steps"] == 30 and inv["pti_steps"] == 10 and inv["output"]["kind"] == kind
    latent = [h["mse"] for h in inv["history"] if h["stage"] == "invert"]
    pti = [h["mse"] for h in inv["history"] if h["stage"] == "pti"]
    assert len(latent) == 6 and len(pti) == 2
    assert latent[-1] < 0.8 * latent[0]                        # W+ optimisation lowers the masked L2
    assert inv["final"]["pti"]["mse"] < inv["final"]["latent"]["mse"]   # and PTI lowers it further
    assert report["models"]["inversion"][0]["role"] == "generator"
    assert len(report["models"]["inversion"][0]["sha256"]) == 16
    return inv


def test_invert_recipe_in_process_makes_a_triplane_scene(tmp_path, astronaut, models):
    loaded = load_recipe(text=_recipe("field", "npz"))
    events: list[dict] = []
    result = run_local(loaded, [encode_png(astronaut)], "", tmp_path / "out", show_progress=False,
                       endpoints=Endpoints(inversion_models_dir=str(models)), on_event=events.append)
    assert result.state == "succeeded", result.error_message
    report = json.loads((result.out_dir / "report.json").read_text())
    _check_inversion(report, "triplane")
    progress = [e["progress"] for e in events if e["kind"] == "progress" and e["progress"].stage == "invert"]
    assert progress[-1].step == progress[-1].total == 40     # invert steps then PTI steps, as one bar
    crop = (result.out_dir / "invert" / "crop.png").read_bytes()
    assert crop and (result.out_dir / "invert" / "reconstruction.png").is_file()
    w = np.load(io.BytesIO((result.out_dir / "invert" / "latent.npz").read_bytes()))["w"]
    assert w.ndim == 2 and np.isfinite(w).all()
    # the job's scene was the generator's tri-plane: its export is a field NPZ the render service loads as one
    npz = (result.out_dir / "export" / "head.npz").read_bytes()
    render = InProcessRenderClient()
    assert render.create_scene("triplane", asset=(npz, "npz")).kind == "triplane"
    with pytest.raises(InvalidArgument):
        render.create_scene("mesh", asset=(npz, "npz"))
    assert set(report["stage_seconds"]) == {"preprocess", "invert", "export", "evaluate"} and report["metrics"]["views"]


@pytest.fixture(scope="module")
def inversion_server(models, tmp_path_factory):
    log = tmp_path_factory.mktemp("inv-logs") / "inversion.log"
    server = ServiceProcess(["inversion", "--port", "0", "--models-dir", str(models), "--device", "cpu"], log,
                            env={"HEADFORGE_TORCH_THREADS": "1"})
    yield server
    server.stop()


def test_invert_recipe_over_grpc_makes_a_mesh_scene(tmp_path, astronaut, inversion_server):
    loaded = load_recipe(text=_recipe("mesh", "glb"))
    result = run_local(loaded, [encode_png(astronaut)], "", tmp_path / "out", show_progress=False,
                       endpoints=Endpoints(inversion=inversion_server.address))
    assert result.state == "succeeded", result.error_message
    inv = _check_inversion(json.loads((result.out_dir / "report.json").read_text()), "mesh")
    assert inv["output"]["vertices"] > 100 and inv["output"]["faces"] > 100
    glb = (result.out_dir / "export" / "head.glb").read_bytes()
    scene = InProcessRenderClient().create_scene("mesh", asset=(glb, "glb"))
    assert scene.kind == "mesh" and scene.param_counts["vertices"] == 3 * inv["output"]["vertices"]


def test_invert_without_a_generator_fails_saying_so(tmp_path, astronaut):
    result = run_local(load_recipe(text=_recipe("field", "npz")), [encode_png(astronaut)], "", tmp_path / "out",
                       show_progress=False)   # in-process inversion with no models folder: no generator
    assert result.state == "failed" and result.error_reason == "MODELS_MISSING"   # the preflight, before any stage
    assert "tiny-triplane" in result.error_message and result.error_code == "FAILED_PRECONDITION"
    assert not (tmp_path / "out").exists()


def test_invert_params_are_checked_when_the_recipe_loads():
    with pytest.raises(InvalidArgument) as e:
        load_recipe(text=_recipe("field", "npz", l2_weight=0, lpips_weight=0))
    assert e.value.field.startswith("stages[1].params")
    with pytest.raises(InvalidArgument) as e:
        load_recipe(text=_recipe("cloud", "npz"))
    assert e.value.field == "stages[1].params.output"


def test_building_clients_loads_no_generator(models, monkeypatch):
    from services.inversion.generators import checkpoint

    loads: list[str] = []

    def record(path, **kw):
        loads.append(str(path))
        raise FailedPrecondition("not loaded in this test", reason="TEST")

    monkeypatch.setattr(checkpoint, "load_generator", record)
    clients = build_clients(Endpoints(inversion_models_dir=str(models)))
    assert loads == []                                  # building clients loaded nothing
    gens = clients.inversion.describe().generators      # the first call that needs the generator loads it
    assert loads == [str(models / "inversion" / "tiny-triplane")] and not gens[0].available
    clients.close()
    ServiceClients(face=clients.face, render=clients.render, guidance=None).close()   # None clients are skipped
