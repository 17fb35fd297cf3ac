"""Issue 22, item 9: a jobs service killed with SIGKILL leaves its local Ray's agents running (they ignore
their parent's death); the supervisor ends them with the process group it restarts, and `stop` leaves no
process behind."""

from __future__ import annotations

import os
import signal
import time

import psutil

from orchestrator.runtime.supervisor import ServiceSpec, Supervisor


def _alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p.name())
        except psutil.NoSuchProcess:
            pass
    return out


def test_a_killed_jobs_service_leaves_no_ray_processes(tmp_path):
    sup = Supervisor([ServiceSpec("jobs", ["--store", str(tmp_path / "jobs.db"), "--artifacts", str(tmp_path / "a"),
                                           "--ray-resource", "fake_gpu=1"])], tmp_path / "logs").start()
    try:
        first = psutil.Process(sup.pid("jobs"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(p.name() == "raylet" for p in first.children(recursive=True)):
            time.sleep(0.5)
        ray_procs = first.children(recursive=True)
        assert any(p.name() == "raylet" for p in ray_procs), [p.name() for p in ray_procs]
        os.kill(first.pid, signal.SIGKILL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sup.pid("jobs") == first.pid:
            time.sleep(0.5)
        assert sup.restarts["jobs"] == 1
        # the agents and raylet go with the group at once; Ray's workers (their own groups) follow their raylet
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(ray_procs):
            time.sleep(0.5)
        assert _alive(ray_procs) == [], "the killed jobs service's Ray processes outlived it"
        second = psutil.Process(sup.pid("jobs"))
        later = second.children(recursive=True)
    finally:
        sup.stop()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _alive([second, *later]):
        time.sleep(0.5)
    assert _alive([second, *later]) == []
