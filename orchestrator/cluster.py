"""`headforge cluster up|down|status`: a whole HeadForge on this machine in the background: the face,
render, guidance and inversion services and the jobs service (which runs jobs on a local Ray, its workers
calling those services) as processes on loopback, kept alive by a supervisor that restarts any that dies.

    headforge cluster up [--dir .headforge] [--guidance-config models/guidance/guidance.yaml]
                         [--inversion-models-dir models]     # generators under models/inversion/<name>
    headforge submit photo.jpg --recipe fast --target $(headforge cluster status --jobs-address)
    headforge cluster down
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from services.common.process import ROOT

STATE = "cluster.json"


def _state(directory: Path) -> dict | None:
    path = directory / STATE
    return json.loads(path.read_text()) if path.is_file() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def up(directory: Path, guidance_config: str | None, jobs_port: int, tokens_file: str | None,
       timeout_s: float = 300, inversion_models_dir: str | None = None) -> dict:
    """Start the supervisor (detached) unless one runs; its state: pid, jobs address, service addresses.
    inversion_models_dir: the inversion service's --models-dir (None: it serves no generator)."""
    directory.mkdir(parents=True, exist_ok=True)
    current = _state(directory)
    if current and _alive(current["pid"]):
        return current
    (directory / STATE).unlink(missing_ok=True)
    args = [sys.executable, "-m", "orchestrator.cluster", "--dir", str(directory), "--jobs-port", str(jobs_port)]
    if guidance_config:
        args += ["--guidance-config", str(Path(guidance_config).resolve())]
    if tokens_file:
        args += ["--tokens-file", str(Path(tokens_file).resolve())]
    if inversion_models_dir:
        args += ["--inversion-models-dir", str(Path(inversion_models_dir).resolve())]
    with open(directory / "supervisor.log", "ab") as log:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = _state(directory)
        if state and state.get("pid") == proc.pid:
            return state
        if proc.poll() is not None:
            raise RuntimeError(f"the cluster supervisor exited ({proc.returncode}); see {directory / 'supervisor.log'}")
        time.sleep(0.3)
    proc.terminate()
    raise RuntimeError(f"the cluster did not come up in {timeout_s}s; see {directory / 'supervisor.log'}")


def down(directory: Path, timeout_s: float = 60) -> bool:
    state = _state(directory)
    if not state or not _alive(state["pid"]):
        (directory / STATE).unlink(missing_ok=True)
        return False
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    (directory / STATE).unlink(missing_ok=True)
    return True


def status(directory: Path) -> dict:
    """The recorded addresses and whether each service answers its health check."""
    from services.common.client import GrpcTransport

    state = _state(directory)
    if not state or not _alive(state["pid"]):
        return {"running": False}
    health = {}
    for name, address in state["services"].items():
        transport = GrpcTransport(address, timeout_s=2)
        try:
            transport.wait_ready(timeout_s=2)
            health[name] = "SERVING"
        except Exception as e:  # noqa: BLE001 - report, do not fail
            health[name] = f"not serving ({type(e).__name__})"
        finally:
            transport.close()
    return {"running": True, **state, "health": health}


SERVICES = ("face", "render", "guidance", "inversion")


def service_specs(directory: Path, guidance_config: str | None, jobs_port: int, tokens_file: str | None,
                  inversion_models_dir: str | None = None) -> list:
    """The supervised processes (orchestrator.runtime.supervisor.ServiceSpec): each service on a free
    loopback port, and the jobs service on jobs_port with every service's address for its Ray workers."""
    from orchestrator.runtime.supervisor import ServiceSpec
    from services.common.process import free_port

    common = ["--tokens-file", tokens_file] if tokens_file else []
    ports = {name: free_port() for name in SERVICES}
    addr = {name: f"127.0.0.1:{p}" for name, p in ports.items()}
    extra = {"guidance": ["--config", guidance_config] if guidance_config else [],
             "inversion": ["--models-dir", inversion_models_dir] if inversion_models_dir else []}
    token_args = []
    if tokens_file:   # the jobs service calls the services with the first token of the file
        import yaml

        token_args = ["--service-token", next(iter(yaml.safe_load(Path(tokens_file).read_text())["tokens"]))]
    return [*(ServiceSpec(name, [*extra.get(name, []), *common], ports[name]) for name in SERVICES),
            ServiceSpec("jobs", ["--store", str(directory / "jobs.db"), "--artifacts", str(directory / "artifacts"),
                                 *[arg for name in SERVICES for arg in (f"--{name}", addr[name])],
                                 *token_args, *common], jobs_port)]


def _run(directory: Path, guidance_config: str | None, jobs_port: int, tokens_file: str | None,
         inversion_models_dir: str | None = None) -> int:
    """The supervisor process itself (started detached by `up`)."""
    from orchestrator.runtime.supervisor import Supervisor

    specs = service_specs(directory, guidance_config, jobs_port, tokens_file, inversion_models_dir)
    sup = Supervisor(specs, directory / "logs").start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    state = {"pid": os.getpid(), "jobs": sup.address("jobs"),
             "services": {name: sup.address(name) for name in (*SERVICES, "jobs")}}
    (directory / STATE).write_text(json.dumps(state, indent=1))
    stop.wait()
    sup.stop()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestrator.cluster")
    p.add_argument("--dir", required=True)
    p.add_argument("--guidance-config", default=None)
    p.add_argument("--jobs-port", type=int, default=50050)
    p.add_argument("--tokens-file", default=None)
    p.add_argument("--inversion-models-dir", default=None)
    a = p.parse_args(argv)
    return _run(Path(a.dir).resolve(), a.guidance_config, a.jobs_port, a.tokens_file, a.inversion_models_dir)


if __name__ == "__main__":
    raise SystemExit(main())
