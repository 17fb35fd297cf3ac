"""Issue 22's fault tests for the face and inversion processes (guidance, render and the Ray actor are in
test_ray_runtime.py, the jobs process in test_service_processes_killed.py), on their own cluster so the
shared dlib-only one is left as it is: Ray started locally, face, render and inversion as real processes on
loopback under the supervisor, the job store in SQLite on disk, SIGKILL for the faults.

The models are the project's tiny ones: face recognises with the tiny InsightFace pack (random weights in the
real buffalo_l layout; dlib detects) so that an `identity` term calls IdentityLoss on every step, and
inversion serves the tiny tri-plane generator (random weights). What they compute is test plumbing, not a
result; these tests check that a killed service loses no job, redoes at most one checkpoint interval (face)
or the interrupted stage (inversion, whose streaming Invert holds no checkpoint), and leaks no render scene
and no Ray actor."""

from __future__ import annotations

import json
import os
import signal

import pytest

from orchestrator.jobs.artifacts import ArtifactStore
from orchestrator.jobs.store import JobStore
from orchestrator.jobs.types import JobSpec
from orchestrator.recipes import load_recipe
from orchestrator.runtime.endpoints import Endpoints
from orchestrator.runtime.ray_runtime import ActorShare, RayRuntime
from orchestrator.runtime.supervisor import ServiceSpec, Supervisor, free_port
from services.common.images import encode_png
from services.face import convert as face_convert
from services.inversion import convert as inversion_convert
from tests.integration.test_server_runtime import sample, scrape
from tests.orchestrator.cluster_checks import alive_subject_actors, open_scenes, settle
from tests.orchestrator.test_ray_runtime import optimise_step, stage_step, wait

CHECKPOINT_EVERY = 10

# preprocess -> init -> optimise with an identity term on every step (one IdentityLoss call per step)
FACE_RECIPE = f"""
name: identity_every_step
inputs: {{min_images: 1, max_images: 1}}
checkpoint_every: {CHECKPOINT_EVERY}
stages:
  - {{name: preprocess, kind: preprocess}}
  - {{name: init, kind: init, params: {{representation: gaussians, num_points: 300, radius: 0.8}}}}
  - name: optimise
    kind: optimise
    params:
      iterations: 60
      reference_resolution: 64
      views_per_step: 1
      cameras: {{kind: orbit, azimuth: [-30, 30], elevation: [-10, 10], radius: 4.0, fov: 35, resolution: 64}}
      terms:
        - {{kind: reference_rgb, weight: 1000.0}}
        - {{kind: identity, weight: 1.0}}
"""

