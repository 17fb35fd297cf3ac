"""The cluster runtime end to end: Ray started locally, one actor per subject sharing a declared fake GPU,
the face, render and guidance services as real processes on loopback under the local supervisor (the
guidance service with the analytic prior and the tiny SD1.5-layout models), the job store in SQLite on
disk. Faults are real: service processes and actors are killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from orchestrator.jobs.artifacts import ArtifactStore
from orchestrator.jobs.store import JobStore
from orchestrator.jobs.types import TERMINAL, JobSpec
from orchestrator.recipes import load_recipe
from orchestrator.runtime.endpoints import Endpoints
from orchestrator.runtime.ray_runtime import ActorShare, RayRuntime
from orchestrator.runtime.supervisor import ServiceSpec, Supervisor, free_port
from services.common.images import encode_png
from services.common.process import ROOT
from tests.integration.test_server_runtime import sample, scrape
from tests.orchestrator.cluster_checks import alive_subject_actors, open_scenes, settle

K = 4  # subjects sharing the fake GPU


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    import ray

    root = tmp_path_factory.mktemp("cluster")
    done = subprocess.run([sys.executable, "-m", "orchestrator.cli", "models", "make-tiny", str(root / "models")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    tiny = yaml.safe_load((root / "models" / "guidance" / "guidance.yaml").read_text())["backbones"]
    config = root / "models" / "guidance" / "cluster.yaml"
    config.write_text(yaml.safe_dump({"backbones": [{"name": "analytic", "backend": "analytic", "default": True},
                                                    *tiny],
                                      "batching": {"max_batch_images": 16, "max_queue_delay_ms": 30}}))
    metrics_port, render_metrics_port = free_port(), free_port()
    sup = Supervisor([ServiceSpec("face"), ServiceSpec("render", ["--metrics-port", str(render_metrics_port)]),
                      ServiceSpec("guidance", ["--config", str(config), "--metrics-port", str(metrics_port),
                                               "--device", "cpu"])], root / "logs").start()
    store = JobStore(root / "jobs.db")
    runtime = RayRuntime(store, (root / "artifacts").as_uri(),
                         Endpoints(face=sup.address("face"), render=sup.address("render"),
                                   guidance=sup.address("guidance")),
                         share=ActorShare(num_cpus=0.5, resources={"fake_gpu": 1.0 / K}),
                         ray_resources={"fake_gpu": 1.0}, max_active_per_tenant=K)
    runtime.start()
    yield {"store": store, "artifacts": ArtifactStore((root / "artifacts").as_uri()), "runtime": runtime, "supervisor": sup, "metrics_port": metrics_port,
           "render_metrics_port": render_metrics_port}
    runtime.stop()
    ray.shutdown()
    sup.stop()


def submit(store: JobStore, recipe: str, options: dict, images=(), tenant="tenant-a") -> str:
    loaded = load_recipe(recipe, options=options)
    job = store.create(JobSpec(tenant=tenant, recipe=recipe, recipe_yaml=loaded.yaml, recipe_sha256=loaded.sha256,
                               stage_names=[s.name for s in loaded.recipe.stages], images=list(images)))
    return job.id


def wait(store: JobStore, job_id: str, timeout_s: float = 300, until=None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = store.get_any(job_id)
        if (until(job) if until else job.state in TERMINAL):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {store.get_any(job_id).state} after {timeout_s}s")


def stage_step(job, name: str) -> int:
    """The step the store shows for a job's stage (0 before its first progress)."""
    stage = next(s for s in job.stages if s.name == name)
    return stage.progress.step if stage.progress else 0


def optimise_step(job) -> int:
    return stage_step(job, "optimise")


