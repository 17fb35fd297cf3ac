"""Fixtures of the jobs tests: one `headforge serve jobs` process for the session (loopback, a tokens file
with two tenants, small quotas), and the folder its models_dir must lie under."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.process import ServiceProcess, free_port

MAX_ACTIVE = 3
MAX_STREAMS = 2


@pytest.fixture(scope="session")
def models_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def jobs_server(tmp_path_factory, models_root):
    d = tmp_path_factory.mktemp("jobs-server")
    (d / "tokens.yaml").write_text("tokens: {tok-a: tenant-a, tok-b: tenant-b}\n")
    # --runtime none: these tests play the runtime themselves, writing to the same store (tests/orchestrator
    # runs jobs for real)
    metrics_port = free_port()
    proc = ServiceProcess(["jobs", "--runtime", "none", "--port", "0", "--metrics-port", str(metrics_port),
                           "--store", str(d / "jobs.db"), "--artifacts", str(d / "artifacts"),
                           "--tokens-file", str(d / "tokens.yaml"), "--max-active-jobs", str(MAX_ACTIVE),
                           "--max-watch-streams", str(MAX_STREAMS), "--model-root", str(models_root),
                           "--max-workers", "8", "--grace-s", "2"], d / "jobs.log")
    proc.store_path, proc.artifacts_root, proc.metrics_port = d / "jobs.db", d / "artifacts", metrics_port
    yield proc
    proc.stop()
