"""A thread's SQLite connection is closed when the thread ends (orchestrator/jobs/sqlite.py): the jobs
service runs a thread per job, and a 10-minute soak found the connections (and their jobs.db / -wal file
handles) piling up until a full garbage collection. Garbage collection is switched off here, so only the
thread's end can close them."""

from __future__ import annotations

import gc
import os
import threading

from orchestrator.jobs.store import JobStore


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_finished_threads_connection_is_closed(tmp_path):
    store = JobStore(tmp_path / "jobs.db")
    gc.disable()
    try:
        before = _open_files()
        for _ in range(20):
            t = threading.Thread(target=store.running_jobs)
            t.start()
            t.join()
        assert _open_files() <= before + 2, (before, _open_files())
    finally:
        gc.enable()
        store.close()
