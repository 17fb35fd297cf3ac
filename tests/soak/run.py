"""Issue 22's soak: N concurrent jobs of a cheap recipe for M minutes on a loopback `headforge cluster`.

    python -m tests.soak.run --out out/soak.json [--minutes 10] [--jobs 16] [--tenants 4]
                             [--recipe analytic_prior] [--option stages.optimise.iterations=40] [--sample-every 5]

What it measures, and how:
- a cluster is started in a temporary state folder with `headforge cluster up` (a subprocess) with a
  tokens file of --tenants tenants, a guidance config holding only the analytic backbone, and jobs limits that
  let all --jobs jobs run at once (--subject-cpus = the local Ray's CPUs / jobs, at most 1;
  --max-running-per-tenant and --max-active-jobs = ceil(jobs / tenants));
- --jobs slots, slot i belonging to tenant i mod --tenants (each tenant its own token and GrpcJobsClient),
  are kept busy for --minutes: each slot's job is polled every second and a new one submitted as it ends;
  after --minutes no more are submitted and the ones in flight are waited for (at most --drain-s seconds);
- every --sample-every seconds the RSS (MB = 2**20 bytes) of the supervisor (cluster.json's pid) and all its
  descendants is sampled, grouped by role: the service name (face, render, guidance, inversion, jobs) for
  `orchestrator.cli serve NAME`, the executable for Ray's native processes (gcs_server, raylet), the script
  for Ray's Python helpers (log_monitor, dashboard agent, runtime_env agent, ...), and "ray workers" for the
  per-job worker processes (cmdline `ray::...` or default_worker.py), reported as their count and the
  peak/median of each worker's peak RSS; every PID ever seen is recorded with its create time, and each
  process's thread and open-fd counts are sampled too;
- at the end, per long-lived process: first/last/max RSS and the least-squares slope of RSS (MB/min) over the
  samples taken after the warm-up (min(20% of --minutes, 1 minute): "warmup_s" in the JSON) and before the
  last submission; jobs submitted/succeeded/failed (with their error messages) per tenant, throughput
  (succeeded jobs per minute of the load window), queue-wait (started_at - created_at) and run-time
  (finished_at - started_at) medians in seconds;
- then `cluster down`, up to --orphan-wait-s seconds of waiting, and the orphans: every PID ever seen still
  alive (same create time, so a reused PID is not counted), plus any process whose cmdline mentions the state
  folder or this cluster's Ray session.

Criteria (in the JSON as "criteria"; exit code 1 when any fails): no job failed or was left unfinished and no
submission was refused; no orphan; every long-lived process's post-warm-up slope is <= 2 MB/min OR its fitted
growth over the post-warm-up window (slope x window minutes) is <= 5% of its fitted RSS at the window's
start: a leak has to be both steep in absolute terms and material for that process to fail the run (a 2 MB/min
creep in a 40 MB helper over 8 minutes is 40%; the same in a 1 GB jobs process is noise from allocator arenas).
Writes the JSON to --out and prints a short table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import yaml

MB = float(1 << 20)
TERMINAL = ("succeeded", "failed", "cancelled")
SERVICES = ("face", "render", "guidance", "inversion", "jobs")
LONG_LIVED = ("supervisor", *SERVICES[:4], "jobs", "gcs_server", "raylet")   # roles the short test expects
WORKERS = "ray workers"
SLOPE_MB_PER_MIN = 2.0
GROWTH_FRACTION = 0.05
SESSION_RE = re.compile(r"session_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}_\d+_\d+")


# ---------------------------------------------------------------------------------------------- roles

def role_of(cmdline: list[str], name: str) -> str:
    """The role of a cluster process from its cmdline and executable name: a service name, a Ray process
    name, WORKERS for a per-job Ray worker, or the executable name when nothing else fits."""
    for native in ("gcs_server", "raylet"):   # before the workers: raylet's flags name default_worker.py
        if name.startswith(native) or (cmdline and Path(cmdline[0]).name.startswith(native)):
            return native
    if cmdline and (cmdline[0].startswith("ray::") or any(Path(a).name == "default_worker.py" for a in cmdline)):
        return WORKERS
    if "orchestrator.cli" in cmdline and "serve" in cmdline:
        after = cmdline[cmdline.index("serve") + 1:]
        return after[0] if after else "serve"
    if "orchestrator.cluster" in cmdline:
        return "supervisor"
    for arg in cmdline[1:]:
        if arg.endswith(".py"):
            parts = Path(arg).parts
            return "/".join(parts[-2:]) if Path(arg).name in ("main.py", "agent.py") else Path(arg).stem
    return name


# ---------------------------------------------------------------------------------------------- sampling

@dataclass
class Seen:
    """One process ever seen: its role, create time (s since the epoch), RSS samples (t_s, MB) and
    (t_s, threads, open fds) samples (a leak of threads or sockets shows there before it shows in RSS)."""

    pid: int
    role: str
    create_time: float
    cmdline: str
    samples: list[tuple[float, float]] = field(default_factory=list)
    handles: list[tuple[float, int, int]] = field(default_factory=list)


class Sampler:
    """Samples, every every_s seconds, the RSS of root_pid and its descendants (in a thread)."""

    def __init__(self, root_pid: int, every_s: float, t0: float):
        self.root_pid, self.every_s, self.t0 = root_pid, every_s, t0
        self.seen: dict[tuple[int, float], Seen] = {}
        self.sessions: set[str] = set()
        self.sample_times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)

    def start(self) -> "Sampler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.every_s):
                return

    def _processes(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.root_pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def sample(self) -> None:
        """One sample of every process of the cluster (a process that vanishes meanwhile is skipped)."""
        t = time.time() - self.t0
        self.sample_times.append(t)
        for p in self._processes():
            try:
                with p.oneshot():
                    key = (p.pid, p.create_time())
                    rss = p.memory_info().rss / MB
                    handles = (p.num_threads(), p.num_fds())
                    if key not in self.seen:
                        cmdline = p.cmdline()
                        self.seen[key] = Seen(p.pid, role_of(cmdline, p.name()), key[1], " ".join(cmdline)[:300])
                        self.sessions.update(SESSION_RE.findall(" ".join(cmdline)))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            self.seen[key].samples.append((t, rss))
            self.seen[key].handles.append((t, *handles))


# ---------------------------------------------------------------------------------------------- statistics

def slope_mb_per_min(samples: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(least-squares slope in MB/min, fitted MB at the first sample's time) of (t_s, MB) samples; None
    with fewer than 3."""
    if len(samples) < 3:
        return None
    ts = [t / 60.0 for t, _ in samples]
    ys = [y for _, y in samples]
    mt, my = statistics.fmean(ts), statistics.fmean(ys)
    var = sum((t - mt) ** 2 for t in ts)
    slope = sum((t - mt) * (y - my) for t, y in zip(ts, ys)) / var if var else 0.0
    return slope, my + slope * (ts[0] - mt)


def process_summary(seen: Seen, window: tuple[float, float]) -> dict:
    """A long-lived process's RSS figures (MB; slope MB/min) and whether it passes the memory criterion."""
    ys = [y for _, y in seen.samples]
    post = [(t, y) for t, y in seen.samples if window[0] <= t <= window[1]]
    out = {"pid": seen.pid, "samples": len(ys), "first_mb": round(ys[0], 1), "last_mb": round(ys[-1], 1),
           "max_mb": round(max(ys), 1), "post_warmup_samples": len(post),
           "threads_first_last_max": [seen.handles[0][1], seen.handles[-1][1], max(h[1] for h in seen.handles)],
           "fds_first_last_max": [seen.handles[0][2], seen.handles[-1][2], max(h[2] for h in seen.handles)],
           "series_t_s_mb": [[round(t, 1), round(y, 1)] for t, y in seen.samples],
           "series_t_s_threads_fds": [[round(t, 1), n, f] for t, n, f in seen.handles]}
    fit = slope_mb_per_min(post)
    if fit is None:
        return {**out, "slope_mb_per_min": None, "growth_fraction": None, "flat": None}
    slope, start = fit
    span_min = (post[-1][0] - post[0][0]) / 60.0
    growth = slope * span_min / start if start > 0 else 0.0
    flat = slope <= SLOPE_MB_PER_MIN or growth <= GROWTH_FRACTION
    return {**out, "slope_mb_per_min": round(slope, 3), "growth_fraction": round(growth, 4), "flat": flat}


