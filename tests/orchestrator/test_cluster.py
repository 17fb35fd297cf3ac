"""`headforge cluster up|status|down`: the whole system in the background on this machine (services and
the jobs service with its Ray runtime as supervised processes); a job submitted to it completes; the
inversion service answers Describe while the cluster is up and is gone after `cluster down`."""

from __future__ import annotations

import pytest

from services.common.client import RetryPolicy
from services.common.errors import Unavailable
from services.common.process import free_port
from services.inversion.client import GrpcInversionClient
from tests.helpers import headforge


def _describe_inversion(address: str):
    client = GrpcInversionClient(address, timeout_s=30, retry=RetryPolicy(max_attempts=1, budget_s=5))
    try:
        return client.describe()
    finally:
        client.close()


def test_cluster_up_run_a_job_down(tmp_path):
    from services.inversion.tiny import write_tiny_generators

    models = tmp_path / "models"   # the tiny random generator (tests only): Describe lists it, nothing renders
    write_tiny_generators(models / "inversion", names=("tiny-triplane",))
    d = str(tmp_path / "cluster")
    up = headforge("cluster", "up", "--dir", d, "--jobs-port", str(free_port()), "--inversion-models-dir", str(models))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = headforge("cluster", "status", "--dir", d)
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.count("SERVING") == 5
        inversion = next(line.split()[1] for line in status.stdout.splitlines() if line.startswith("inversion "))
        gens = _describe_inversion(inversion).generators
        assert [(g.name, g.kind, g.available) for g in gens] == [("tiny-triplane", "triplane", True)]
        target = headforge("cluster", "status", "--dir", d, "--jobs-address").stdout.strip()
        sub = headforge("submit", "--recipe", "analytic_prior", "--option", "stages.optimise.iterations=10",
                        "--target", target)
        assert sub.returncode == 0, sub.stderr
        watch = headforge("watch", sub.stdout.split()[-1], "--target", target)
        assert watch.returncode == 0, watch.stdout + watch.stderr
    finally:
        down = headforge("cluster", "down", "--dir", d)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert headforge("cluster", "status", "--dir", d).returncode == 1
    with pytest.raises(Unavailable):
        _describe_inversion(inversion)


def test_generate_with_a_recipe_and_list_recipes(tmp_path):
    out = tmp_path / "prior"
    r = headforge("generate", "--recipe", "analytic_prior", "--option", "stages.optimise.iterations=5",
                  "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert (out / "export" / "head.ply").is_file() and (out / "report.json").is_file()
    bad = headforge("generate", "--recipe", "analytic_prior", "--option", "stages.optimise.iterations=-1",
                    "--out", str(tmp_path / "bad"))
    assert bad.returncode != 0 and "stages[1].params.iterations" in bad.stderr and not (tmp_path / "bad").exists()
    listing = headforge("recipes")
    assert listing.returncode == 0 and all(n in listing.stdout for n in ("fast", "sds_gaussians", "analytic_prior"))