def test_photo_to_gaussians_over_grpc_services(cluster, astronaut):
    """The first slice: photo -> face analysis -> Gaussians with a reference-view loss and SDS from the tiny
    SD model in the guidance process -> PLY export -> evaluation, all through gRPC."""
    store = cluster["store"]
    job_id = submit(store, "sds_gaussians", {
        "stages.optimise.iterations": "10", "stages.init.num_points": "300", "stages.evaluate.resolution": "64",
        "stages.evaluate.turntable_frames": "4",
        "stages.optimise.terms": "[{kind: reference_rgb, weight: 1000}, {kind: sds, weight: 0.05, "
                                 "backbone: sd15-tiny, prompt: a head, resolution: 64}]"}, [encode_png(astronaut)])
    job = wait(store, job_id)
    assert job.state == "succeeded", job.error_message
    names = {a.name for a in job.artifacts}
    assert {"export/head.ply", "turntable.gif", "contact_sheet.png", "metrics.json"} <= names
    assert [s.state for s in job.stages] == ["succeeded"] * 5


def test_k_subjects_share_the_gpu_and_their_guidance_calls_are_batched(cluster):
    store, port = cluster["store"], cluster["metrics_port"]
    before = scrape(port)
    ids = [submit(store, "analytic_prior", {"stages.optimise.iterations": "60", "seed": str(i)}) for i in range(K)]
    jobs = [wait(store, i) for i in ids]
    assert [j.state for j in jobs] == ["succeeded"] * K
    loops = [next(s for s in j.stages if s.name == "optimise") for j in jobs]
    assert max(s.started_at for s in loops) < min(s.finished_at for s in loops)   # all K loops ran at once
    after = scrape(port)
    batches = sample(after, "headforge_batch_requests_count", service="guidance") - \
        sample(before, "headforge_batch_requests_count", service="guidance")
    requests = sample(after, "headforge_batch_requests_sum", service="guidance") - \
        sample(before, "headforge_batch_requests_sum", service="guidance")
    assert requests == K * 60 and batches < requests, (batches, requests)   # subjects met in batches


def test_a_job_waiting_for_a_ray_slot_stays_queued(cluster):
    """K + 2 jobs of two tenants (the per-tenant cap, K, never binds): the fake GPU holds K actor shares, so
    two jobs wait, and they wait as QUEUED, starting only when a slot frees (a true start time)."""
    store = cluster["store"]
    ids = [submit(store, "analytic_prior", {"stages.optimise.iterations": "40", "seed": str(i)},
                  tenant=f"tenant-{'ab'[i % 2]}") for i in range(K + 2)]
    most, waited = 0, False
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        jobs = [store.get_any(i) for i in ids]
        running = sum(j.state == "running" for j in jobs)
        most = max(most, running)
        waited |= running == K and any(j.state == "queued" for j in jobs)
        if all(j.state in TERMINAL for j in jobs):
            break
        time.sleep(0.05)
    assert [j.state for j in jobs] == ["succeeded"] * (K + 2)
    assert most <= K and waited, most
    by_start = sorted(jobs, key=lambda j: j.started_at)
    first_done = min(j.finished_at for j in by_start[:K])
    assert all(j.started_at >= first_done - 0.5 for j in by_start[K:])


def test_guidance_killed_mid_job_is_restarted_and_the_job_completes(cluster):
    store, sup = cluster["store"], cluster["supervisor"]
    restarts = sup.restarts["guidance"]
    scenes, actors = open_scenes(cluster), alive_subject_actors()
    job_id = submit(store, "analytic_prior", {"stages.optimise.iterations": "60", "checkpoint_every": "10"})
    killed_at = optimise_step(wait(store, job_id, 120, until=lambda j: optimise_step(j) >= 14))
    os.kill(sup.pid("guidance"), signal.SIGKILL)
    job = wait(store, job_id)
    assert job.state == "succeeded", job.error_message
    assert sup.restarts["guidance"] == restarts + 1
    state = json.loads(cluster["artifacts"].read(job_id, "checkpoints/state.json"))
    assert state["steps"]["optimise"] == 60
    # the client's retries ride out the restart, or the stage restarts from its last checkpoint
    assert all(r["step"] >= killed_at - 10 for r in state.get("resumed_from", []))
    assert settle(lambda: open_scenes(cluster) == scenes and alive_subject_actors() == actors)   # nothing leaked


