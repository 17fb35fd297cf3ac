"""Run a `headforge serve ...` process and wait until it is serving (tests, benchmarks, local clusters)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """A `headforge serve ARGS...` child process; `address` is HOST:PORT once it prints its ready line.
    stderr (JSON logs) goes to log_path. stop() sends SIGTERM (drain) and waits."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None):
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve", *args],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log,
                                     env={**os.environ, **(env or {})})
        self.ready = self._read_ready_line(timeout_s=90)
        self.address = self.ready["address"]

    def _read_ready_line(self, timeout_s: float) -> dict:
        box: dict = {}

        def read():
            line = self.proc.stdout.readline()
            box["line"] = line

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout_s)
        line = box.get("line", b"")
        if not line:
            self.stop()
            raise RuntimeError(f"service did not start; log:\n{self.log_path.read_text()[-4000:]}")
        return json.loads(line)

    def stop(self, timeout_s: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode
