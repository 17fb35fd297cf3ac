"""`headforge cluster up | down | status`: every service and the jobs service on this machine."""

from __future__ import annotations

import shlex
from pathlib import Path


def add_parsers(sub) -> None:
    """`cluster`, on the top-level subparsers `sub`."""
    cl = sub.add_parser("cluster", help="run all services + jobs on this machine in the background")
    cl.add_argument("cluster_command", choices=["up", "down", "status"])
    cl.add_argument("--dir", default=None, help="state, store, artifacts and logs (default: $HEADFORGE_HOME/cluster, "
                    "else $XDG_STATE_HOME/headforge/cluster, else ~/.headforge/cluster; never the checkout)")
    cl.add_argument("--guidance-config", default=None, help="guidance model repository (default: analytic prior)")
    cl.add_argument("--inversion-models-dir", default=None,
                    help="the models folder: the inversion service's generators (DIR/inversion/<name>) and "
                    "LPIPS files (DIR/lpips), and the jobs' default models_dir (default: none)")
    cl.add_argument("--jobs-port", type=int, default=50050)
    cl.add_argument("--subject-cpus", type=float, default=None,
                    help="CPUs each running subject's Ray actor holds (serve jobs --subject-cpus; default 1)")
    cl.add_argument("--max-running-per-tenant", type=int, default=None,
                    help="subjects running at once per tenant (serve jobs --max-running-per-tenant; default 2)")
    cl.add_argument("--max-active-jobs", type=int, default=None,
                    help="queued + running jobs per tenant (serve jobs --max-active-jobs; default 4)")
    cl.add_argument("--tokens-file", default=None)
    cl.add_argument("--face-args", default="", help="extra `headforge serve face` flags as one string, e.g. "
                    "\"--recognizer insightface --insightface-dir /models/buffalo_l\" (relative paths: from here)")
    cl.add_argument("--jobs-address", action="store_true", help="status: print only the jobs address")
    cl.set_defaults(func=cmd_cluster)


def _absolute_paths(flags: list[str]) -> list[str]:
    """flags with each value that names an existing file or folder made absolute (the supervisor runs elsewhere)."""
    return [str(Path(f).resolve()) if not f.startswith("-") and Path(f).exists() else f for f in flags]


def cmd_cluster(args) -> int:
    from orchestrator import cluster
    from orchestrator.state_dir import cluster_dir

    directory = Path(args.dir).expanduser().resolve() if args.dir else cluster_dir()
    if args.cluster_command == "up":
        limits = cluster.JobsLimits(args.subject_cpus, args.max_running_per_tenant, args.max_active_jobs)
        state = cluster.up(directory, args.guidance_config, args.jobs_port, args.tokens_file,
                           inversion_models_dir=args.inversion_models_dir, jobs_limits=limits,
                           face_args=_absolute_paths(shlex.split(args.face_args)))
        print(f"HeadForge is up (supervisor pid {state['pid']}); jobs service at {state['jobs']}")
        for name, address in state["services"].items():
            print(f"  {name:<9} {address}")
        print(f"state in {directory}; submit with: headforge submit PHOTO --recipe fast   "
              "(the jobs commands find this cluster; stop: headforge cluster down)")
        return 0
    if args.cluster_command == "down":
        print("stopped" if cluster.down(directory) else f"no cluster running (state folder {directory})")
        return 0
    state = cluster.status(directory)
    if args.jobs_address:
        if not state["running"]:
            return 1
        print(state["jobs"])
        return 0
    if not state["running"]:
        print(f"no cluster running (state folder {state['dir']})")
        return 1
    for name, address in state["services"].items():
        print(f"{name:<9} {address:<22} {state['health'][name]}")
    return 0 if all(h == "SERVING" for h in state["health"].values()) else 1
