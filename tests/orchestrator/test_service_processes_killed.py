"""Issue 22's fault test for the jobs process (guidance, render and the actor: test_ray_runtime.py; face and
  inversion: test_face_inversion_killed.py):
- the jobs process (its local Ray with it), SIGKILLed mid-job under the supervisor, is restarted, finds the
  job still RUNNING in its SQLite store and resumes it from the last checkpoint: the job completes with at
  most one checkpoint interval redone and the render service holds no scene afterwards (the dead worker's
  scene is closed when the new worker restores its own), and no process of the killed one's Ray (the job's
  actor, raylet, GCS, agents) is left running."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil
import yaml

from orchestrator.jobs.artifacts import ArtifactStore
from orchestrator.jobs.client import GrpcJobsClient
from orchestrator.runtime.supervisor import ServiceSpec, Supervisor, free_port
from tests.integration.test_server_runtime import sample, scrape
from tests.orchestrator.cluster_checks import settle


def _wait_terminal(client, job_id: str, timeout_s: float = 300):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get(job_id).state in ("succeeded", "failed", "cancelled"):
                break
        except Exception:  # noqa: BLE001 - the jobs service is restarting
            pass
        time.sleep(0.5)
    return client.get(job_id)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _optimise_step(job) -> int:
    stage = next(s for s in job.stages if s.name == "optimise")
    return stage.progress.step if stage.progress else 0


def test_jobs_process_killed_mid_job_resumes_and_leaks_no_scene(tmp_path):
    config = tmp_path / "guidance.yaml"
    config.write_text(yaml.safe_dump({"backbones": [{"name": "analytic", "backend": "analytic", "default": True}],
                                      "batching": {"max_queue_delay_ms": 0}}))
    render_metrics = free_port()
    specs = [ServiceSpec("render", ["--metrics-port", str(render_metrics)]),
             ServiceSpec("guidance", ["--config", str(config), "--device", "cpu"])]
    sup = Supervisor(specs, tmp_path / "logs").start()
    jobs_spec = ServiceSpec("jobs", ["--store", str(tmp_path / "jobs.db"), "--artifacts", str(tmp_path / "artifacts"),
                                     "--render", sup.address("render"), "--guidance", sup.address("guidance"),
                                     "--ray-resource", "fake_gpu=1", "--subject-resource", "fake_gpu=0.5",
                                     "--subject-cpus", "0.5"])
    jobs = Supervisor([jobs_spec], tmp_path / "logs").start()
    client = GrpcJobsClient(jobs.address("jobs"), timeout_s=60)
    try:
        job = client.submit(recipe="analytic_prior", options={"stages.optimise.iterations": "60",
                                                               "checkpoint_every": "10"})
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and _optimise_step(client.get(job.id)) < 14:
            time.sleep(0.3)
        killed_at = _optimise_step(client.get(job.id))
        assert killed_at >= 14
        first = jobs.pid("jobs")
        ray_processes = psutil.Process(first).children(recursive=True)   # its local Ray, with the job's actor
        assert any("SubjectActor" in " ".join(p.cmdline()) for p in ray_processes)
        os.kill(first, signal.SIGKILL)
        final = _wait_terminal(client, job.id)
        assert final.state == "succeeded", final.error_message
        assert jobs.restarts["jobs"] == 1 and jobs.pid("jobs") != first
        saved = json.loads(ArtifactStore((tmp_path / "artifacts").as_uri()).read(job.id, "checkpoints/state.json"))
        (resumed,) = saved["resumed_from"]
        assert resumed["step"] % 10 == 0 and resumed["step"] >= killed_at - 10   # at most one interval redone
        assert saved["steps"]["optimise"] == 60
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and sample(scrape(render_metrics), "headforge_render_scenes") > 0:
            time.sleep(0.5)
        assert sample(scrape(render_metrics), "headforge_render_scenes") == 0
        # nothing of the killed process's Ray outlives it: no actor, raylet, GCS or agent process
        assert settle(lambda: not any(_alive(p) for p in ray_processes)), [p.cmdline() for p in ray_processes
                                                                           if _alive(p)]
    finally:
        client.close()
        jobs.stop()
        sup.stop()

