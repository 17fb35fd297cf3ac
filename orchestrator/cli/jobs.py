"""`headforge submit | status | watch | fetch | cancel | recipes`: a jobs service's client commands.

The jobs service they talk to: --target, else $HEADFORGE_JOBS, else the local cluster that `headforge
cluster up` started (its state in orchestrator.state_dir.cluster_dir()), else 127.0.0.1:50051.
Each takes --json: one JSON document on stdout (watch: one JSON object per event line), for scripts."""

from __future__ import annotations

import contextlib
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
    _json_flag(p, "the job as JSON")
    _client_flags(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="one job, or the list of your jobs")
    p.add_argument("job_id", nargs="?")
    p.add_argument("--state", action="append", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--recipe", default="")
    p.add_argument("--limit", type=int, default=50)
    _json_flag(p, "the job (or the list) as JSON")
    _client_flags(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("watch", help="follow a job's progress until it ends (exit 0 = succeeded)")
    p.add_argument("job_id")
    _json_flag(p, "one JSON object per line: each event, then {\"event\": \"finished\", ...}")
    _client_flags(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("fetch", help="download a job's artifacts")
    p.add_argument("job_id")
    p.add_argument("--out", default=None, help="destination folder (default: ./JOB_ID/ in the current directory)")
    p.add_argument("--name", action="append", help="only this artifact (repeatable)")
    _json_flag(p, "the written files as JSON: [{name, path, size_bytes, sha256}]")
    _client_flags(p)
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("cancel", help="cancel a job")
    p.add_argument("job_id")
    _json_flag(p, "the job as JSON")
    _client_flags(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("recipes", help="list the built-in recipes")
    p.add_argument("--yaml", action="store_true", help="print each recipe's resolved YAML")
    _json_flag(p, "the recipes as JSON (with their resolved YAML)")
    p.set_defaults(func=cmd_recipes)


def _json_flag(p, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} (for scripts)")


def _client_flags(p) -> None:
    p.add_argument("--target", default=None,
                   help="HOST:PORT of the jobs service (default: $HEADFORGE_JOBS, else the local cluster of "
                        f"`headforge cluster up`, else {DEFAULT_JOBS_TARGET})")
    p.add_argument("--token", default=os.environ.get("HEADFORGE_TOKEN"), help="bearer token (env HEADFORGE_TOKEN)")
    p.add_argument("--timeout-s", type=float, default=60.0)


def jobs_target(explicit: str | None) -> tuple[str, str]:
    """(HOST:PORT, where it came from) of the jobs service: explicit (--target), else $HEADFORGE_JOBS, else
    the running local cluster's jobs address, else DEFAULT_JOBS_TARGET."""
    from orchestrator.cluster import running_jobs_address
    from orchestrator.state_dir import cluster_dir

    if explicit:
        return explicit, "--target"
    if os.environ.get("HEADFORGE_JOBS"):
        return os.environ["HEADFORGE_JOBS"], "$HEADFORGE_JOBS"
    local = running_jobs_address(cluster_dir())
    if local:
        return local, f"the local cluster ({cluster_dir()})"
    return DEFAULT_JOBS_TARGET, f"the default (no local cluster running in {cluster_dir()})"


@contextlib.contextmanager
def _jobs_client(args):
    """A GrpcJobsClient on jobs_target(args.target), closed on exit; an UNAVAILABLE error names the address
    tried and where it came from."""
    from orchestrator.jobs.client import GrpcJobsClient
    from services.common.errors import Unavailable

    target, source = jobs_target(args.target)
    client = GrpcJobsClient(target, token=args.token, timeout_s=args.timeout_s)
    try:
        yield client
    except Unavailable as e:
        e.message = f"{e.message} (jobs service {target}, from {source})"
        raise
    finally:
        client.close()


def _when(seconds) -> str:
    import datetime as dt

    if not seconds:
        return "-"
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _plain(value):
    """A JobRecord, JobEvent payload or any dataclass -> JSON-ready dicts and lists."""
    from dataclasses import asdict, is_dataclass

    return asdict(value) if is_dataclass(value) else value


def _print_json(value) -> None:
    print(json.dumps(_plain(value), indent=1))


def _stage_summary(stage) -> str:
    text = f"{stage.name}={stage.state}"
    if stage.progress is not None and stage.progress.total:
        text += f"({stage.progress.step}/{stage.progress.total})"
    return text


def _is_checkpoint(name: str) -> bool:
    return name.startswith("checkpoints/")


def cmd_submit(args) -> int:
    recipe_yaml = Path(args.recipe_file).read_text() if args.recipe_file else ""
    recipe = "" if recipe_yaml else args.recipe
    with _jobs_client(args) as client:
        job = client.submit([Path(p) for p in args.images], recipe=recipe, recipe_yaml=recipe_yaml,
                            prompt=args.prompt, options=pairs(args.option, "--option"),
                            labels=pairs(args.label, "--label"), priority=args.priority,
                            display_name=args.name, models_dir=args.models_dir,
                            idempotency_key=args.idempotency_key)
    if args.json:
        _print_json(job)
    else:
        print(job.id)
    return 0


def cmd_status(args) -> int:
    with _jobs_client(args) as client:
        if args.job_id:
            jobs = [client.get(args.job_id)]
        else:
            jobs, _ = client.list(states=args.state or (), recipe=args.recipe or "", page_size=args.limit)
    if args.json:
        _print_json(jobs[0] if args.job_id else [_plain(j) for j in jobs])
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
        checkpoints = [a for a in j.artifacts if _is_checkpoint(a.name)]
        for a in j.artifacts:
            if not _is_checkpoint(a.name):
                print(f"  artifact {a.name}  {a.size_bytes} bytes  {a.mime_type}")
        if checkpoints:
            print(f"  checkpoints: {len(checkpoints)} ({sum(a.size_bytes for a in checkpoints)} bytes)")
        return 0
    if not jobs:
        print("no jobs")
    for j in jobs:
        running = next((s for s in j.stages if s.state == "running"), None)
        print(f"{j.id}  {j.state.upper():9s}  {_when(j.created_at)}  {j.display_name}"
              + (f"  [{_stage_summary(running)}]" if running else ""))
    return 0


def _watch_json(args) -> int:
    """`watch --json`: each event as one JSON line ({sequence, time, kind, payload}), then
    {"event": "finished", "state", "error_message", "warnings"} (the report's warnings)."""
    state, error, artifacts = "queued", "", set()
    with _jobs_client(args) as client:
        for ev in client.watch(args.job_id):
            print(json.dumps({"sequence": ev.sequence, "time": ev.time, "kind": ev.kind,
                              "payload": _plain(ev.payload)}), flush=True)
            if ev.kind == "snapshot":
                state, error = ev.payload.state, ev.payload.error_message
                artifacts.update(a.name for a in ev.payload.artifacts)
            elif ev.kind == "state":
                state, error = ev.payload["current"], ev.payload.get("error_message", "")
            elif ev.kind == "artifact":
                artifacts.add(ev.payload.name)
        report = _fetch_report(client, args.job_id) if REPORT in artifacts else {}
    print(json.dumps({"event": "finished", "state": state, "error_message": error,
                      "warnings": report.get("warnings", [])}), flush=True)
    return 0 if state == "succeeded" else 1


def cmd_watch(args) -> int:
    if args.json:
        return _watch_json(args)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console()
    state = "queued"
    error = ""
    tasks: dict[str, int] = {}
    artifacts: set[str] = set()
    printed: set[str] = set()       # artifact lines shown (a replayed event does not repeat one)
    checkpoints: set[str] = set()   # shown as a count on one row, not a line each
    with _jobs_client(args) as client:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("{task.fields[info]}"), console=console, transient=False) as bars:
            def bar(stage: str, total: int | None = None) -> int:
                if stage not in tasks:
                    tasks[stage] = bars.add_task(stage, total=total or None, info="")
                return tasks[stage]

            def count_checkpoint(name: str) -> None:
                checkpoints.add(name)
                if "checkpoints" not in tasks:
                    tasks["checkpoints"] = bars.add_task("checkpoints", total=None, info="", visible=True)
                bars.update(tasks["checkpoints"], completed=len(checkpoints), info=f"latest {name}")

            for ev in client.watch(args.job_id):
                if ev.kind == "snapshot":
                    job = ev.payload
                    state, error = job.state, job.error_message
                    console.print(f"job {job.id} ({job.display_name}): {job.state.upper()}")
                    for a in job.artifacts:
                        if _is_checkpoint(a.name):
                            count_checkpoint(a.name)
                        elif a.name not in printed:
                            artifacts.add(a.name)
                            printed.add(a.name)
                            console.print(f"artifact {a.name} ({a.size_bytes} bytes)")
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
                    if _is_checkpoint(ev.payload.name):
                        count_checkpoint(ev.payload.name)
                    elif ev.payload.name not in printed:
                        artifacts.add(ev.payload.name)
                        printed.add(ev.payload.name)
                        console.print(f"artifact {ev.payload.name} ({ev.payload.size_bytes} bytes)")
        report = _fetch_report(client, args.job_id) if REPORT in artifacts else {}
    console.print(f"finished: {state.upper()}" + (f": {error}" if error and state != "succeeded" else "")
                  + (f"; {len(checkpoints)} checkpoint(s) written" if checkpoints else ""))
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
    """Artifacts into --out, by default ./JOB_ID/ (never loose in the current directory)."""
    out = Path(args.out) if args.out else Path.cwd() / args.job_id
    with _jobs_client(args) as client:
        paths = client.fetch(args.job_id, args.name or (), out)
        records = {a.name: a for a in client.get(args.job_id).artifacts} if args.json else {}
    if args.json:
        names = [p.relative_to(out).as_posix() for p in paths]
        _print_json([{"name": n, "path": str(p), "size_bytes": p.stat().st_size,
                      "sha256": records[n].sha256 if n in records else ""} for n, p in zip(names, paths)])
        return 0
    for p in paths:
        print(p)
    return 0


def cmd_cancel(args) -> int:
    with _jobs_client(args) as client:
        job = client.cancel(args.job_id)
    if args.json:
        _print_json(job)
        return 0
    print(f"{job.id}: {job.state.upper()}" + (" (cancel requested)" if job.cancel_requested else ""))
    return 0


def cmd_recipes(args) -> int:
    from orchestrator.jobs.service import recipe_infos

    infos = recipe_infos()
    if args.json:
        _print_json([_plain(r) for r in infos])
        return 0
    for r in infos:
        if args.yaml:
            print(f"# {r.name}\n{r.yaml}")
            continue
        images = str(r.min_images) if r.min_images == r.max_images else f"{r.min_images}-{r.max_images}"
        print(f"{r.name}: {r.description}")
        print(f"  images: {images}  prompt: {'required' if r.prompt_required else 'optional'}  output: {r.output}")
    return 0
