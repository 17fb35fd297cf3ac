"""The fast recipe as ordinary stages (orchestrator/recipes/builtin/fast.yaml): its stages pass the photo's
face and the fitted head to each other through job artifacts, so a job stopped between stages resumes in
a fresh executor with nothing but the artifact store; report.json comes from the runtime's one writer."""

from __future__ import annotations

import json

import pytest

from orchestrator.jobs.artifacts import ArtifactStore
from orchestrator.recipes import load_recipe
from orchestrator.runtime.endpoints import ServiceClients
from orchestrator.runtime.execute import execute
from services.common.images import encode_png

QUICK = {"stages.texture.texture_size": "128", "stages.fit.fit_steps": "2", "stages.turntable.frames": "4",
         "stages.evaluate.resolution": "128"}


@pytest.fixture(scope="module")
def clients(face_service):
    from services.face.service import InProcessFaceClient
    from services.render.service import InProcessRenderClient

    return ServiceClients(face=InProcessFaceClient(face_service), render=InProcessRenderClient(), guidance=None)


def test_stopped_after_the_fit_the_job_resumes_from_artifacts(tmp_path, astronaut, clients):
    loaded = load_recipe("fast", options=QUICK)
    store = ArtifactStore(tmp_path.as_uri())
    events: list[dict] = []
    state = execute("j1", loaded.yaml, [encode_png(astronaut)], "", clients, store, events.append,
                    lambda: any(e.get("stage") == "texture" for e in events), image_names=["astronaut.png"])
    assert state == "cancelled"
    done = [e["stage"] for e in events if e["kind"] == "stage" and e["state"] == "succeeded"]
    assert done == ["analyse", "fit"] and not store.exists("j1", "asset.glb")
    assert store.exists("j1", "fit/vertices.npy") and store.exists("j1", "preprocess/face.npz")
    assert clients.render.service.store.count() == 0   # the stopped job left no scene open

    events.clear()   # a new executor: what it knows about the job is the artifact store
    state = execute("j1", loaded.yaml, [encode_png(astronaut)], "", clients, store, events.append, lambda: False,
                    image_names=["astronaut.png"])
    assert state == "succeeded", events[-1]
    ran = [e["stage"] for e in events if e["kind"] == "stage" and e["state"] == "succeeded"]
    assert ran == ["texture", "export", "turntable", "evaluate"]
    report = json.loads(store.read("j1", "report.json"))
    assert report["recipe"] == "fast" and report["recipe_sha256"] == loaded.sha256
    assert report["input"]["source"] == "astronaut.png" and report["face"]["faces_found"] == 1
    assert report["fit"]["silhouette_steps"] == 2 and report["texture"]["size"] == 128
    assert set(report["timings_s"]) == {"analyse", "fit", "texture", "export", "turntable", "evaluate", "total"}
    assert report["metrics"]["views"]["frontal"]["face_found"]
    assert report["models"]["head_template"].startswith("headforge-template-v") and report["models"]["face"]
    assert {"asset.glb", "texture.png", "turntable.gif", "contact_sheet.png", "report.json"} <= set(report["artifacts"])
    assert clients.render.service.store.count() == 0


def test_template_stages_without_a_preprocess_fail_with_what_is_missing(tmp_path, clients):
    """Refused when the recipe loads; a stage run without its inputs anyway (a hand-edited state) says the same."""
    from orchestrator.stages.context import StageContext
    from orchestrator.stages.params import TemplateFitParams
    from orchestrator.stages.template_fit import run as run_fit
    from services.common.errors import FailedPrecondition, InvalidArgument

    text = "name: broken\ninputs: {min_images: 0, max_images: 0}\nstages:\n  - {name: fit, kind: template_fit}\n"
    with pytest.raises(InvalidArgument) as err:
        load_recipe(text=text)
    assert err.value.field == "stages[0]" and "put a preprocess stage before it" in err.value.message
    ctx = StageContext("j2", 0, [], "", clients, 10, lambda *a: None, lambda n: b"", lambda p: None, lambda: False,
                       stage="fit")
    with pytest.raises(FailedPrecondition) as failed:
        run_fit(ctx, TemplateFitParams())
    assert failed.value.reason == "NO_PREPROCESS"


def test_run_fast_raises_the_stage_error_and_writes_nothing(tmp_path, clients):
    from skimage import data

    from orchestrator.fast import run_fast
    from services.common.errors import FailedPrecondition

    with pytest.raises(FailedPrecondition) as err:
        run_fast(data.coffee(), tmp_path / "out", face_client=clients.face, render_client=clients.render)
    assert err.value.reason == "NO_FACE" and "no face found" in err.value.message
    assert not (tmp_path / "out").exists()
