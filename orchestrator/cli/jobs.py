"""`headforge submit | status | watch | fetch | cancel | recipes`: a jobs service's client commands."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from orchestrator.cli.args import pairs
from orchestrator.cli.honesty import print_report_warnings

DEFAULT_JOBS_TARGET = "127.0.0.1:50051"
# orchestrator/recipes/builtin, listed without importing the recipe schema (the CLI starts fast)
BUILTIN_RECIPES = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "recipes" / "builtin").glob("*.yaml"))
REPORT = "report.json"   # the artifact runtime/report.py writes


def add_parsers(sub) -> None:
    """The job commands, on the top-level subparsers `sub`."""
    p = sub.add_parser("submit", help="queue a job on a jobs service; prints its id")
    p.add_argument("images", nargs="*", help="input photos")
    # no default: a default recipe would run on whatever backbone the service has, the analytic test prior included
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--recipe", default=None, metavar="NAME",
                       help=f"a built-in recipe: {', '.join(BUILTIN_RECIPES)} (see `headforge recipes`); "
                            "this or --recipe-file is required")
    which.add_argument("--recipe-file", default=None, help="a recipe YAML file")
    p.add_argument("--option", action="append", metavar="K=V", help="recipe override by dotted path, YAML value")
    p.add_argument("--prompt", default="")
    p.add_argument("--label", action="append", metavar="K=V")
    p.add_argument("--priority", type=int, default=0, help="-10..10, higher first")
    p.add_argument("--name", default="", help="display name")
    p.add_argument("--models-dir", default="")
    p.add_argument("--idempotency-key", default="")
    _client_flags(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="one job, or the list of your jobs")
    p.add_argument("job_id", nargs="?")
    p.add_argument("--state", action="append", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--recipe", default="")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    _client_flags(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("watch", help="follow a job's progress until it ends (exit 0 = succeeded)")
    p.add_argument("job_id")
    _client_flags(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("fetch", help="download a job's artifacts")
    p.add_argument("job_id")
    p.add_argument("--out", default=".", help="destination folder")
    p.add_argument("--name", action="append", help="only this artifact (repeatable)")
    _client_flags(p)
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("cancel", help="cancel a job")
    p.add_argument("job_id")
    _client_flags(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("recipes", help="list the built-in recipes")
    p.add_argument("--yaml", action="store_true", help="print each recipe's resolved YAML")
    p.set_defaults(func=cmd_recipes)


def _client_flags(p) -> None:
    p.add_argument("--target", default=os.environ.get("HEADFORGE_JOBS", DEFAULT_JOBS_TARGET),
                   help="HOST:PORT of the jobs service (env HEADFORGE_JOBS)")
    p.add_argument("--token", default=os.environ.get("HEADFORGE_TOKEN"), help="bearer token (env HEADFORGE_TOKEN)")
    p.add_argument("--timeout-s", type=float, default=60.0)


def _jobs_client(args):
    from orchestrator.jobs.client import GrpcJobsClient

    return GrpcJobsClient(args.target, token=args.token, timeout_s=args.timeout_s)

def _when(seconds) -> str:
    import datetime as dt

    if not seconds:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")

def _job_dict(job) -> dict:
    from dataclasses import asdict

    return asdict(job)

def _stage_summary(stage) -> str:
    text = f"{stage.name}={stage.state}"
    if stage.progress is not None and stage.progress.total:
        text += f"({stage.progress.step}/{stage.progress.total})"
    return text

def cmd_submit(args) -> int:
    recipe_yaml = Path(args.recipe_file).read_text() if args.recipe_file else ""
    recipe = "" if recipe_yaml else args.recipe
    client = _jobs_client(args)
    try:
        job = client.submit([Path(p) for p in args.images], recipe=recipe, recipe_yaml=recipe_yaml,
                            prompt=args.prompt, options=pairs(args.option, "--option"),
                            labels=pairs(args.label, "--label"), priority=args.priority,
                            display_name=args.name, models_dir=args.models_dir,
                            idempotency_key=args.idempotency_key)
    finally:
        client.close()
    print(job.id)
    return 0

def cmd_status(args) -> int:
    client = _jobs_client(args)
    try:
        if args.job_id:
            jobs = [client.get(args.job_id)]
        else:
            jobs, _ = client.list(states=args.state or (), recipe=args.recipe or "", page_size=args.limit)
    finally:
        client.close()
    if args.json:
        data = [_job_dict(j) for j in jobs]
        print(json.dumps(data[0] if args.job_id else data, indent=1))
        return 0
    if args.job_id:
        j = jobs[0]
        print(f"{j.id}  {j.state.upper()}{' (cancel requested)' if j.cancel_requested else ''}  {j.display_name}  "
              f"recipe={j.recipe}  priority={j.priority}")
        print(f"  created {_when(j.created_at)}  started {_when(j.started_at)}  finished {_when(j.finished_at)}"
              + (f"  queue position {j.queue_position}" if j.state == "queued" else ""))
        if j.error_message:
            print(f"  error: {j.error_message} ({j.error_reason})")
        print("  stages: " + ", ".join(_stage_summary(s) for s in j.stages))
        for a in j.artifacts:
            print(f"  artifact {a.name}  {a.size_bytes} bytes  {a.mime_type}")
        return 0
    if not jobs:
        print("no jobs")
    for j in jobs:
        running = next((s for s in j.stages if s.state == "running"), None)
        print(f"{j.id}  {j.state.upper():9s}  {_when(j.created_at)}  {j.display_name}"
              + (f"  [{_stage_summary(running)}]" if running else ""))
    return 0

def cmd_watch(args) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    client = _jobs_client(args)
    console = Console()
    state = "queued"
    error = ""
    tasks: dict[str, int] = {}
    artifacts: set[str] = set()
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[info]}"), console=console, transient=False) as bars:
            def bar(stage: str, total: int | None = None) -> int:
                if stage not in tasks:
                    tasks[stage] = bars.add_task(stage, total=total or None, info="")
                return tasks[stage]

            for ev in client.watch(args.job_id):
                if ev.kind == "snapshot":
                    job = ev.payload
                    state, error = job.state, job.error_message
                    artifacts.update(a.name for a in job.artifacts)
                    console.print(f"job {job.id} ({job.display_name}): {job.state.upper()}")
                    for s in job.stages:
                        p = s.progress
                        t = bar(s.name, p.total if p else None)
                        if p is not None:
                            bars.update(t, completed=p.step)
                        if s.state == "succeeded":
                            bars.update(t, completed=bars.tasks[t].total or 1, total=bars.tasks[t].total or 1)
                elif ev.kind == "state":
                    state, error = ev.payload["current"], ev.payload.get("error_message", "")
                    console.print(f"job: {state.upper()}" + (f" ({error})" if error else ""))
                elif ev.kind == "stage":
                    t = bar(ev.payload["stage"])
                    bars.update(t, info=ev.payload["current"])
                    if ev.payload["current"] == "succeeded":
                        total = bars.tasks[t].total or 1
                        bars.update(t, completed=total, total=total)
                elif ev.kind == "progress":
                    p = ev.payload
                    t = bar(p.stage, p.total)
                    info = " ".join(f"{k}={v:.4g}" for k, v in list(p.metrics.items())[:3])
                    bars.update(t, completed=p.step, total=p.total or None, info=info)
                elif ev.kind == "artifact":
                    artifacts.add(ev.payload.name)
                    console.print(f"artifact {ev.payload.name} ({ev.payload.size_bytes} bytes)")
        report = _fetch_report(client, args.job_id) if REPORT in artifacts else {}
    finally:
        client.close()
    console.print(f"finished: {state.upper()}" + (f": {error}" if error and state != "succeeded" else ""))
    print_report_warnings(report, lambda line: console.print(
        line, markup=False, highlight=False, soft_wrap=True,
        style="bold red" if line.startswith("NOT A RESULT") else "yellow"))
    return 0 if state == "succeeded" else 1


def _fetch_report(client, job_id: str) -> dict:
    """The job's report.json artifact, parsed (downloaded to a temporary folder); when it cannot be read, a
    report whose one warning says so (the job's outcome stands, but nothing vouches for its models)."""
    from services.common.errors import HeadForgeError

    try:
        with tempfile.TemporaryDirectory(prefix="headforge-watch-") as tmp:
            (path,) = client.fetch(job_id, [REPORT], tmp)
            return json.loads(path.read_text())
    except (HeadForgeError, OSError, ValueError) as e:
        return {"warnings": [f"{REPORT} could not be read ({e}): which models served the job is not known"]}

def cmd_fetch(args) -> int:
    client = _jobs_client(args)
    try:
        paths = client.fetch(args.job_id, args.name or (), Path(args.out))
    finally:
        client.close()
    for p in paths:
        print(p)
    return 0

def cmd_cancel(args) -> int:
    client = _jobs_client(args)
    try:
        job = client.cancel(args.job_id)
    finally:
        client.close()
    print(f"{job.id}: {job.state.upper()}" + (" (cancel requested)" if job.cancel_requested else ""))
    return 0

def cmd_recipes(args) -> int:
    from orchestrator.jobs.service import recipe_infos

    for r in recipe_infos():
        if args.yaml:
            print(f"# {r.name}\n{r.yaml}")
            continue
        images = str(r.min_images) if r.min_images == r.max_images else f"{r.min_images}-{r.max_images}"
        print(f"{r.name}: {r.description}")
        print(f"  images: {images}  prompt: {'required' if r.prompt_required else 'optional'}  output: {r.output}")
    return 0
