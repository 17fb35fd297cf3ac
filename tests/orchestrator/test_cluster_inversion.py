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
    jobs = build_parser().parse_args(["serve", "jobs", *jobs_args])
    assert (jobs.default_models_dir, jobs.model_root) == ("/m", ["/m"])   # refine's LPIPS files resolve there

    args = build_parser().parse_args(["serve", "jobs", *jobs_args])
    service = SimpleNamespace(store=None, artifacts=SimpleNamespace(root_url=str(tmp_path / "artifacts")))
    endpoints = make_runtime(service, args).endpoints
    assert endpoints.inversion == inversion and endpoints.face == f"127.0.0.1:{specs['face'].port}"
    # what each Ray actor rebuilds its clients from (ray_runtime: Endpoints.model_validate(model_dump()))
    assert Endpoints.model_validate(endpoints.model_dump()).inversion == inversion


def test_without_a_models_dir_the_inversion_service_starts_bare(tmp_path):
    specs = {s.name: s for s in cluster.service_specs(Path(tmp_path), None, 50999, None)}
    assert specs["inversion"].args == []


def test_the_jobs_limits_reach_serve_jobs_and_are_left_out_when_not_given(tmp_path):
    """cluster up's --subject-cpus / --max-running-per-tenant / --max-active-jobs become serve jobs' own flags;
    without them serve jobs keeps its defaults (no flag is passed)."""
    limits = cluster.JobsLimits(subject_cpus=0.25, max_running_per_tenant=4, max_active_jobs=8)
    jobs_args = {s.name: s for s in cluster.service_specs(tmp_path, None, 50999, None, jobs_limits=limits)}["jobs"].args
    args = build_parser().parse_args(["serve", "jobs", *jobs_args])
    assert (args.subject_cpus, args.max_running_per_tenant, args.max_active_jobs) == (0.25, 4, 8)

    bare = {s.name: s for s in cluster.service_specs(tmp_path, None, 50999, None)}["jobs"].args
    assert not {"--subject-cpus", "--max-running-per-tenant", "--max-active-jobs"} & set(bare)
    defaults = build_parser().parse_args(["serve", "jobs", *bare])
    assert (defaults.subject_cpus, defaults.max_running_per_tenant, defaults.max_active_jobs) == (1.0, 2, 4)


def test_cluster_up_parses_the_jobs_limits():
    """The CLI's flags (None when not given: the supervisor's argv then carries none of them)."""
    args = build_parser().parse_args(["cluster", "up", "--subject-cpus", "0.5", "--max-active-jobs", "6"])
    assert (args.subject_cpus, args.max_running_per_tenant, args.max_active_jobs) == (0.5, None, 6)
    assert cluster.JobsLimits(0.5, None, 6).args() == ["--subject-cpus", "0.5", "--max-active-jobs", "6"]
    assert cluster.JobsLimits().args() == []


def test_face_args_reach_serve_face_as_its_own_flags(tmp_path):
    """cluster up --face-args "...": the face service's recogniser and model files (a 512-d ArcFace for
    IP-Adapter FaceID); `serve face` parses them; without them it starts with its defaults."""
    flags = ["--recognizer", "insightface", "--insightface-dir", str(tmp_path)]
    face = {s.name: s for s in cluster.service_specs(tmp_path, None, 50999, None, face_args=flags)}["face"]
    assert face.args == flags
    args = build_parser().parse_args(["serve", "face", *face.args])
    assert (args.recognizer, args.insightface_dir) == ("insightface", str(tmp_path))
    assert {s.name: s for s in cluster.service_specs(tmp_path, None, 50999, None)}["face"].args == []
