"""Closed-loop checks of the paper recipes on the oracle prior (a TEST prior; nothing here is a result). A check
recipe, orchestrator/recipes/checks/oracle_<recipe>.yaml, takes the paper recipe's own stages verbatim (a stage
entry `{from_recipe: NAME, stage: STAGE, backbone: B, set: {dotted.path: value}}`: that stage of the built-in
recipe, every guidance backbone it names replaced by B, the `set` paths (list items by index) changed to shrink
it for a CPU) between the check's own init and ground_truth_check stages.

    python -m orchestrator.closed_loop_papers [--recipe portrait3d_text|portrait3d_id|id_to_3d] [--option K=V ...] [--out FILE]

runs one check as in production (render and guidance serving only oracles, as processes on loopback, plus, for
portrait3d_text, inversion serving a tiny random pyramid GAN; the job on Ray) and prints its figures as JSON."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from orchestrator.closed_loop import print_figures
from orchestrator.recipes import BUILTIN, LoadedRecipe, load_recipe

CHECKS = Path(__file__).parent / "recipes" / "checks"
TINY_GAN = "tiny-pyramid"
TRUTH_SEED = 2   # G(w2): the oracle's exemplars and the checks' ground truth (the check YAML's truth seed)


def _set_path(node, dotted: str, value) -> None:
    keys = dotted.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def _replace_backbones(node, backbone: str) -> None:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "backbone":
                node[k] = backbone
            else:
                _replace_backbones(v, backbone)
    elif isinstance(node, list):
        for v in node:
            _replace_backbones(v, backbone)


def check_recipe(name: str, options: dict[str, str] | None = None) -> LoadedRecipe:
    """The loaded check recipe of paper recipe `name` (checks/oracle_<name>.yaml with its from_recipe stages
    spliced in), options applied after."""
    data = yaml.safe_load((CHECKS / f"oracle_{name}.yaml").read_text())
    stages = []
    for entry in data["stages"]:
        if "from_recipe" not in entry:
            stages.append(entry)
            continue
        paper = yaml.safe_load((BUILTIN / f"{entry['from_recipe']}.yaml").read_text())
        stage = next(s for s in paper["stages"] if s["name"] == entry["stage"])
        if entry.get("backbone"):
            _replace_backbones(stage, entry["backbone"])
        for dotted, value in (entry.get("set") or {}).items():
            _set_path(stage.setdefault("params", {}), dotted, value)
        stages.append(stage)
    data["stages"] = stages
    text = yaml.safe_dump(json.loads(json.dumps(data)), sort_keys=False)   # JSON: no shared nodes, no YAML aliases
    return load_recipe(text=text, options=options)


def _run_check_job(root: Path, name: str, options: dict[str, str] | None, endpoints, images: list[bytes],
                   timeout_s: float) -> dict:
    """Run check recipe `name` as one Ray job against the services at `endpoints`; returns the job's state, error,
    seconds and report.json's ground_truth, optimizers, warnings, result_is_real, stage_seconds and
    texture_inpaint sections."""
    import ray

    from orchestrator.jobs.artifacts import ArtifactStore
    from orchestrator.jobs.store import JobStore
    from orchestrator.jobs.types import TERMINAL, JobSpec
    from orchestrator.runtime.ray_runtime import ActorShare, RayRuntime

    store = JobStore(root / "jobs.db")
    artifacts = ArtifactStore((root / "artifacts").as_uri())
    runtime = RayRuntime(store, artifacts.root_url, endpoints, share=ActorShare(num_cpus=1.0))
    try:
        runtime.start()
        loaded = check_recipe(name, options)
        started = time.perf_counter()
        job_id = store.create(JobSpec(tenant="closed-loop", recipe=loaded.recipe.name, recipe_yaml=loaded.yaml,
                                      recipe_sha256=loaded.sha256, images=images,
                                      stage_names=[s.name for s in loaded.recipe.stages])).id
        deadline = time.monotonic() + timeout_s
        while store.get_any(job_id).state not in TERMINAL and time.monotonic() < deadline:
            time.sleep(0.5)
        job = store.get_any(job_id)
        out = {"state": job.state, "error": job.error_message,
               "seconds": round((job.finished_at or time.time()) - (job.started_at or started), 1)}
        if job.state == "succeeded":
            report = json.loads(artifacts.read(job_id, "report.json"))
            out.update({k: report.get(k) for k in ("ground_truth", "optimizers", "warnings", "result_is_real",
                                                   "stage_seconds", "texture_inpaint", "geometry_targets")})
        return out
    finally:
        runtime.stop()
        ray.shutdown()


def run_portrait3d_text(root: Path, options: dict[str, str] | None = None, timeout_s: float = 1800) -> dict:
    """Run the portrait3d_text check as a Ray job against service processes (_run_check_job's figures)."""
    from orchestrator.runtime.endpoints import Endpoints
    from orchestrator.runtime.supervisor import ServiceSpec, Supervisor
    from services.inversion.client import connect
    from services.inversion.types import Latent

    # the tiny generator, written by the inversion service's own tool (a process: the orchestrator imports only
    # services' clients and types)
    subprocess.run([sys.executable, "-m", "services.inversion.tiny", str(root / "models" / "inversion"), TINY_GAN],
                   check=True, capture_output=True)
    inversion = Supervisor([ServiceSpec("inversion", ["--models-dir", str(root / "models"), "--device", "cpu"])],
                           root / "logs" / "inversion").start()
    sup = None
    try:
        client = connect(inversion.address("inversion"))
        (root / "g_w2.npz").write_bytes(client.export_field(Latent.sample(TRUTH_SEED, TINY_GAN)))
        client.close()
        config = root / "oracle.yaml"
        config.write_text(yaml.safe_dump({"backbones": [{"name": "oracle", "backend": "oracle", "default": True,
                                                         "exemplar_field": "g_w2.npz"}]}))
        sup = Supervisor([ServiceSpec("render"), ServiceSpec("guidance", ["--config", str(config), "--device", "cpu"])],
                         root / "logs").start()
        endpoints = Endpoints(render=sup.address("render"), guidance=sup.address("guidance"),
                              inversion=inversion.address("inversion"))
        return _run_check_job(root, "portrait3d_text", options, endpoints, [], timeout_s)
    finally:
        if sup is not None:
            sup.stop()
        inversion.stop()


# The portrait3d_id check's guidance: the oracle (rgb; its normal LoRA for normal control is accepted and ignored)
# and two oracles standing in for HumanNorm's text-to-normal and text-to-depth models.
ORACLE_ID_GUIDANCE = {"backbones": [
    {"name": "oracle", "backend": "oracle", "default": True},
    {"name": "oracle_normal", "backend": "oracle", "output_kind": "normal"},
    {"name": "oracle_depth", "backend": "oracle", "output_kind": "depth"}]}


def run_portrait3d_id(root: Path, options: dict[str, str] | None = None, timeout_s: float = 1800) -> dict:
    """Run the portrait3d_id check as a Ray job against render and guidance processes, from the procedural head's
    frontal render (_run_check_job's figures)."""
    from orchestrator.closed_loop import reference_picture

    return _run_on_oracles(root, "portrait3d_id", ORACLE_ID_GUIDANCE, [reference_picture(64)], options, timeout_s)


def _run_on_oracles(root: Path, name: str, guidance: dict, images: list[bytes], options, timeout_s: float) -> dict:
    """Check `name` as a Ray job against a render process and a guidance process serving `guidance` (oracles)."""
    from orchestrator.runtime.endpoints import Endpoints
    from orchestrator.runtime.supervisor import ServiceSpec, Supervisor

    config = root / "oracle.yaml"
    config.write_text(yaml.safe_dump(guidance))
    sup = Supervisor([ServiceSpec("render"), ServiceSpec("guidance", ["--config", str(config), "--device", "cpu"])],
                     root / "logs").start()
    try:
        endpoints = Endpoints(render=sup.address("render"), guidance=sup.address("guidance"))
        return _run_check_job(root, name, options, endpoints, images, timeout_s)
    finally:
        sup.stop()


# The id_to_3d check's guidance: the oracle, its exemplars the procedural head's variant for each expression text of
# the recipe (its default LoRAs "normal" and "albedo" select normal pictures and the unlit albedo).
EXPRESSION_VARIANTS = {"neutral": "neutral", "smile": "cheeks_puffed", "mouth open": "jaw_open"}
ORACLE_EXPRESSION_GUIDANCE = {"backbones": [
    {"name": "oracle", "backend": "oracle", "default": True, "expressions": EXPRESSION_VARIANTS}]}


def run_id_to_3d(root: Path, options: dict[str, str] | None = None, timeout_s: float = 1800) -> dict:
    """Run the id_to_3d check as a Ray job against render and guidance processes, with no photo (the check needs no
    face: _run_check_job's figures)."""
    return _run_on_oracles(root, "id_to_3d", ORACLE_EXPRESSION_GUIDANCE, [], options, timeout_s)


RUNNERS = {"portrait3d_text": run_portrait3d_text, "portrait3d_id": run_portrait3d_id, "id_to_3d": run_id_to_3d}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--option", action="append", default=[], metavar="K=V",
                        help="an option for the check recipe, e.g. stages.sds.iterations=300")
    parser.add_argument("--recipe", choices=sorted(RUNNERS), default="portrait3d_text")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    options = dict(o.split("=", 1) for o in args.option)
    truth = {"portrait3d_text": "the oracle prior's known field (a tiny random GAN's sample)",
             "portrait3d_id": "the oracle prior's known head (the procedural head)",
             "id_to_3d": "the oracle prior's known head in three known expression variants"}[args.recipe]
    with tempfile.TemporaryDirectory(prefix="headforge-closed-loop-") as tmp:
        figures = {"note": f"a TEST against {truth}: it checks the recipe's machinery, it is not a result",
                   args.recipe: RUNNERS[args.recipe](Path(tmp), options)}
    print_figures(figures, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