def worker_summary(workers: list[Seen]) -> dict:
    """The per-job Ray workers: how many, and the peak / median of each one's peak RSS (MB)."""
    peaks = [max(y for _, y in w.samples) for w in workers if w.samples]
    return {"count": len(workers), "peak_mb": round(max(peaks), 1) if peaks else None,
            "median_peak_mb": round(statistics.median(peaks), 1) if peaks else None}


def memory_report(sampler: Sampler, window: tuple[float, float]) -> tuple[dict, dict]:
    """({label: process_summary} of the long-lived processes, worker_summary); a role with several PIDs
    over the run (a restarted service) gets one entry per PID, labelled role[pid]."""
    by_role: dict[str, list[Seen]] = {}
    for s in sampler.seen.values():
        by_role.setdefault(s.role, []).append(s)
    long_lived = {}
    for role, procs in sorted(by_role.items()):
        if role == WORKERS:
            continue
        for s in procs:
            label = role if len(procs) == 1 else f"{role}[{s.pid}]"
            long_lived[label] = {"role": role, **process_summary(s, window)}
    return long_lived, worker_summary(by_role.get(WORKERS, []))


# ---------------------------------------------------------------------------------------------- load

@dataclass
class Slot:
    """One always-busy job slot of a tenant: its current job id (None between jobs)."""

    tenant: str
    client: object
    job_id: str | None = None


class Load:
    """Keeps every slot's job in flight until `until` (time.time()), then lets the last ones finish."""

    def __init__(self, slots: list[Slot], recipe: str, options: dict[str, str]):
        self.slots, self.recipe, self.options = slots, recipe, options
        self.finished: list[dict] = []
        self.submit_errors: list[dict] = []
        self.submitted: dict[str, int] = {}
        self.last_submit = 0.0

    def _submit(self, slot: Slot) -> None:
        try:
            slot.job_id = slot.client.submit(recipe=self.recipe, options=self.options).id
            self.submitted[slot.tenant] = self.submitted.get(slot.tenant, 0) + 1
            self.last_submit = time.time()
        except Exception as e:  # noqa: BLE001 - a refused submission is a finding, not a crash of the soak
            self.submit_errors.append({"tenant": slot.tenant, "error": f"{type(e).__name__}: {e}"[:500]})
            slot.job_id = None

    def _record(self, slot: Slot, job) -> None:
        self.finished.append({"id": job.id, "tenant": slot.tenant, "state": job.state,
                              "error": job.error_message, "reason": job.error_reason, "attempts": job.attempts,
                              "queue_wait_s": (job.started_at or job.finished_at or 0) - job.created_at,
                              "run_s": (job.finished_at or 0) - (job.started_at or job.finished_at or 0)})
        slot.job_id = None

    def step(self, submitting: bool) -> None:
        """One pass over the slots: record each ended job, and (while submitting) give idle slots a new one."""
        for slot in self.slots:
            if slot.job_id is not None:
                job = slot.client.get(slot.job_id)
                if job.state in TERMINAL:
                    self._record(slot, job)
            if slot.job_id is None and submitting:
                self._submit(slot)

    def run(self, until: float, drain_s: float, poll_s: float = 1.0) -> list[str]:
        """Submit until `until`, then wait up to drain_s seconds for the jobs in flight; the ids left over."""
        while time.time() < until:
            self.step(submitting=True)
            time.sleep(poll_s)
        deadline = time.time() + drain_s
        while any(s.job_id for s in self.slots) and time.time() < deadline:
            self.step(submitting=False)
            time.sleep(poll_s)
        return [s.job_id for s in self.slots if s.job_id]


