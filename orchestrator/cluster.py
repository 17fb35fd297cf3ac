"""`headforge cluster up|down|status`: a whole HeadForge on this machine in the background: the face,
render, guidance and inversion services and the jobs service (which runs jobs on a local Ray, its workers
calling those services) as processes on loopback, kept alive by a supervisor that restarts any that dies.

    headforge cluster up [--dir DIR] [--guidance-config models/guidance/guidance.yaml]
                         [--inversion-models-dir models]     # generators under models/inversion/<name>
                         [--subject-cpus 0.25 --max-running-per-tenant 4 --max-active-jobs 8]   # jobs limits
    headforge submit photo.jpg --recipe fast      # the jobs commands find the running cluster's address
    headforge cluster down

State (cluster.json, cluster.lock, logs, job store, artifacts) lives in DIR, by default the per-user
orchestrator.state_dir.cluster_dir() ($HEADFORGE_HOME/cluster, else ~/.headforge/cluster): one cluster per
folder, whatever the current directory.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import FailedPrecondition, Unavailable
from services.common.process import ROOT

STATE = "cluster.json"
RAY_TOKEN = "ray_auth_token"   # the local Ray's authentication token (mode 0600), made by the supervisor
LOCK = "cluster.lock"   # flock held by the supervisor for its lifetime: one cluster per state folder


def _state(directory: Path) -> dict | None:
    path = directory / STATE
    return json.loads(path.read_text()) if path.is_file() else None


def _locked(directory: Path) -> bool:
    """Whether a supervisor holds the folder's lock (a cluster runs or is starting there)."""
    path = directory / LOCK
    if not path.is_file():
        return False
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _alive(pid: int) -> bool:
    try:   # a supervisor this process started and that has exited is a zombie until reaped: reap it
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:   # not this process's child
        pass
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _log_tail(path: Path, n: int = 15) -> str:
    lines = path.read_text(errors="replace").splitlines()[-n:] if path.is_file() else []
    return "\n".join(lines)


def up(directory: Path, guidance_config: str | None, jobs_port: int, tokens_file: str | None,
       timeout_s: float = 300, inversion_models_dir: str | None = None, jobs_limits: JobsLimits | None = None,
       face_args: list[str] | None = None) -> dict:
    """Start the supervisor (detached); its state: pid, jobs address, service addresses. directory: the
    state folder (resolved here, never against the checkout). FailedPrecondition (CLUSTER_RUNNING) while a
    cluster runs or starts there, leaving its state and logs alone; FailedPrecondition (PORT_IN_USE) when
    jobs_port is taken; Unavailable when the supervisor exits or does not come up in timeout_s.
    inversion_models_dir: the inversion service's --models-dir (None: it serves no generator). jobs_limits:
    the jobs service's --subject-cpus / --max-running-per-tenant / --max-active-jobs (None fields: its defaults).
    face_args: extra `serve face` flags, e.g. ["--recognizer", "insightface", "--insightface-dir", DIR] (paths
    are resolved against the caller's working directory by the caller: the supervisor runs in the checkout)."""
    directory = Path(directory).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    lock = open(directory / LOCK, "a+")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = _state(directory)
            where = f"; jobs service at {current['jobs']} (supervisor pid {current['pid']})" if current else \
                " (it is starting)"
            raise FailedPrecondition(f"a HeadForge cluster already runs from {directory}{where}. Use it, or stop "
                                     "it first with `headforge cluster down`", reason="CLUSTER_RUNNING") from None
        if not _port_free(jobs_port):
            raise FailedPrecondition(f"port {jobs_port} on 127.0.0.1 is in use (another jobs service?); "
                                     "pick a free one with --jobs-port", reason="PORT_IN_USE")
        (directory / STATE).unlink(missing_ok=True)
        args = [sys.executable, "-m", "orchestrator.cluster", "--dir", str(directory), "--jobs-port", str(jobs_port)]
        if guidance_config:
            args += ["--guidance-config", str(Path(guidance_config).resolve())]
        if tokens_file:
            args += ["--tokens-file", str(Path(tokens_file).resolve())]
        if inversion_models_dir:
            args += ["--inversion-models-dir", str(Path(inversion_models_dir).resolve())]
        args += (jobs_limits or JobsLimits()).args()
        if face_args:
            args += ["--face-args", shlex.join(face_args)]
        log_path = directory / "supervisor.log"
        with open(log_path, "ab") as log:
            # the child inherits the locked file: the lock lives as long as the supervisor
            proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=log, start_new_session=True,
                                    pass_fds=(lock.fileno(),))
    finally:
        lock.close()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = _state(directory)
        if state and state.get("pid") == proc.pid:
            return state
        if proc.poll() is not None:
            raise Unavailable(f"the cluster supervisor exited ({proc.returncode}); {log_path}:\n{_log_tail(log_path)}")
        time.sleep(0.3)
    proc.terminate()
    raise Unavailable(f"the cluster did not come up in {timeout_s:.0f}s; see {log_path}")


