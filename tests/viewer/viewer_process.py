"""A `headforge view ... --no-browser --port 0` process, as a user starts it; its URL is read from the
first line it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

from services.common.process import ROOT


class ViewerProcess:
    def __init__(self, args: list[str], env: dict | None = None, timeout_s: float = 60.0):
        self.proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "view", *args, "--no-browser",
                                      "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + timeout_s
        line = self.proc.stdout.readline()     # the command prints its URL first, then only serves
        match = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        if match is None or time.monotonic() > deadline:
            self.proc.terminate()
            _, err = self.proc.communicate(timeout=30)
            raise AssertionError(f"`headforge view` printed {line!r}; stderr: {err}")
        self.url = match.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        self.proc.stdout.close()
        self.proc.stderr.close()
