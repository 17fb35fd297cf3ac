"""`headforge serve NAME`: one service process. Each service brings its own flags (its cli module's
add_serve_arguments) on top of the common server flags, so `serve face --help` lists only face's."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from orchestrator.cli.args import amounts
from services.common.errors import HeadForgeError, InvalidArgument
from services.common.images import DEFAULT_MAX_IMAGE_PIXELS

# name -> the module with add_serve_arguments(parser) and serve(args, ServerConfig) -> exit code
SERVICE_CLIS = {"face": "services.face.cli", "render": "services.render.cli", "guidance": "services.guidance.cli",
                "inversion": "services.inversion.cli"}


def add_parsers(sub) -> None:
    """`serve face|render|guidance|inversion|jobs`, on the top-level subparsers `sub`."""
    from services.common.server import add_server_arguments

    serve = sub.add_parser("serve", help="run a service process").add_subparsers(dest="service", required=True)
    for name, module in SERVICE_CLIS.items():
        p = serve.add_parser(name, help=f"the {name} service")
        add_server_arguments(p)
        importlib.import_module(module).add_serve_arguments(p)
        p.set_defaults(func=cmd_serve)
    p = serve.add_parser("jobs", help="the jobs service (queue, store, artifacts; runs jobs on Ray)")
    # every open WatchProgress stream holds a handler thread
    add_server_arguments(p, default_max_workers=64)
    _add_jobs_arguments(p)
    p.set_defaults(func=cmd_serve)


def cmd_serve(args) -> int:
    """Run the service; a refusal before it serves (a flag that does not apply, a bad config, an unusable
    --device, a busy port) is one error line and exit code 2, like a usage error."""
    from services.common import logs
    from services.common.server import server_config

    logs.configure(args.service, args.log_level)
    try:
        if args.service == "jobs":
            _reject_inapplicable_jobs_flags(args)
            return _serve_jobs(args, server_config(args))
        return importlib.import_module(SERVICE_CLIS[args.service]).serve(args, server_config(args))
    except HeadForgeError as e:
        print(f"headforge serve {args.service}: error ({e.code.name}): {e.message}", file=sys.stderr)
        return 2


# flags of `serve jobs` that only its Ray runtime reads (meaningless with --runtime none)
RUNTIME_FLAGS = ("face", "render", "guidance", "inversion", "guidance_config", "inversion_models_dir",
                 "service_token_file", "ray_address", "ray_resource", "subject_cpus", "subject_gpus",
                 "subject_resource", "max_running_per_tenant")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _reject_inapplicable_jobs_flags(args) -> None:
    """InvalidArgument naming a `serve jobs` flag given where it has no effect."""
    given = [d for d in RUNTIME_FLAGS if getattr(args, d) != args.runtime_defaults[d]]
    if args.runtime == "none" and given:
        also = f" (as do {', '.join(map(_flag, given[1:]))})" if len(given) > 1 else ""
        raise InvalidArgument(_flag(given[0]), f"configures the Ray runtime{also}, and --runtime none runs no jobs "
                              "in this process")
    for config_flag, service in (("guidance_config", "guidance"), ("inversion_models_dir", "inversion")):
        if getattr(args, config_flag) and getattr(args, service) != "inprocess":
            raise InvalidArgument(_flag(config_flag), f"configures in-process {service} only; the {service} "
                                  f"service at {getattr(args, service)} has its own models (drop one of the two)")
    if args.ray_address and args.ray_resource:
        raise InvalidArgument("--ray-resource", "declares resources on a Ray this process starts; with "
                              "--ray-address the existing cluster's nodes declare their own")


def _add_jobs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", default=None, help="SQLite job store file (default: jobs.db in the per-user state "
                   "folder, $HEADFORGE_HOME/jobs or ~/.headforge/jobs)")
    p.add_argument("--artifacts", default=None, help="artifact root: a path or fsspec URL, e.g. s3://BUCKET/PREFIX "
                   "(needs the s3 extra; default: artifacts/ beside the default store)")
    p.add_argument("--model-root", action="append", help="allowed parent of models_dir (repeatable)")
    p.add_argument("--default-models-dir", default="", help="models_dir of jobs that give none")
    p.add_argument("--max-active-jobs", type=int, default=4, help="queued + running jobs per tenant")
    p.add_argument("--max-storage-bytes", type=int, default=20 << 30, help="artifact bytes per tenant")
    p.add_argument("--max-watch-streams", type=int, default=16, help="open WatchProgress streams per tenant")
    p.add_argument("--max-image-bytes", type=int, default=20 << 20, help="per input photo")
    p.add_argument("--retention-days", type=int, default=0, help="artifact retention; 0 = forever")
    p.add_argument("--runtime", choices=["ray", "none"], default="ray",
                      help="none: accept and store jobs without running them (another process runs them)")
    p.add_argument("--face", default="inprocess", help="face service HOST:PORT, or inprocess (in each worker)")
    p.add_argument("--render", default="inprocess", help="render service HOST:PORT, or inprocess")
    p.add_argument("--guidance", default="inprocess", help="guidance service HOST:PORT, or inprocess")
    p.add_argument("--inversion", default="inprocess", help="inversion service HOST:PORT, or inprocess")
    p.add_argument("--guidance-config", default=None, help="model repository of in-process guidance")
    p.add_argument("--inversion-models-dir", default=None,
                   help="generators of in-process inversion (DIR/inversion/<name>)")
    p.add_argument("--service-token-file", default=None,
                   help="file holding the service token the Ray workers present to the services, acting for "
                        "each job's tenant (or the HEADFORGE_SERVICE_TOKEN environment variable; never on a "
                        "command line)")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster; default: start Ray locally")
    p.add_argument("--ray-resource", action="append", help="NAME=AMOUNT declared on a local Ray "
                      "(e.g. fake_gpu=1 on a CPU machine)")
    p.add_argument("--subject-cpus", type=float, default=1.0, help="CPUs held by each running subject")
    p.add_argument("--subject-gpus", type=float, default=0.0, help="GPU share of each subject (0.25 = 4 per GPU)")
    p.add_argument("--subject-resource", action="append", help="NAME=AMOUNT each subject holds "
                      "(e.g. fake_gpu=0.25)")
    p.add_argument("--max-running-per-tenant", type=int, default=2, help="subjects running at once per tenant")
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS, help="larger input photos are refused")
    p.set_defaults(runtime_defaults={d: p.get_default(d) for d in RUNTIME_FLAGS})


def _jobs_config(args):
    from orchestrator.jobs.service import JobsConfig

    from orchestrator.state_dir import jobs_dir

    return JobsConfig(store_path=args.store or str(jobs_dir() / "jobs.db"),
                      artifacts_url=args.artifacts or str(jobs_dir() / "artifacts"), model_roots=args.model_root or [],
                      default_models_dir=args.default_models_dir, max_active_jobs=args.max_active_jobs,
                      max_storage_bytes=args.max_storage_bytes, max_watch_streams=args.max_watch_streams,
                      max_image_bytes=args.max_image_bytes, max_image_pixels=args.max_image_pixels,
                      retention_days=args.retention_days)

def make_runtime(service, args):
    """The Ray runtime executing this JobsService's jobs: one actor per running subject with the declared
    share, services at the given endpoints (in-process in each actor, or gRPC addresses)."""
    from orchestrator.runtime.endpoints import Endpoints
    from orchestrator.runtime.ray_runtime import ActorShare, RayRuntime

    url = service.artifacts.root_url
    if "://" not in url:   # Ray workers do not share this process's working directory
        url = Path(url).resolve().as_uri()
    endpoints = Endpoints(face=args.face, render=args.render, guidance=args.guidance, inversion=args.inversion,
                          guidance_config=args.guidance_config, inversion_models_dir=args.inversion_models_dir,
                          token=_service_token(args))
    share = ActorShare(num_cpus=args.subject_cpus, num_gpus=args.subject_gpus,
                       resources=amounts(args.subject_resource, "--subject-resource"))
    return RayRuntime(service.store, url, endpoints, share=share, max_active_per_tenant=args.max_running_per_tenant,
                      ray_address=args.ray_address, ray_resources=amounts(args.ray_resource, "--ray-resource"))

def _service_token(args) -> str | None:
    """The service token of --service-token-file, else $HEADFORGE_SERVICE_TOKEN, else None (local mode)."""
    if args.service_token_file:
        token = Path(args.service_token_file).read_text().strip()
        if not token:
            raise InvalidArgument("--service-token-file", f"{args.service_token_file} is empty")
        return token
    return os.environ.get("HEADFORGE_SERVICE_TOKEN", "").strip() or None


def _serve_jobs(args, config) -> int:
    from orchestrator.jobs.service import JobsService
    from orchestrator.jobs.servicer import register as register_jobs
    from services.common.server import serve_forever

    service = JobsService(_jobs_config(args))
    service.runtime = make_runtime(service, args) if args.runtime == "ray" else None
    service.start()
    return serve_forever("jobs", config, register_jobs(service), on_drain=service.drain, on_stop=service.stop)
