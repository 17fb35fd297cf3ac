"""The closed-loop check on the oracle prior (a TEST prior; nothing here is a result): from one frontal
render of the known procedural head, the check recipes (orchestrator/recipes/checks/oracle_<kind>.yaml,
built only from the ordinary recipe pieces) reconstruct the head as 3D Gaussians, a DMTet and a tri-plane
field, and their ground_truth_check stages measure the held-out views before and after: PSNR, normal
error, Chamfer distance and the side the +X markings are on. Everything runs as in production: the face,
render and guidance services as processes on loopback (guidance serving only the oracle), each job on Ray.

    python -m orchestrator.closed_loop [--kinds gaussians,dmtet,triplane] [--option K=V ...] [--out FILE]

prints the figures as JSON."""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

CHECKS = Path(__file__).parent / "recipes" / "checks"
KINDS = ("gaussians", "dmtet", "triplane")
REFERENCE = {"azimuth": 0.0, "elevation": 0.0, "radius": 4.0, "fov": 35.0}   # the check recipes' camera
ORACLE_GUIDANCE = {"backbones": [{"name": "oracle", "backend": "oracle", "default": True}]}


def reference_picture(size: int = 128) -> bytes:
    """The frontal ground-truth render (RGBA PNG, alpha = coverage) the check recipes start from."""
    from orchestrator.stages.ground_truth import ground_truth
    from services.common.images import encode_png
    from services.core.cameras import orbit_camera

    cam = orbit_camera(REFERENCE["azimuth"], REFERENCE["elevation"], REFERENCE["radius"], fov_deg=REFERENCE["fov"],
                       width=size, height=size)
    truth = ground_truth([cam])
    rgba = np.concatenate([truth["rgb"][0], truth["alpha"][0]]).transpose(1, 2, 0)
    return encode_png((np.clip(rgba, 0, 1) * 255 + 0.5).astype(np.uint8))


def check_recipe(kind: str, options: dict[str, str] | None = None):
    """The LoadedRecipe of the check for one representation."""
    from orchestrator.recipes import load_recipe_file

    return load_recipe_file(CHECKS / f"oracle_{kind}.yaml", options)


def run_on_ray(kinds: tuple[str, ...], root: Path, options: dict[str, str] | None = None,
               timeout_s: float = 3600) -> dict:
    """Run the checks of `kinds` as concurrent Ray jobs against service processes; returns per kind the
    job's state, seconds, and report.json's ground_truth section (before / after)."""
    import ray

    from orchestrator.jobs.artifacts import ArtifactStore
    from orchestrator.jobs.store import JobStore
    from orchestrator.jobs.types import TERMINAL, JobSpec
    from orchestrator.runtime.endpoints import Endpoints
    from orchestrator.runtime.ray_runtime import ActorShare, RayRuntime
    from orchestrator.runtime.supervisor import ServiceSpec, Supervisor

    config = root / "oracle.yaml"
    config.write_text(yaml.safe_dump(ORACLE_GUIDANCE))
    sup = Supervisor([ServiceSpec("face"), ServiceSpec("render"),
                      ServiceSpec("guidance", ["--config", str(config), "--device", "cpu"])], root / "logs").start()
    store = JobStore(root / "jobs.db")
    artifacts = ArtifactStore((root / "artifacts").as_uri())
    runtime = RayRuntime(store, artifacts.root_url, Endpoints(face=sup.address("face"), render=sup.address("render"),
                                                              guidance=sup.address("guidance")),
                         share=ActorShare(num_cpus=0.5, resources={"fake_gpu": 1.0 / len(kinds)}),
                         ray_resources={"fake_gpu": 1.0}, max_active_per_tenant=len(kinds))
    out: dict = {}
    try:
        runtime.start()
        picture, started, jobs = reference_picture(), time.perf_counter(), {}
        for kind in kinds:
            loaded = check_recipe(kind, options)
            jobs[kind] = store.create(JobSpec(tenant="closed-loop", recipe=loaded.recipe.name, recipe_yaml=loaded.yaml,
                                              recipe_sha256=loaded.sha256, images=[picture],
                                              stage_names=[s.name for s in loaded.recipe.stages])).id
        deadline = time.monotonic() + timeout_s
        while any(store.get_any(j).state not in TERMINAL for j in jobs.values()) and time.monotonic() < deadline:
            time.sleep(0.5)
        for kind, job_id in jobs.items():
            job = store.get_any(job_id)
            entry = {"state": job.state, "error": job.error_message,
                     "seconds": round((job.finished_at or time.time()) - (job.started_at or started), 1)}
            if job.state == "succeeded":
                report = json.loads(artifacts.read(job_id, "report.json"))
                entry.update(ground_truth=report["ground_truth"], warnings=report["warnings"],
                             result_is_real=report.get("result_is_real"))
            out[kind] = entry
    finally:
        runtime.stop()
        ray.shutdown()
        sup.stop()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--option", action="append", default=[], metavar="K=V",
                        help="an option for every check recipe, e.g. stages.optimise.iterations=100")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        parser.error(f"unknown kinds {bad}; known: {list(KINDS)}")
    options = dict(o.split("=", 1) for o in args.option)
    with tempfile.TemporaryDirectory(prefix="headforge-closed-loop-") as tmp:
        figures = {"note": "a TEST against the oracle prior's known head: it checks the pipeline, it is not a result",
                   "kinds": run_on_ray(kinds, Path(tmp), options)}
    print_figures(figures, args.out)
    return 0


def print_figures(figures: dict, out: str | None) -> None:
    """Print figures as JSON, and write them to the file `out` too when given."""
    text = json.dumps(figures, indent=1)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    print(text)


if __name__ == "__main__":
    raise SystemExit(main())
