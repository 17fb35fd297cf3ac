"""`headforge watch` reads the finished job's report.json artifact and prints its warnings and the NOT A
RESULT line when a test prior or random weights served the job. The test process plays the runtime on the
jobs process's store and artifact root, as tests/jobs/test_jobs_cli.py does."""

from __future__ import annotations

import json
import threading
import time

from orchestrator.cli.honesty import NOT_A_RESULT_BANNER
from orchestrator.jobs.artifacts import ArtifactStore
from orchestrator.jobs.store import JobStore
from tests.jobs.test_jobs_cli import headforge

WARNING = "guidance backbone analytic (exemplars: builtin) is a test prior: the output shows the pipeline works"


def test_watch_prints_the_report_warnings(jobs_server):
    r = headforge(jobs_server, "submit", "--recipe", "analytic_prior", "--option", "stages.optimise.iterations=2")
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    store, arts = JobStore(jobs_server.store_path), ArtifactStore(str(jobs_server.artifacts_root))
    report = {"recipe": "analytic_prior", "warnings": [WARNING], "result_is_real": False}

    def runtime():
        time.sleep(1.0)
        assert store.claim_next(8).id == job_id
        store.add_artifact(job_id, arts.write(job_id, "report.json", json.dumps(report).encode(), ""))
        store.set_job_state(job_id, "succeeded")

    t = threading.Thread(target=runtime)
    t.start()
    r = headforge(jobs_server, "watch", job_id)
    t.join()
    store.close()
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert f"warning: {WARNING}" in lines and lines[-1] == NOT_A_RESULT_BANNER, r.stdout
