"""`headforge cluster up` as a new user runs it (issue 20, items 1 and 2): the state lives in the per-user
state folder ($HEADFORGE_HOME here, a temporary one), so `cluster up|status|down` from any directory find
the one cluster; a second `up` is refused at once without touching the running one's state or logs; the
jobs commands find the cluster's jobs service with no --target; nothing lands in the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from services.common.process import ROOT, free_port


def _untracked() -> set[str]:
    r = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--ignored"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    return {line[3:] for line in r.stdout.splitlines() if line[:2] in ("??", "!!")
            and "__pycache__" not in line and ".pytest_cache" not in line}


def _headforge_in(cwd, *args: str, home, timeout: float = 300) -> subprocess.CompletedProcess:
    """`headforge ARGS` from directory cwd, as a user with HEADFORGE_HOME=home and no HEADFORGE_JOBS (nor a
    Ray auth setting of this process's own)."""
    env = {k: v for k, v in os.environ.items() if k != "HEADFORGE_JOBS" and not k.startswith("RAY_AUTH")}
    env.update(HEADFORGE_HOME=str(home),
               PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "protos"), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_one_cluster_per_user_found_from_anywhere(tmp_path):
    home, here, there = tmp_path / "home", tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    before = _untracked()
    up = _headforge_in(here, "cluster", "up", "--jobs-port", str(free_port()), home=home)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state_dir = home / "cluster"
        state = (state_dir / "cluster.json").read_text()
        logs = {p.name: p.stat().st_size for p in (state_dir / "logs").iterdir()}

        # item 1: the jobs commands find the local cluster without --target
        status = _headforge_in(there, "status", home=home, timeout=120)
        assert status.returncode == 0 and "no jobs" in status.stdout, status.stdout + status.stderr

        # item 2: a second `up` from another directory is refused at once; the running cluster is untouched
        t0 = time.monotonic()
        again = _headforge_in(there, "cluster", "up", "--jobs-port", str(free_port()), home=home, timeout=120)
        assert again.returncode == 1 and "already runs" in again.stderr, again.stdout + again.stderr
        assert "Traceback" not in again.stderr and time.monotonic() - t0 < 60
        assert (state_dir / "cluster.json").read_text() == state
        assert {p.name for p in (state_dir / "logs").iterdir()} == set(logs)
        for other_cwd in (there, ROOT):
            st = _headforge_in(other_cwd, "cluster", "status", home=home, timeout=120)
            assert st.returncode == 0 and st.stdout.count("SERVING") == 5, st.stdout + st.stderr
    finally:
        down = _headforge_in(there, "cluster", "down", home=home, timeout=120)
    assert down.returncode == 0 and "stopped" in down.stdout, down.stdout + down.stderr
    assert _headforge_in(here, "cluster", "status", home=home, timeout=120).returncode == 1
    assert not (here / ".headforge").exists() and not (there / ".headforge").exists()
    assert _untracked() == before, "nothing lands in the checkout"
