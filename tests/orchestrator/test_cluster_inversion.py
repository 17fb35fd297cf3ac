"""`cluster up`'s inversion service reaches the Ray workers: the supervisor starts `serve inversion` (with
--inversion-models-dir as its --models-dir) and hands its address to the jobs service, whose Ray runtime
gives it to every worker (Endpoints). Nothing is started here; test_cluster.py runs the real cluster."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from orchestrator import cluster
from orchestrator.cli import build_parser
from orchestrator.cli.serve import make_runtime
from orchestrator.runtime.endpoints import Endpoints


def test_the_jobs_service_of_a_cluster_gives_its_workers_the_inversion_address(tmp_path):
    specs = {s.name: s for s in cluster.service_specs(tmp_path, None, 50999, None, inversion_models_dir="/m")}
    assert set(specs) == {"face", "render", "guidance", "inversion", "jobs"}
    assert specs["inversion"].args == ["--models-dir", "/m"]
    jobs_args = specs["jobs"].args
    inversion = jobs_args[jobs_args.index("--inversion") + 1]
    assert inversion == f"127.0.0.1:{specs['inversion'].port}"

    args = build_parser().parse_args(["serve", "jobs", *jobs_args])
    service = SimpleNamespace(store=None, artifacts=SimpleNamespace(root_url=str(tmp_path / "artifacts")))
    endpoints = make_runtime(service, args).endpoints
    assert endpoints.inversion == inversion and endpoints.face == f"127.0.0.1:{specs['face'].port}"
    # what each Ray actor rebuilds its clients from (ray_runtime: Endpoints.model_validate(model_dump()))
    assert Endpoints.model_validate(endpoints.model_dump()).inversion == inversion


def test_without_a_models_dir_the_inversion_service_starts_bare(tmp_path):
    specs = {s.name: s for s in cluster.service_specs(Path(tmp_path), None, 50999, None)}
    assert specs["inversion"].args == []
