"""Orchestrator benchmark (JSON figures): subjects/hour for K = 1, 2, 4 concurrent subjects on Ray sharing
one declared fake GPU, with the services as processes on loopback and the tiny SD1.5-layout guidance model;
and the ratio of the optimisation step time over gRPC to the step time with in-process services.

The job is the analytic_prior recipe with its SDS term pointed at the tiny SD backbone (64 px renders,
64 px guidance, 2 views per step): every step is a Render, a Distill and an ApplyGradients."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import yaml

ITERATIONS = 20
OPTIONS = {"stages.optimise.iterations": str(ITERATIONS), "stages.optimise.cameras.resolution": "64",
           "stages.optimise.terms": "[{kind: sds, backbone: sd15-tiny, prompt: a head, resolution: 64, "
                                    "view_dependent_prompt: false}]"}


def _guidance_config(root: Path) -> Path:
    from services.guidance.tiny_models import write_tiny_models

    tiny = yaml.safe_load(write_tiny_models(root / "models").read_text())["backbones"]
    path = root / "models" / "bench.yaml"
    path.write_text(yaml.safe_dump({"backbones": tiny, "batching": {"max_batch_images": 16,
                                                                     "max_queue_delay_ms": 10}}))
    return path


def _step_ms(result) -> float:
    return result.stage_seconds["optimise"] / ITERATIONS * 1e3


def bench_orchestrator() -> dict:
    import ray

    from orchestrator.jobs.store import JobStore
    from orchestrator.jobs.types import TERMINAL, JobSpec
    from orchestrator.local import run_local
    from orchestrator.recipes import load_recipe
    from orchestrator.runtime.endpoints import Endpoints
    from orchestrator.runtime.ray_runtime import ActorShare, RayRuntime
    from orchestrator.runtime.supervisor import ServiceSpec, Supervisor

    out: dict = {"job": f"analytic_prior with SDS from the tiny SD model, {ITERATIONS} steps of 2 views at 64 px"}
    loaded = load_recipe("analytic_prior", options=OPTIONS)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = _guidance_config(root)
        inproc = run_local(loaded, [], "", root / "inproc", endpoints=Endpoints(guidance_config=str(config)),
                           show_progress=False)
        sup = Supervisor([ServiceSpec("face"), ServiceSpec("render"),
                          ServiceSpec("guidance", ["--config", str(config), "--device", "cpu"])], root / "logs").start()
        try:
            endpoints = Endpoints(face=sup.address("face"), render=sup.address("render"),
                                  guidance=sup.address("guidance"))
            remote = run_local(loaded, [], "", root / "grpc", endpoints=endpoints, show_progress=False)
            out["step_ms_inprocess"] = round(_step_ms(inproc), 1)
            out["step_ms_grpc"] = round(_step_ms(remote), 1)
            out["grpc_over_inprocess_step_time"] = round(_step_ms(remote) / _step_ms(inproc), 3)
            out["subjects_per_hour"] = {}
            for k in (1, 2, 4):
                store = JobStore(root / f"jobs{k}.db")
                runtime = RayRuntime(store, (root / f"artifacts{k}").as_uri(), endpoints,
                                     share=ActorShare(num_cpus=0.5, resources={"fake_gpu": 1.0 / k}),
                                     ray_resources={"fake_gpu": 1.0}, max_active_per_tenant=k)
                runtime.start()
                start = time.perf_counter()
                ids = [store.create(JobSpec(tenant="bench", recipe="analytic_prior", recipe_yaml=loaded.yaml,
                                            recipe_sha256=loaded.sha256,
                                            stage_names=[s.name for s in loaded.recipe.stages])).id for _ in range(k)]
                while any(store.get_any(i).state not in TERMINAL for i in ids):
                    time.sleep(0.2)
                wall = time.perf_counter() - start
                states = [store.get_any(i).state for i in ids]
                runtime.stop()
                ray.shutdown()
                out["subjects_per_hour"][str(k)] = {"wall_s": round(wall, 1), "subjects_per_hour": round(k / wall * 3600),
                                                    "states": states}
        finally:
            sup.stop()
    return out
