"""What `headforge cluster up` exposes to the network (issue 22, item 3): the HeadForge services listen on
loopback only; Ray's processes (GCS, raylet, workers, the jobs driver) listen on every interface (Ray's
servers take no bind address), so the cluster runs Ray with token authentication and its own token, in a
file only this user can read: a caller without it is refused."""

from __future__ import annotations

import ipaddress
import json
import stat
import subprocess

import grpc
import yaml
import psutil

from services.common.process import ROOT, free_port
from tests.integration.test_local_cluster import _headforge_in

GCS_METHOD = "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo"


def _headforge(*args: str, home, timeout: float = 300) -> subprocess.CompletedProcess:
    return _headforge_in(ROOT, *args, home=home, timeout=timeout)


def _listeners(root_pid: int) -> list[tuple[psutil.Process, str, int]]:
    """(process, ip, port) of every TCP listener of root_pid and its descendants."""
    procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    found = []
    for p in procs:
        try:
            for c in p.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN:
                    found.append((p, c.laddr.ip, c.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def _loopback(ip: str) -> bool:
    a = ipaddress.ip_address(ip)
    return (a.ipv4_mapped or a).is_loopback if isinstance(a, ipaddress.IPv6Address) else a.is_loopback


def _gcs_call(port: int, token: str | None) -> grpc.StatusCode:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        call = ch.unary_unary(GCS_METHOD, request_serializer=lambda x: x, response_deserializer=lambda x: x)
        try:
            call(b"", metadata=[("authorization", f"Bearer {token}")] if token else None, timeout=10)
            return grpc.StatusCode.OK
        except grpc.RpcError as e:
            return e.code()


def test_services_on_loopback_and_ray_behind_the_clusters_token(tmp_path):
    home = tmp_path / "home"
    up = _headforge("cluster", "up", "--jobs-port", str(free_port()), home=home)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state_dir = home / "cluster"
        state = json.loads((state_dir / "cluster.json").read_text())
        token_file = state_dir / "ray_auth_token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()

        listeners = _listeners(state["pid"])
        ours = [(p, ip, port) for p, ip, port in listeners if "orchestrator.cli" in " ".join(p.cmdline())
                and "serve" in p.cmdline()]
        service_ports = {int(a.rsplit(":", 1)[1]) for a in state["services"].values()}
        assert service_ports <= {port for _, _, port in ours}
        # every socket a HeadForge service process opened itself is on loopback (its Ray driver's are Ray's)
        for p, ip, port in ours:
            if port in service_ports:
                assert _loopback(ip), (p.cmdline(), ip, port)
        gcs = [port for p, _, port in listeners if p.name().startswith("gcs_server")]
        assert gcs, [p.name() for p, _, _ in listeners]
        for port in gcs:
            assert _gcs_call(port, None) == grpc.StatusCode.UNAUTHENTICATED
            assert _gcs_call(port, "0" * 64) == grpc.StatusCode.UNAUTHENTICATED
            assert _gcs_call(port, token) == grpc.StatusCode.OK
        # and no secret on a command line: the token file's path, never the token
        for p in [psutil.Process(state["pid"]), *psutil.Process(state["pid"]).children(recursive=True)]:
            try:
                assert token not in " ".join(p.cmdline())
            except psutil.NoSuchProcess:
                pass
    finally:
        down = _headforge("cluster", "down", home=home, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr


def test_each_jobs_calls_are_its_tenants_and_no_token_is_on_a_command_line(tmp_path):
    """Issue 22, item 5: with a tokens file of two tenants, the jobs service's workers call the services with
    the cluster's own service token acting for each job's tenant (render's log names the job's tenant on
    every scene call); the tokens live in 0600 files, never on a command line."""
    import time

    home = tmp_path / "home"
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": {"tok-alpha-0123456789": "tenant-a", "tok-beta-0123456789": "tenant-b"}}))
    up = _headforge("cluster", "up", "--jobs-port", str(free_port()), "--tokens-file", str(tokens), home=home)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        state_dir = home / "cluster"
        for name in ("tokens.yaml", "service_token"):
            assert stat.S_IMODE((state_dir / name).stat().st_mode) == 0o600
        service_token = (state_dir / "service_token").read_text().strip()
        jobs = {}
        for token, tenant in (("tok-alpha-0123456789", "tenant-a"), ("tok-beta-0123456789", "tenant-b")):
            r = _headforge("submit", "--recipe", "analytic_prior", "--option", "stages.optimise.iterations=5",
                           "--token", token, "--json", home=home, timeout=120)
            assert r.returncode == 0, r.stdout + r.stderr
            jobs[tenant] = (json.loads(r.stdout)["id"], token)
        deadline = time.monotonic() + 240
        states = {}
        while time.monotonic() < deadline:
            for tenant, (job_id, token) in jobs.items():
                r = _headforge("status", job_id, "--token", token, "--json", home=home, timeout=60)
                states[tenant] = json.loads(r.stdout)["state"] if r.returncode == 0 else r.stderr
            if all(s in ("succeeded", "failed", "cancelled") for s in states.values()):
                break
            time.sleep(1)
        assert states == {"tenant-a": "succeeded", "tenant-b": "succeeded"}, states
        calls = [json.loads(line) for log in (state_dir / "logs").glob("render.*.log")
                 for line in log.read_text().splitlines() if line.startswith("{")]
        scene_calls = [c for c in calls if c.get("msg") == "rpc" and "Scene" in c.get("method", "")]
        assert {c["tenant"] for c in scene_calls} == {"tenant-a", "tenant-b"}, {c.get("tenant") for c in scene_calls}
        state = json.loads((state_dir / "cluster.json").read_text())
        for p in [psutil.Process(state["pid"]), *psutil.Process(state["pid"]).children(recursive=True)]:
            try:
                line = " ".join(p.cmdline())
            except psutil.NoSuchProcess:
                continue
            for secret in (service_token, "tok-alpha-0123456789", "tok-beta-0123456789"):
                assert secret not in line, line
    finally:
        down = _headforge("cluster", "down", home=home, timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
