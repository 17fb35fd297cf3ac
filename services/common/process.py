"""Run a `headforge serve ...` process and wait until it is serving (tests, benchmarks, local clusters)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the usual small race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServiceProcess:
    """A `headforge serve ARGS...` child process; `address` is HOST:PORT once it prints its ready line.
    stderr (JSON logs) goes to log_path. It leads its own process group, so stop() (SIGTERM, drain, wait)
    also ends what it left behind: a killed jobs service's local Ray agents ignore its death."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", *args],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log,
                                     env={**os.environ, **(env or {})}, start_new_session=True)
        self.ready = self._read_ready_line(timeout_s=90)
        self.address = self.ready["address"]

    def _read_ready_line(self, timeout_s: float) -> dict:
        """The first JSON line with an address on stdout. Libraries may print before it (model loaders do):
        every other stdout line goes to LOG.stdout, read by a daemon thread for the process's lifetime so
        the pipe never fills."""
        box: dict = {}
        ready = threading.Event()
        other = open(self.log_path.with_suffix(self.log_path.suffix + ".stdout"), "wb")

        def pump():
            for line in self.proc.stdout:
                if not ready.is_set():
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        msg = None
                    if isinstance(msg, dict) and "address" in msg:
                        box["ready"] = msg
                        ready.set()
                        continue
                other.write(line)
                other.flush()
            other.close()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        ready.wait(timeout_s)
        if "ready" not in box:
            self.stop()
            raise RuntimeError(f"service did not start; log:\n{self.log_path.read_text()[-4000:]}")
        return box["ready"]

    def stop(self, timeout_s: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        try:   # the rest of its process group (children it started that outlived it)
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.log.close()
        return self.proc.returncode