def test_render_killed_mid_job_restores_the_scene_from_its_checkpoint(cluster):
    """The render service holds every job's scene; killed, it is restarted empty, and each running job
    restarts its stage from the last checkpoint (scene and state) instead of failing with SCENE_NOT_FOUND."""
    store, sup = cluster["store"], cluster["supervisor"]
    restarts = sup.restarts["render"]
    actors = alive_subject_actors()
    ids = [submit(store, "analytic_prior", {"stages.optimise.iterations": "60", "checkpoint_every": "10",
                                            "seed": str(i)}) for i in range(2)]
    jobs = [wait(store, i, 120, until=lambda j: optimise_step(j) >= 14) for i in ids]
    killed_at = [optimise_step(j) for j in jobs]
    os.kill(sup.pid("render"), signal.SIGKILL)
    jobs = [wait(store, i) for i in ids]
    assert [j.state for j in jobs] == ["succeeded"] * 2, [j.error_message for j in jobs]
    assert sup.restarts["render"] == restarts + 1
    for job_id, at in zip(ids, killed_at):
        state = json.loads(cluster["artifacts"].read(job_id, "checkpoints/state.json"))
        assert [x["stage"] for x in state["service_losses"]] == ["optimise"]
        (resumed,) = state["resumed_from"]
        assert resumed["step"] % 10 == 0 and resumed["step"] >= at - 10   # at most one interval redone
        assert state["steps"]["optimise"] == 60
    # the restarted render holds none of the jobs' scenes (restored, then closed) and no actor outlives its job
    assert settle(lambda: open_scenes(cluster) == 0 and alive_subject_actors() == actors)


def test_actor_killed_mid_stage_resumes_from_its_checkpoint(cluster):
    store, runtime = cluster["store"], cluster["runtime"]
    scenes, actors = open_scenes(cluster), alive_subject_actors()
    job_id = submit(store, "analytic_prior", {"stages.optimise.iterations": "60", "checkpoint_every": "10"})
    job = wait(store, job_id, 120, until=lambda j: optimise_step(j) >= 14)
    killed_at = optimise_step(job)
    os.kill(runtime.actor_pid(job_id), signal.SIGKILL)
    job = wait(store, job_id)
    assert job.state == "succeeded", job.error_message
    stage = next(s for s in job.stages if s.name == "optimise")
    assert stage.resumes == 1
    # the new worker continued from the last checkpoint (every 10 steps): at most 10 steps were redone
    state = json.loads(cluster["artifacts"].read(job_id, "checkpoints/state.json"))
    (resumed,) = state["resumed_from"]
    assert resumed["stage"] == "optimise" and resumed["step"] % 10 == 0 and resumed["step"] >= killed_at - 10
    assert state["steps"]["optimise"] == 60
    # the dead worker's scene is closed (the new worker restored its own, then closed it); no actor is left
    assert settle(lambda: open_scenes(cluster) == scenes and alive_subject_actors() == actors)


def test_cancel_mid_stage_frees_the_scene(cluster):
    store = cluster["store"]
    job_id = submit(store, "analytic_prior", {"stages.optimise.iterations": "5000"})
    baseline = open_scenes(cluster)
    wait(store, job_id, 120, until=lambda j: optimise_step(j) >= 3)
    assert open_scenes(cluster) == baseline + 1
    store.request_cancel("tenant-a", job_id)
    job = wait(store, job_id, 60)
    assert job.state == "cancelled"
    assert next(s for s in job.stages if s.name == "optimise").state == "cancelled"
    assert optimise_step(job) < 5000
    deadline = time.monotonic() + 10
    while open_scenes(cluster) > baseline and time.monotonic() < deadline:
        time.sleep(0.2)
    assert open_scenes(cluster) == baseline      # the render service freed the job's scene


def test_the_fast_recipe_runs_as_a_cluster_job(cluster, astronaut):
    store = cluster["store"]
    job_id = submit(store, "fast", {"stages.texture.texture_size": "256", "stages.fit.fit_steps": "4",
                                    "stages.turntable.frames": "4"}, [encode_png(astronaut)])
    job = wait(store, job_id)
    assert job.state == "succeeded", job.error_message
    assert {"asset.glb", "turntable.gif", "contact_sheet.png", "report.json"} <= {a.name for a in job.artifacts}