def _running_state(directory: Path) -> dict | None:
    """The state of the cluster running from directory (its supervisor holds the lock and is alive), or
    None; a stale cluster.json left by one that died is removed."""
    state = _state(directory)
    if not _locked(directory):
        (directory / STATE).unlink(missing_ok=True)
        return None
    return state if state and _alive(state["pid"]) else None


def down(directory: Path, timeout_s: float = 60) -> bool:
    """Stop the cluster whose state is in directory; False when none runs there."""
    directory = Path(directory).expanduser().resolve()
    state = _running_state(directory)
    if state is None:
        return False
    os.kill(state["pid"], signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(state["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    (directory / STATE).unlink(missing_ok=True)
    return True


def running_jobs_address(directory: Path) -> str | None:
    """The jobs address of the cluster running from directory, or None (no health check: fast)."""
    state = _running_state(Path(directory).expanduser().resolve())
    return state["jobs"] if state else None


def status(directory: Path) -> dict:
    """The recorded addresses and whether each service answers its health check."""
    from services.common.client import GrpcTransport

    directory = Path(directory).expanduser().resolve()
    state = _running_state(directory)
    if state is None:
        return {"running": False, "dir": str(directory)}
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
    return {"running": True, "dir": str(directory), **state, "health": health}


SERVICES = ("face", "render", "guidance", "inversion")


@dataclass(frozen=True)
class JobsLimits:
    """The jobs service's capacity flags a cluster passes on (None: `serve jobs`'s own default).
    subject_cpus: CPUs each running subject's Ray actor holds (the local Ray has max(cpu_count, 4));
    max_running_per_tenant: subjects running at once per tenant; max_active_jobs: queued + running per tenant."""

    subject_cpus: float | None = None
    max_running_per_tenant: int | None = None
    max_active_jobs: int | None = None

    def args(self) -> list[str]:
        """The same flags for `serve jobs` and `python -m orchestrator.cluster` (only those given)."""
        flags = (("--subject-cpus", self.subject_cpus), ("--max-running-per-tenant", self.max_running_per_tenant),
                 ("--max-active-jobs", self.max_active_jobs))
        return [arg for flag, value in flags if value is not None for arg in (flag, str(value))]


def service_specs(directory: Path, guidance_config: str | None, jobs_port: int, tokens_file: str | None,
                  inversion_models_dir: str | None = None, jobs_limits: JobsLimits | None = None,
                  face_args: list[str] | None = None) -> list:
    """The supervised processes (orchestrator.runtime.supervisor.ServiceSpec): each service on a free
    loopback port, and the jobs service on jobs_port with every service's address for its Ray workers
    (and jobs_limits' flags, when given). face_args: extra `serve face` flags (its detector, recogniser and
    their model files)."""
    from orchestrator.runtime.supervisor import ServiceSpec
    from services.common.process import free_port

    ports = {name: free_port() for name in SERVICES}
    addr = {name: f"127.0.0.1:{p}" for name, p in ports.items()}
    extra = {"guidance": ["--config", guidance_config] if guidance_config else [],
             "inversion": ["--models-dir", inversion_models_dir] if inversion_models_dir else [],
             "face": list(face_args or [])}
    # the same folder is the jobs' models_dir: recipes' relative model paths (refine's LPIPS files) resolve there
    models_args = ["--default-models-dir", inversion_models_dir, "--model-root", inversion_models_dir] \
        if inversion_models_dir else []
    common, token_args = [], []
    if tokens_file:   # the services accept the cluster's own service token, acting for each job's tenant
        merged, service_token = cluster_tokens(directory, tokens_file)
        common, token_args = ["--tokens-file", merged], ["--service-token-file", service_token]
    return [*(ServiceSpec(name, [*extra.get(name, []), *common], ports[name]) for name in SERVICES),
            ServiceSpec("jobs", ["--store", str(directory / "jobs.db"), "--artifacts", str(directory / "artifacts"),
                                 *[arg for name in SERVICES for arg in (f"--{name}", addr[name])],
                                 *token_args, *common, *(jobs_limits or JobsLimits()).args(), *models_args],
                        jobs_port,
                        env=ray_auth_env(directory))]


def _private_file(path: Path, text: str | None = None) -> Path:
    """path, readable only by this user; written with text (or a new random token when it does not exist)."""
    import secrets

    if text is None and path.is_file():
        os.chmod(path, 0o600)
        return path
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) if text is None else text)
    return path


def cluster_tokens(directory: Path, tokens_file: str) -> tuple[str, str]:
    """(the services' tokens file, the jobs service's service-token file) in DIR, both mode 0600: the
    user's tenant tokens plus the cluster's own service token (services.common.auth service_tokens), so
    every job's calls are its tenant's and no token goes on a command line."""
    import yaml

    service = _private_file(directory / "service_token").read_text().strip()
    user = yaml.safe_load(Path(tokens_file).read_text()) or {}
    merged = {**user, "service_tokens": {**(user.get("service_tokens") or {}), service: "headforge-jobs"}}
    return str(_private_file(directory / "tokens.yaml", yaml.safe_dump(merged))), str(directory / "service_token")


def ray_auth_env(directory: Path) -> dict[str, str]:
    """The environment that makes the jobs service's local Ray require a token: Ray's processes listen on
    every interface (its servers take no bind address), so each of them (GCS, raylet, workers, the jobs
    driver) refuses a caller without this cluster's token, kept in DIR/ray_auth_token, readable only by
    this user (made once per state folder; a restarted jobs service reuses it)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(_private_file(directory / RAY_TOKEN))}


def _run(directory: Path, guidance_config: str | None, jobs_port: int, tokens_file: str | None,
         inversion_models_dir: str | None = None, jobs_limits: JobsLimits | None = None,
         face_args: list[str] | None = None) -> int:
    """The supervisor process itself (started detached by `up`)."""
    from orchestrator.runtime.supervisor import Supervisor

    specs = service_specs(directory, guidance_config, jobs_port, tokens_file, inversion_models_dir, jobs_limits,
                          face_args)
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
    p.add_argument("--subject-cpus", type=float, default=None)
    p.add_argument("--max-running-per-tenant", type=int, default=None)
    p.add_argument("--max-active-jobs", type=int, default=None)
    p.add_argument("--face-args", default="")
    a = p.parse_args(argv)
    limits = JobsLimits(a.subject_cpus, a.max_running_per_tenant, a.max_active_jobs)
    return _run(Path(a.dir).resolve(), a.guidance_config, a.jobs_port, a.tokens_file, a.inversion_models_dir, limits,
                shlex.split(a.face_args))


if __name__ == "__main__":
    raise SystemExit(main())