# preprocess -> invert (a long W+ inversion, streamed) -> export
INVERT_RECIPE = """
name: inverted_head
inputs: {min_images: 1, max_images: 1}
stages:
  - {name: preprocess, kind: preprocess, params: {crop_size: 128}}
  - {name: invert, kind: invert, params: {generator: tiny-triplane, steps: 200, pti: false, progress_every: 1,
                                         crop_size: 128, output: field}}
  - {name: export, kind: export, params: {formats: [npz]}}
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray

    from services.face.backends.tiny_insightface import write_tiny_pack
    from services.inversion.tiny import write_tiny_generators

    root = tmp_path_factory.mktemp("faults")
    pack = write_tiny_pack(root / "models" / "buffalo_l")
    write_tiny_generators(root / "models" / "inversion", names=("tiny-triplane",))
    ports = {name: free_port() for name in ("face", "render", "inversion")}
    sup = Supervisor([ServiceSpec("face", ["--detector", "dlib", "--recognizer", "insightface",
                                           "--insightface-dir", str(pack), "--metrics-port", str(ports["face"])]),
                      ServiceSpec("render", ["--metrics-port", str(ports["render"])]),
                      ServiceSpec("inversion", ["--models-dir", str(root / "models"), "--device", "cpu",
                                                "--metrics-port", str(ports["inversion"])])],
                     root / "logs").start()
    store = JobStore(root / "jobs.db")
    runtime = RayRuntime(store, (root / "artifacts").as_uri(),
                         Endpoints(face=sup.address("face"), render=sup.address("render"),
                                   inversion=sup.address("inversion")),
                         share=ActorShare(num_cpus=0.5, resources={"fake_gpu": 0.5}),
                         ray_resources={"fake_gpu": 1.0})
    runtime.start()
    yield {"store": store, "artifacts": ArtifactStore((root / "artifacts").as_uri()), "supervisor": sup,
           "metrics": ports, "render_metrics_port": ports["render"]}
    runtime.stop()
    ray.shutdown()
    sup.stop()


def _submit(store: JobStore, text: str, photo: bytes) -> str:
    loaded = load_recipe(text=text)
    return store.create(JobSpec(tenant="tenant-a", recipe=loaded.recipe.name, recipe_yaml=loaded.yaml,
                                recipe_sha256=loaded.sha256, stage_names=[s.name for s in loaded.recipe.stages],
                                images=[photo])).id


def _calls(port: int, service: str, method: str) -> float:
    """OK calls of METHOD counted by the (current) service process on metrics port `port`."""
    full = {"face": face_convert.SERVICE_NAME, "inversion": inversion_convert.SERVICE_NAME}[service]
    return sample(scrape(port), "headforge_rpc_calls_total", service=service, method=f"/{full}/{method}", code="OK")


def test_face_killed_mid_job_is_restarted_and_the_job_completes(cluster, astronaut):
    """IdentityLoss is called on every step; face is SIGKILLed at step >= 14 (checkpoint every 10). The
    client's retries ride out the restart, or the stage restarts from its last checkpoint: either way the job
    completes all 60 steps, the restarted face process answers the job's later IdentityLoss calls, and no
    scene or actor is left behind."""
    store, sup = cluster["store"], cluster["supervisor"]
    scenes, actors = open_scenes(cluster), alive_subject_actors()
    job_id = _submit(store, FACE_RECIPE, encode_png(astronaut))
    job = wait(store, job_id, 180, until=lambda j: optimise_step(j) >= 14 or j.state != "running" and
               j.state != "queued")
    assert job.state == "running", job.error_message
    killed_at = optimise_step(job)
    assert _calls(cluster["metrics"]["face"], "face", "IdentityLoss") >= killed_at
    os.kill(sup.pid("face"), signal.SIGKILL)
    job = wait(store, job_id)
    assert job.state == "succeeded", job.error_message
    assert sup.restarts["face"] == 1
    state = json.loads(cluster["artifacts"].read(job_id, "checkpoints/state.json"))
    assert state["steps"]["optimise"] == 60
    # the new process's counter: it served the steps after the kill (the store's progress may lag by a step)
    assert _calls(cluster["metrics"]["face"], "face", "IdentityLoss") >= 60 - killed_at - 2
    redone = [r["step"] for r in state.get("resumed_from", [])]   # none when the client's retries rode it out
    assert all(s >= killed_at - CHECKPOINT_EVERY for s in redone)
    assert settle(lambda: open_scenes(cluster) == scenes and alive_subject_actors() == actors)


def test_inversion_killed_mid_invert_reruns_the_stage_and_the_job_completes(cluster, astronaut):
    """The inversion service is SIGKILLed while it streams an Invert: the stream ends UNAVAILABLE, the invert
    stage (its own interval: Invert has no checkpoint inside) runs again once the restarted service answers,
    preprocess is not redone, the job completes and nothing is left open."""
    store, sup = cluster["store"], cluster["supervisor"]
    scenes, actors = open_scenes(cluster), alive_subject_actors()
    job_id = _submit(store, INVERT_RECIPE, encode_png(astronaut))
    job = wait(store, job_id, 180, until=lambda j: stage_step(j, "invert") >= 5 or j.state not in ("queued",
                                                                                                   "running"))
    assert job.state == "running", job.error_message
    os.kill(sup.pid("inversion"), signal.SIGKILL)
    job = wait(store, job_id)
    assert job.state == "succeeded", job.error_message
    assert sup.restarts["inversion"] == 1
    state = json.loads(cluster["artifacts"].read(job_id, "checkpoints/state.json"))
    assert [loss["stage"] for loss in state["service_losses"]] == ["invert"]
    assert state["completed_stages"] == ["preprocess", "invert", "export"]
    assert _calls(cluster["metrics"]["inversion"], "inversion", "ExportField") == 1   # by the restarted process
    assert any(a.name == "export/head.npz" for a in job.artifacts)
    assert settle(lambda: open_scenes(cluster) == scenes and alive_subject_actors() == actors)
