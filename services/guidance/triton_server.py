"""Start a real NVIDIA Triton Inference Server on a model repository (tests, benchmarks, local setups).

Where a Triton server comes from:
- In production: NVIDIA's Triton container (`/opt/tritonserver/bin/tritonserver`, backends in
  `/opt/tritonserver/backends`, the python backend using the container's python3, which needs torch, numpy,
  safetensors and diffusers installed for the UNet repository of `services.guidance.triton_repo`).
- On any Linux x86-64 machine, from PyPI: the `nvidia-pytriton` wheel ships a real `tritonserver` binary
  (Triton 2.51 in nvidia-pytriton 0.7.0) with only the python backend. It pins numpy<2, so give it its own
  virtual environment, e.g.

      python3 -m venv /opt/tritonenv
      /opt/tritonenv/bin/pip install torch==2.13.0          # the CPU build; CUDA builds on GPU nodes
      /opt/tritonenv/bin/pip install nvidia-pytriton==0.7.0 diffusers==0.42.1 safetensors

  (about 1.4 GB with the CPU torch), then run

      python -m services.guidance.triton_repo path/to/sd/unet /srv/triton-repo
      python -m services.guidance.triton_server --venv /opt/tritonenv --repo /srv/triton-repo \\
          --grpc-port 8001 --http-port 8000

  and point the guidance service's Triton backbone at `HOST:8001`.

The wheel's layout needs three things that `start_tritonserver` does for it (as pytriton itself does):
1. the python backend needs a `triton_python_backend_stub` next to `libtriton_python.so`; the wheel keeps one
   per Python version under `pytriton/tritonserver/python_backend_stubs/3.X/`, so a backend folder with the
   stub of the environment's Python version is assembled in a work folder;
2. `libtriton_python.so` finds its libraries through `LD_LIBRARY_PATH` (the wheel's `nvidia_pytriton.libs`);
3. the stub embeds Python through whatever `libpython3.X.so.1.0` the dynamic loader finds first and takes its
   standard library and site-packages from the `python3` first on PATH (the venv). If that libpython is
   another patch release than the venv's interpreter (e.g. Debian's 3.11.2 libpython with a pyenv 3.11.7
   venv), extension modules fail to import (`undefined symbol: _PyModule_Add`, or `RLock._recursion_count`
   errors in threading): so the venv interpreter's own shared libpython folder is put first on
   `LD_LIBRARY_PATH`. An interpreter built without a shared libpython cannot host the stub: create the venv
   from one that has it (pyenv builds with `--enable-shared`, Debian's python3).

`find_tritonserver()` locates a server: env HEADFORGE_TRITONSERVER (the binary), env HEADFORGE_TRITON_VENV (a
venv with nvidia-pytriton installed), then `tritonserver` on PATH / `/opt/tritonserver/bin/tritonserver`.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ENV_BINARY = "HEADFORGE_TRITONSERVER"
ENV_VENV = "HEADFORGE_TRITON_VENV"


@dataclass
class TritonInstall:
    """Where a tritonserver and what it needs live.

    binary: the tritonserver executable. python: the interpreter whose environment the python backend uses
    (None = the server's own default). stubs_dir / libs_dir / backends_dir: set for the nvidia-pytriton wheel
    layout (per-Python-version stubs, bundled libraries, the shipped backends folder)."""

    binary: Path
    python: Path | None = None
    stubs_dir: Path | None = None
    libs_dir: Path | None = None
    backends_dir: Path | None = None

    @property
    def is_pytriton(self) -> bool:
        return self.stubs_dir is not None


def _venv_of(path: Path) -> Path | None:
    for parent in path.parents:
        if (parent / "pyvenv.cfg").is_file():
            return parent
    return None


def describe_install(binary: Path | str, python: Path | str | None = None) -> TritonInstall:
    """A TritonInstall for a binary; recognises the nvidia-pytriton wheel layout
    (site-packages/pytriton/tritonserver/bin/tritonserver) and its venv."""
    binary = Path(binary).resolve()
    if not binary.is_file():
        raise FileNotFoundError(f"tritonserver binary not found: {binary}")
    server_dir = binary.parent.parent
    install = TritonInstall(binary=binary, python=Path(python) if python else None)
    if (server_dir / "python_backend_stubs").is_dir():
        install.stubs_dir = server_dir / "python_backend_stubs"
        install.backends_dir = server_dir / "backends"
        libs = server_dir.parent.parent / "nvidia_pytriton.libs"
        install.libs_dir = libs if libs.is_dir() else None
        if install.python is None:
            venv = _venv_of(binary)
            if venv is not None and (venv / "bin" / "python3").exists():
                install.python = venv / "bin" / "python3"
    return install


def find_tritonserver(venv: Path | str | None = None) -> TritonInstall | None:
    """The Triton server to use, or None: HEADFORGE_TRITONSERVER, the nvidia-pytriton wheel inside `venv` (or
    HEADFORGE_TRITON_VENV), then `tritonserver` on PATH or in /opt/tritonserver."""
    binary = os.environ.get(ENV_BINARY)
    venv = venv or os.environ.get(ENV_VENV)
    python = Path(venv) / "bin" / "python3" if venv else None
    if binary:
        return describe_install(binary, python if python and python.exists() else None)
    if venv:
        hits = sorted(glob.glob(str(Path(venv) / "lib" / "python3*" / "site-packages" / "pytriton" /
                                    "tritonserver" / "bin" / "tritonserver")))
        if hits:
            return describe_install(hits[-1], python)
        return None
    on_path = shutil.which("tritonserver") or (
        "/opt/tritonserver/bin/tritonserver" if os.path.isfile("/opt/tritonserver/bin/tritonserver") else None)
    return describe_install(on_path) if on_path else None


def _python_facts(python: Path) -> dict:
    code = ("import json, sys, sysconfig; print(json.dumps({'version': '%d.%d' % sys.version_info[:2], "
            "'libdir': sysconfig.get_config_var('LIBDIR'), 'shared': sysconfig.get_config_var('Py_ENABLE_SHARED'), "
            "'soname': sysconfig.get_config_var('INSTSONAME')}))")
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)


def prepare_environment(install: TritonInstall, work_dir: Path, base_env: dict | None = None) -> tuple[list[str], dict]:
    """(extra command-line arguments, environment) to run install.binary with its python backend working."""
    env = dict(os.environ if base_env is None else base_env)
    # The stub's interpreter must take its paths from the backend's environment, not from ours.
    for key in ("PYTHONHOME", "PYTHONPATH", "PYTHONSTARTUP", "VIRTUAL_ENV"):
        env.pop(key, None)
    args: list[str] = []
    lib_path: list[str] = []
    if install.python is not None:
        env["PATH"] = f"{install.python.parent}{os.pathsep}{env.get('PATH', '')}"
    if install.is_pytriton:
        if install.python is None:
            raise RuntimeError(f"{install.binary}: the nvidia-pytriton server needs a Python environment for its "
                               f"python backend (pass python=/path/to/venv/bin/python3)")
        facts = _python_facts(install.python)
        stub = install.stubs_dir / facts["version"] / "triton_python_backend_stub"
        if not stub.is_file():
            have = sorted(p.name for p in install.stubs_dir.iterdir())
            raise RuntimeError(f"no python backend stub for Python {facts['version']} in {install.stubs_dir} "
                               f"(has {', '.join(have)})")
        backends = work_dir / "backends"
        python_be = backends / "python"
        python_be.mkdir(parents=True, exist_ok=True)
        for src in (install.backends_dir / "python").iterdir():
            if src.is_file():
                shutil.copy2(src, python_be / src.name)
        shutil.copy2(stub, python_be / "triton_python_backend_stub")
        args.append(f"--backend-directory={backends}")
        caches = install.backends_dir.parent / "caches"
        if caches.is_dir():
            args.append(f"--cache-directory={caches}")
        libdir = facts.get("libdir")
        if facts.get("shared") and libdir and facts.get("soname") and (Path(libdir) / facts["soname"]).exists():
            lib_path.append(libdir)
        if install.libs_dir is not None:
            lib_path.append(str(install.libs_dir))
    if lib_path:
        old = env.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = os.pathsep.join(lib_path + ([old] if old else []))
    return args, env


@dataclass
class TritonServerProcess:
    """A running tritonserver. grpc_url is what TritonUNet connects to; stop() ends it (SIGTERM, then SIGKILL
    of its process group) and removes the work folder when start_tritonserver created it."""

    proc: subprocess.Popen
    host: str
    grpc_port: int
    http_port: int
    log_path: Path
    work_dir: Path
    _own_work_dir: bool = field(default=False, repr=False)
    _log_file: object = field(default=None, repr=False)

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 180.0) -> None:
        """Block until /v2/health/ready answers 200 (all models loaded); RuntimeError with the log's tail when
        the server exits first, TimeoutError when it takes longer than timeout_s."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tritonserver exited with {self.proc.returncode} before it was ready; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.25)
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f} s; log {self.log_path}:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_work_dir:
            shutil.rmtree(self.work_dir / "backends", ignore_errors=True)
        return self.proc.returncode

    def __enter__(self) -> "TritonServerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_tritonserver(
    binary: Path | str | TritonInstall,
    repo_dir: Path | str,
    grpc_port: int,
    http_port: int,
    *,
    host: str = "127.0.0.1",
    python: Path | str | None = None,
    work_dir: Path | str | None = None,
    log_path: Path | str | None = None,
    extra_args: tuple[str, ...] | list[str] = (),
    env: dict | None = None,
    wait: bool = True,
    ready_timeout_s: float = 180.0,
    exit_timeout_s: int = 10,
) -> TritonServerProcess:
    """Start `tritonserver` on repo_dir, listening on host:grpc_port (gRPC) and host:http_port (HTTP, also used
    for the readiness probe); metrics are off. python: the interpreter of the environment the python backend
    runs in (default: the venv the nvidia-pytriton binary is installed in). The server's output goes to
    log_path (default work_dir/tritonserver.log; work_dir default: a new temporary folder). With wait=True
    (default) returns once every model is loaded (see TritonServerProcess.wait_ready for the errors)."""
    install = binary if isinstance(binary, TritonInstall) else describe_install(binary, python)
    if python is not None:
        install.python = Path(python)
    own = work_dir is None
    work = Path(tempfile.mkdtemp(prefix="headforge-triton-")) if own else Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    log = Path(log_path) if log_path else work / "tritonserver.log"
    extra, run_env = prepare_environment(install, work, env)
    cmd = [
        str(install.binary),
        f"--model-repository={Path(repo_dir).resolve()}",
        f"--grpc-address={host}", f"--grpc-port={grpc_port}",
        f"--http-address={host}", f"--http-port={http_port}",
        "--allow-metrics=false",
        "--disable-auto-complete-config",
        "--exit-on-error=true",
        "--strict-readiness=true",
        f"--exit-timeout-secs={exit_timeout_s}",
        *extra,
        *extra_args,
    ]
    log_file = open(log, "ab")
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=run_env, cwd=work, start_new_session=True)
    server = TritonServerProcess(proc=proc, host=host, grpc_port=grpc_port, http_port=http_port, log_path=log,
                                 work_dir=work, _own_work_dir=own, _log_file=log_file)
    if wait:
        try:
            server.wait_ready(ready_timeout_s)
        except BaseException:
            server.stop(timeout_s=10)
            raise
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a Triton Inference Server on a model repository "
                                                 "(see services/guidance/triton_server.py).")
    parser.add_argument("--repo", type=Path, required=True, help="model repository (services.guidance.triton_repo)")
    parser.add_argument("--binary", type=Path, default=None, help=f"tritonserver binary (or env {ENV_BINARY})")
    parser.add_argument("--venv", type=Path, default=None,
                        help=f"venv with nvidia-pytriton and the model's packages (or env {ENV_VENV})")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.binary:
        python = args.venv / "bin" / "python3" if args.venv else None
        install = describe_install(args.binary, python)
    else:
        install = find_tritonserver(args.venv)
    if install is None:
        print("no tritonserver found: pass --binary or --venv (see the module docstring)", file=sys.stderr)
        return 2
    server = start_tritonserver(install, args.repo, args.grpc_port, args.http_port, host=args.host,
                                work_dir=args.work_dir, wait=True)
    print(json.dumps({"grpc": server.grpc_url, "http": server.http_url, "log": str(server.log_path)}), flush=True)
    stop = {"now": False}

    def on_signal(signum, frame):
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop["now"] and server.proc.poll() is None:
        time.sleep(0.5)
    return server.stop() or 0


if __name__ == "__main__":
    raise SystemExit(main())
