"""Local supervisor: runs service processes (`headforge serve NAME`) on fixed loopback ports and restarts
any that exits, so clients (which retry UNAVAILABLE with backoff) see a short outage, not a failure.
Used by `headforge cluster up` and by the fault tests."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.common.process import ServiceProcess, free_port

log = logging.getLogger(__name__)


@dataclass
class ServiceSpec:
    name: str                      # face | render | guidance | jobs
    args: list[str] = field(default_factory=list)   # extra `headforge serve NAME` flags
    port: int = 0                  # 0 = a free port chosen once (kept across restarts)
    env: dict[str, str] = field(default_factory=dict)   # extra environment (no secrets: they go in files)


class Supervisor:
    def __init__(self, specs: list[ServiceSpec], log_dir: Path, *, check_every_s: float = 0.5):
        self.specs = {s.name: s for s in specs}
        for s in self.specs.values():
            s.port = s.port or free_port()
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.check_every_s = check_every_s
        self.processes: dict[str, ServiceProcess] = {}
        self.restarts: dict[str, int] = {name: 0 for name in self.specs}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.specs[name].port}"

    def _start(self, name: str) -> ServiceProcess:
        spec = self.specs[name]
        n = self.restarts[name]
        return ServiceProcess([name, "--port", str(spec.port), *spec.args], self.log_dir / f"{name}.{n}.log",
                              env=spec.env)

    def start(self) -> "Supervisor":
        for name in self.specs:
            self.processes[name] = self._start(name)
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()
        return self

    def pid(self, name: str) -> int:
        return self.processes[name].proc.pid

    def _watch(self) -> None:
        while not self._stop.wait(self.check_every_s):
            for name, proc in list(self.processes.items()):
                if proc.proc.poll() is None:
                    continue
                with self._lock:
                    if self._stop.is_set():
                        return
                    self.restarts[name] += 1
                    log.warning("service %s exited with %s; restarting (restart #%d)", name, proc.proc.returncode,
                                self.restarts[name])
                    proc.stop()
                    while not self._stop.is_set():
                        try:
                            self.processes[name] = self._start(name)
                            break
                        except RuntimeError:   # the port may still be held for a moment
                            time.sleep(0.5)

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for proc in self.processes.values():
                proc.stop()
        if self._thread:
            self._thread.join(timeout=5)