def jobs_report(load: Load, unfinished: list[str], load_minutes: float) -> dict:
    """Jobs submitted / succeeded / failed per tenant, failures with their messages, throughput (succeeded
    jobs per minute of the load window) and medians (s) of queue wait and run time."""
    ok = [j for j in load.finished if j["state"] == "succeeded"]
    bad = [j for j in load.finished if j["state"] != "succeeded"]
    tenants = sorted({s.tenant for s in load.slots})
    per_tenant = {t: {"submitted": load.submitted.get(t, 0), "succeeded": sum(j["tenant"] == t for j in ok),
                      "failed": sum(j["tenant"] == t for j in bad)} for t in tenants}
    med = (lambda xs: round(statistics.median(xs), 2) if xs else None)
    return {"submitted": sum(load.submitted.values()), "succeeded": len(ok), "failed": len(bad),
            "unfinished": unfinished, "submit_errors": load.submit_errors,
            "failures": [{k: j[k] for k in ("id", "tenant", "state", "error", "reason")} for j in bad],
            "per_tenant": per_tenant, "throughput_jobs_per_min": round(len(ok) / load_minutes, 2),
            "queue_wait_median_s": med([j["queue_wait_s"] for j in ok]),
            "run_time_median_s": med([j["run_s"] for j in ok]),
            "resumed_jobs": sum(j["attempts"] > 1 for j in load.finished)}


# ---------------------------------------------------------------------------------------------- orphans

def orphans(sampler: Sampler, state_dir: Path) -> list[dict]:
    """Processes left after `cluster down`: any PID ever seen still alive with the same create time, and any
    process whose cmdline names the state folder or one of the cluster's Ray sessions."""
    found = {}
    for (pid, created), s in sampler.seen.items():
        try:
            if psutil.Process(pid).create_time() == created:
                found[pid] = {"pid": pid, "role": s.role, "cmdline": s.cmdline, "why": "seen during the soak"}
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    needles = [str(state_dir), *sorted(sampler.sessions)]
    ours = {os.getpid(), *(p.pid for p in psutil.Process().parents())}   # the soak and what started it
    for p in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(p.info["cmdline"] or [])
        if p.info["pid"] not in ours | set(found) and any(n in line for n in needles):
            found[p.info["pid"]] = {"pid": p.info["pid"], "role": "?", "cmdline": line[:300],
                                    "why": "cmdline names the state folder or the Ray session"}
    return list(found.values())


def wait_for_orphans(sampler: Sampler, state_dir: Path, wait_s: float) -> list[dict]:
    """orphans(), polled until none is left or wait_s seconds pass."""
    deadline = time.time() + wait_s
    left = orphans(sampler, state_dir)
    while left and time.time() < deadline:
        time.sleep(1)
        left = orphans(sampler, state_dir)
    return left


# ---------------------------------------------------------------------------------------------- cluster

def write_inputs(state_dir: Path, tenants: int) -> tuple[Path, Path, dict[str, str]]:
    """(tokens file, guidance config, {tenant: token}) in state_dir: N tenants, analytic guidance only."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tokens = {f"tenant-{i}": secrets.token_hex(16) for i in range(tenants)}
    tokens_file = state_dir / "soak_tokens.yaml"
    tokens_file.write_text(yaml.safe_dump({"tokens": {tok: t for t, tok in tokens.items()}}))
    os.chmod(tokens_file, 0o600)
    config = state_dir / "soak_guidance.yaml"
    config.write_text(yaml.safe_dump({"backbones": [{"name": "analytic", "backend": "analytic", "default": True}],
                                      "batching": {"max_queue_delay_ms": 0}}))
    return tokens_file, config, tokens


def limits_for(a) -> dict:
    """The jobs limits that let all a.jobs jobs run at once: subject CPUs (the local Ray has
    max(cpu_count, 4) CPUs), running and active jobs per tenant."""
    ray_cpus = max(os.cpu_count() or 1, 4)
    per_tenant = math.ceil(a.jobs / a.tenants)
    return {"subject_cpus": a.subject_cpus or min(1.0, ray_cpus / a.jobs),
            "max_running_per_tenant": a.max_running_per_tenant or per_tenant,
            "max_active_jobs": a.max_active_jobs or per_tenant}


def headforge(*args: str, timeout_s: float = 360) -> subprocess.CompletedProcess:
    """tests.helpers.headforge (a subprocess, as a user runs it: the detached supervisor is then not this
    process's child), raising RuntimeError with its output when it fails."""
    from tests.helpers import headforge as run

    r = run(*args, timeout=timeout_s)
    if r.returncode != 0:
        raise RuntimeError(f"headforge {' '.join(args)} exited {r.returncode}:\n{r.stdout}{r.stderr}")
    return r


def start_cluster(state_dir: Path, a) -> tuple[dict, dict[str, str], dict, list[str]]:
    """(cluster.json's state, {tenant: token}, the jobs limits used, the `cluster up` argv) of a cluster
    started in state_dir with `headforge cluster up`."""
    from services.common.process import free_port

    tokens_file, config, tokens = write_inputs(state_dir, a.tenants)
    limits = limits_for(a)
    argv = ["cluster", "up", "--dir", str(state_dir), "--jobs-port", str(free_port()), "--tokens-file",
            str(tokens_file), "--guidance-config", str(config), "--subject-cpus", str(limits["subject_cpus"]),
            "--max-running-per-tenant", str(limits["max_running_per_tenant"]),
            "--max-active-jobs", str(limits["max_active_jobs"])]
    headforge(*argv)
    return json.loads((state_dir / "cluster.json").read_text()), tokens, limits, argv


def make_slots(address: str, tokens: dict[str, str], jobs: int) -> list[Slot]:
    """jobs slots over the tenants (slot i: tenant i mod len(tokens)), one client per tenant."""
    from orchestrator.jobs.client import GrpcJobsClient

    clients = {t: GrpcJobsClient(address, token=tok, timeout_s=60) for t, tok in tokens.items()}
    for c in clients.values():
        c.wait_ready(timeout_s=120)
    names = sorted(clients)
    return [Slot(names[i % len(names)], clients[names[i % len(names)]]) for i in range(jobs)]


# ---------------------------------------------------------------------------------------------- report

def criteria_results(report: dict) -> dict:
    """Each criterion's outcome (True = passed)."""
    j = report["jobs"]
    return {"no_failed_jobs": j["failed"] == 0 and not j["unfinished"] and not j["submit_errors"],
            "no_orphans": not report["orphans"],
            "memory_flat": all(p["flat"] is not False for p in report["long_lived"].values())}


def print_table(report: dict) -> None:
    """A short human table of the report on stdout."""
    j, w = report["jobs"], report["workers"]
    print(f"soak: {report['minutes']} min, {report['params']['jobs']} jobs in flight over "
          f"{report['params']['tenants']} tenants; warm-up {report['warmup_s']:.0f} s")
    print(f"jobs: submitted {j['submitted']}, succeeded {j['succeeded']}, failed {j['failed']}, unfinished "
          f"{len(j['unfinished'])}, refused {len(j['submit_errors'])}; {j['throughput_jobs_per_min']} jobs/min; "
          f"median queue wait {j['queue_wait_median_s']} s, run {j['run_time_median_s']} s")
    print(f"{'process':<28}{'pid':>8}{'first MB':>10}{'last MB':>10}{'max MB':>10}{'MB/min':>9}{'growth':>8}"
          f"{'threads':>9}{'fds':>6}")
    for label, p in report["long_lived"].items():
        slope = "-" if p["slope_mb_per_min"] is None else f"{p['slope_mb_per_min']:.2f}"
        growth = "-" if p["growth_fraction"] is None else f"{100 * p['growth_fraction']:.1f}%"
        print(f"{label[:27]:<28}{p['pid']:>8}{p['first_mb']:>10}{p['last_mb']:>10}{p['max_mb']:>10}{slope:>9}"
              f"{growth:>8}{p['threads_first_last_max'][1]:>9}{p['fds_first_last_max'][1]:>6}")
    print(f"ray workers: {w['count']}, peak {w['peak_mb']} MB, median peak {w['median_peak_mb']} MB")
    print(f"orphans after cluster down: {len(report['orphans'])}; criteria: {report['criteria']['results']}")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m tests.soak.run", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="out/soak.json")
    p.add_argument("--minutes", type=float, default=10.0, help="load window (min)")
    p.add_argument("--jobs", type=int, default=16, help="jobs kept in flight")
    p.add_argument("--tenants", type=int, default=4)
    p.add_argument("--recipe", default="analytic_prior")
    p.add_argument("--option", action="append", default=None, help="K=V recipe option (repeatable; default "
                   "stages.optimise.iterations=40)")
    p.add_argument("--sample-every", type=float, default=5.0, help="RSS sampling period (s)")
    p.add_argument("--subject-cpus", type=float, default=None, help="default: the local Ray's CPUs / jobs, <= 1")
    p.add_argument("--max-running-per-tenant", type=int, default=None, help="default: ceil(jobs / tenants)")
    p.add_argument("--max-active-jobs", type=int, default=None, help="default: ceil(jobs / tenants)")
    p.add_argument("--drain-s", type=float, default=180.0, help="wait for the last jobs at most this long (s)")
    p.add_argument("--state-dir", default=None, help="the cluster's state folder, kept afterwards (default: a "
                   "temporary one, removed)")
    p.add_argument("--orphan-wait-s", type=float, default=30.0, help="after cluster down, wait at most (s)")
    return p.parse_args(argv)


def machine() -> dict:
    vm = psutil.virtual_memory()
    return {"cpu_count": os.cpu_count(), "ram_gb": round(vm.total / (1 << 30), 1), "python": sys.version.split()[0],
            "platform": platform.platform()}


def soak(a, state_dir: Path) -> dict:
    """Start the cluster in state_dir, load it, sample it, stop it; the report (without criteria)."""
    options = dict(kv.split("=", 1) for kv in (a.option or ["stages.optimise.iterations=40"]))
    start = time.time()
    state, tokens, limits, up_argv = start_cluster(state_dir, a)
    up_s = time.time() - start
    sampler = Sampler(state["pid"], a.sample_every, t0=time.time()).start()
    t0 = sampler.t0
    warmup_s = min(0.2 * a.minutes * 60, 60.0)
    try:
        load = Load(make_slots(state["jobs"], tokens, a.jobs), a.recipe, options)
        unfinished = load.run(until=t0 + a.minutes * 60, drain_s=a.drain_s)
    finally:
        sampler.stop()
        down_start = time.time()
        headforge("cluster", "down", "--dir", str(state_dir))
        down_s = time.time() - down_start
    left = wait_for_orphans(sampler, state_dir, a.orphan_wait_s)
    window = (warmup_s, max(load.last_submit - t0, warmup_s))
    long_lived, workers = memory_report(sampler, window)
    return {"params": {**vars(a), "options": options, **limits}, "cluster_up": "headforge " + " ".join(up_argv),
            "cluster_up_s": round(up_s, 1),
            "cluster_down_s": round(down_s, 1),
            "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
            "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "minutes": a.minutes,
            "warmup_s": warmup_s, "slope_window_s": [round(x, 1) for x in window],
            "warmup_rule": f"min(20% of the load window, 60 s) = {'60 s' if warmup_s >= 60 else '20%'}; the slope "
                           "uses the samples after it and before the last submission",
            "samples": len(sampler.sample_times), "jobs": jobs_report(load, unfinished, a.minutes),
            "long_lived": long_lived, "workers": workers, "ray_sessions": sorted(sampler.sessions),
            "pids_seen": [{"pid": s.pid, "role": s.role, "create_time": s.create_time, "samples": len(s.samples)}
                          for s in sampler.seen.values()], "orphans": left}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    a = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="headforge-soak-") as tmp:
        state_dir = Path(a.state_dir).resolve() if a.state_dir else Path(tmp) / "cluster"
        report = {"command": " ".join([sys.executable, "-m", "tests.soak.run", *argv]), "machine": machine(),
                  **soak(a, state_dir), "state_dir": str(state_dir)}
    report["criteria"] = {"rules": {"jobs": "no failed or unfinished job, no refused submission",
                                    "orphans": "no process of the cluster alive after cluster down",
                                    "memory": f"every long-lived process: post-warm-up slope <= {SLOPE_MB_PER_MIN} "
                                              f"MB/min or fitted growth <= {GROWTH_FRACTION:.0%} of its RSS"},
                          "results": criteria_results(report)}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print_table(report)
    return 0 if all(report["criteria"]["results"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
