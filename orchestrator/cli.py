"""The `headforge` command.

    headforge serve face|render|guidance|jobs ... run a service process (gRPC, health, reflection, metrics)
    headforge submit IMAGE... [--recipe R]   queue a job on a jobs service (prints its id)
    headforge status [JOB_ID]                one job, or the list of your jobs
    headforge watch JOB_ID                   progress until the job ends (exit 0 = succeeded)
    headforge fetch JOB_ID [--out DIR]       download artifacts (sha256 checked)
    headforge cancel JOB_ID
    headforge recipes                        the built-in recipes (no server needed)
    headforge face analyze IMAGE [--json]    analyse faces in a photo (in-process, or --target HOST:PORT)
    headforge face compare A B               same person?
    headforge serve inversion --models-dir DIR   3D-GAN inversion (generators under DIR/inversion/<name>)
    headforge models make-tiny DIR           write tiny random models in the real on-disk formats (tests)
    headforge models convert-gan PKL OUT --trust-pickle   official EG3D/PanoHead pickle -> safetensors
    headforge generate IMAGE [--recipe R]    portrait -> 3D head in this process (default recipe: fast)
    headforge eval OUT_DIR --reference IMAGE the papers' evaluation protocol on a generated head
    headforge demo [--out DIR]               `generate` on a bundled portrait (scikit-image's astronaut)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from services.common.errors import HeadForgeError

DEFAULT_JOBS_TARGET = "127.0.0.1:50051"


def _add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50051, help="0 = any free port (printed on stdout)")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics here")
    p.add_argument("--tokens-file", default=None, help="YAML {tokens: {TOKEN: TENANT}}; none = local mode")
    p.add_argument("--max-workers", type=int, default=None,
                   help="handler threads; default 8, jobs 64 (every open WatchProgress stream holds one)")
    p.add_argument("--max-message-bytes", type=int, default=64 * 1024 * 1024)
    p.add_argument("--grace-s", type=float, default=30.0, help="drain time on SIGTERM")
    p.add_argument("--log-level", default="INFO")


def _add_face_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--detector", choices=["dlib", "insightface"], default=None)
    p.add_argument("--recognizer", choices=["dlib", "insightface"], default=None)
    p.add_argument("--insightface-dir", default=None,
                   help="InsightFace pack folder (buffalo_l/antelopev2 layout); implies insightface backends")
    p.add_argument("--max-image-pixels", type=int, default=40_000_000)


def _face_config(args):
    from services.face.config import FaceConfig

    default = "insightface" if args.insightface_dir else "dlib"
    return FaceConfig(detector=args.detector or default, recognizer=args.recognizer or default,
                      insightface_dir=args.insightface_dir, max_image_pixels=args.max_image_pixels)


def cmd_serve(args) -> int:
    from services.common import logs
    from services.common.server import ServerConfig, serve_forever

    logs.configure(f"{args.service}", args.log_level)
    config = ServerConfig(host=args.host, port=args.port, metrics_port=args.metrics_port,
                          tokens_file=args.tokens_file,
                          max_workers=args.max_workers or (64 if args.service == "jobs" else 8),
                          max_message_bytes=args.max_message_bytes, grace_s=args.grace_s)
    if args.service == "render":
        import torch

        # denormal floats (opaque fields, far-off Gaussians) make CPU kernels an order of magnitude slower;
        # set for the whole server process (it is process-global state, so not inside RenderService)
        torch.set_flush_denormal(True)
        from services.render.service import RenderService
        from services.render.servicer import register as register_render
        from services.render.types import RenderLimits

        limits = RenderLimits(scene_idle_ttl_s=args.scene_idle_ttl_s, max_scenes_per_tenant=args.max_scenes_per_tenant,
                              max_tenant_bytes=args.max_tenant_bytes,
                              max_pending_steps_per_scene=args.max_pending_steps)
        return serve_forever("render", config, register_render(RenderService(limits, device=args.device,
                                                                             max_message_bytes=args.max_message_bytes)))
    if args.service == "jobs":
        return _serve_jobs(args, config)
    if args.service == "guidance":
        from services.guidance.config import GuidanceConfig, load_config
        from services.guidance.service import GuidanceService
        from services.guidance.servicer import register as register_guidance

        overrides = {"device": args.device, "max_message_bytes": args.max_message_bytes}
        if args.config:
            guidance_config = load_config(args.config, **overrides)
        else:
            guidance_config = GuidanceConfig(**{k: v for k, v in overrides.items() if v is not None})
        batching = {k: v for k, v in (("max_batch_images", args.max_batch_images),
                                       ("max_queue_delay_ms", args.max_queue_delay_ms),
                                       ("max_queue_depth", args.max_queue_depth)) if v is not None}
        if batching:
            guidance_config = guidance_config.model_copy(
                update={"batching": guidance_config.batching.model_copy(update=batching)})
        return serve_forever("guidance", config, register_guidance(GuidanceService(guidance_config)))
    if args.service == "inversion":
        return serve_forever("inversion", config, register_inversion_service(args))
    from services.face.service import FaceService
    from services.face.servicer import register

    face_config = _face_config(args).model_copy(update={"max_message_bytes": args.max_message_bytes})
    return serve_forever("face", config, register(FaceService(face_config)))


def _jobs_config(args):
    from orchestrator.jobs.service import JobsConfig

    return JobsConfig(store_path=args.store, artifacts_url=args.artifacts, model_roots=args.model_root or [],
                      default_models_dir=args.default_models_dir, max_active_jobs=args.max_active_jobs,
                      max_storage_bytes=args.max_storage_bytes, max_watch_streams=args.max_watch_streams,
                      max_image_bytes=args.max_image_bytes, max_image_pixels=args.max_image_pixels,
                      retention_days=args.retention_days)


def _amounts(items, flag: str) -> dict[str, float]:
    """NAME=AMOUNT flags -> {name: amount}."""
    out = {}
    for name, value in _pairs(items, flag).items():
        try:
            out[name] = float(value)
        except ValueError:
            raise SystemExit(f"headforge: {flag} wants NAME=NUMBER, got {name}={value}") from None
    return out


def make_runtime(service, args):
    """The Ray runtime executing this JobsService's jobs: one actor per running subject with the declared
    share, services at the given endpoints (in-process in each actor, or gRPC addresses)."""
    from orchestrator.runtime.endpoints import Endpoints
    from orchestrator.runtime.ray_runtime import ActorShare, RayRuntime

    url = service.artifacts.root_url
    if "://" not in url:   # Ray workers do not share this process's working directory
        url = Path(url).resolve().as_uri()
    endpoints = Endpoints(face=args.face, render=args.render, guidance=args.guidance,
                          guidance_config=args.guidance_config, token=args.service_token)
    share = ActorShare(num_cpus=args.subject_cpus, num_gpus=args.subject_gpus,
                       resources=_amounts(args.subject_resource, "--subject-resource"))
    return RayRuntime(service.store, url, endpoints, share=share, max_active_per_tenant=args.max_running_per_tenant,
                      ray_address=args.ray_address, ray_resources=_amounts(args.ray_resource, "--ray-resource"))


def _serve_jobs(args, config) -> int:
    from orchestrator.jobs.service import JobsService
    from orchestrator.jobs.servicer import register as register_jobs
    from services.common.server import serve_forever

    service = JobsService(_jobs_config(args))
    service.runtime = make_runtime(service, args) if args.runtime == "ray" else None
    service.start()
    return serve_forever("jobs", config, register_jobs(service), on_drain=service.drain, on_stop=service.stop)


def _jobs_client(args):
    from orchestrator.jobs.client import GrpcJobsClient

    return GrpcJobsClient(args.target, token=args.token, timeout_s=args.timeout_s)


def _pairs(items: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"headforge: {flag} wants KEY=VALUE, got {item!r}")
        out[key] = value
    return out


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
    recipe = "" if recipe_yaml else (args.recipe or "sds_gaussians")
    client = _jobs_client(args)
    try:
        job = client.submit([Path(p) for p in args.images], recipe=recipe, recipe_yaml=recipe_yaml,
                            prompt=args.prompt, options=_pairs(args.option, "--option"),
                            labels=_pairs(args.label, "--label"), priority=args.priority,
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
                    console.print(f"artifact {ev.payload.name} ({ev.payload.size_bytes} bytes)")
    finally:
        client.close()
    console.print(f"finished: {state.upper()}" + (f": {error}" if error and state != "succeeded" else ""))
    return 0 if state == "succeeded" else 1


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
def _inversion_config(args):
    from services.inversion.service import InversionConfig
    from services.inversion.sessions import InversionLimits

    generators = {}
    if args.models_dir:
        generators.update(InversionConfig.from_models_dir(args.models_dir).generators)
    for spec in args.generator or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--generator takes NAME=DIR, got {spec!r}")
        generators[name] = path
    limits = InversionLimits(session_idle_ttl_s=args.session_idle_ttl_s, max_sessions_per_tenant=args.max_sessions_per_tenant,
                             max_tenant_bytes=args.max_tenant_bytes,
                             max_concurrent_inversions=args.max_concurrent_inversions)
    return InversionConfig(generators=generators, default_generator=args.default_generator or "",
                           trust_pickles=args.trust_pickles, device=args.device, lpips_vgg=args.lpips_vgg,
                           lpips_lin=args.lpips_lin, limits=limits, max_message_bytes=args.max_message_bytes,
                           max_image_pixels=args.max_image_pixels)


def register_inversion_service(args):
    import os

    import torch

    torch.set_flush_denormal(True)
    if os.environ.get("HEADFORGE_TORCH_THREADS"):  # small models on a shared CPU: fewer threads are faster
        torch.set_num_threads(int(os.environ["HEADFORGE_TORCH_THREADS"]))
    from services.inversion.service import InversionService
    from services.inversion.servicer import register

    return register(InversionService(_inversion_config(args)))


def _face_client(args):
    from services.face.client import GrpcFaceClient, InProcessFaceClient

    if args.target:
        return GrpcFaceClient(args.target, token=args.token)
    return InProcessFaceClient(config=_face_config(args))


def cmd_face_analyze(args) -> int:
    from services.face.convert import face_to_dict
    from services.face.types import AnalyzeOptions

    client = _face_client(args)
    options = AnalyzeOptions(max_faces=args.max_faces, crop_size=args.crop_size, crop_style=args.crop_style,
                             skip_masks=not args.out, skip_crop=not args.out)
    result = client.analyze(Path(args.image).read_bytes(), options)
    if args.out:
        _write_face_images(result, Path(args.out))
    if args.json:
        print(json.dumps({"image_width": result.image_width, "image_height": result.image_height,
                          "faces": [face_to_dict(f) for f in result.faces],
                          "models": [vars(m) for m in result.models]}, indent=1))
        return 0
    print(f"{args.image}: {result.image_width}x{result.image_height}, {len(result.faces)} face(s)")
    for i, f in enumerate(result.faces):
        x0, y0, x1, y1 = f.box
        print(f"  [{i}] box=({x0:.0f},{y0:.0f})-({x1:.0f},{y1:.0f}) score={f.score:.2f} "
              f"yaw={f.pose.yaw:+.1f} pitch={f.pose.pitch:+.1f} roll={f.pose.roll:+.1f}")
    return 0


def _write_face_images(result, out: Path) -> list[Path]:
    from services.common.images import encode_png

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, f in enumerate(result.faces):
        for name in ("aligned_crop", "head_mask", "face_mask", "crop_head_mask"):
            arr = getattr(f, name)
            if arr is not None:
                path = out / f"face{i}_{name}.png"
                path.write_bytes(encode_png(arr))
                written.append(path)
    return written


def cmd_face_compare(args) -> int:
    client = _face_client(args)
    r = client.compare(Path(args.a).read_bytes(), Path(args.b).read_bytes())
    verdict = "same person" if r.same_person else "different people"
    print(f"{verdict}: {r.metric} distance {r.distance:.3f} (threshold {r.threshold}), cosine {r.cosine_similarity:.3f}")
    return 0


def cmd_models_make_tiny(args) -> int:
    from services.face.backends.tiny_insightface import write_tiny_pack
    from services.guidance.tiny_models import write_tiny_models
    from services.inversion.tiny import write_tiny_generators

    path = write_tiny_pack(Path(args.dir) / "insightface" / "buffalo_l")
    print(f"tiny InsightFace pack (random weights, for tests only): {path}")
    config = write_tiny_models(Path(args.dir) / "guidance")
    print(f"tiny diffusion models (random weights, for tests only): {config.parent}; "
          f"serve them with `headforge serve guidance --config {config}`")
    for p in write_tiny_generators(Path(args.dir) / "inversion"):
        print(f"tiny 3D-GAN generator (random weights + shape prior, for tests only): {p}")
    return 0


def cmd_models_convert_gan(args) -> int:
    import json as _json

    from services.inversion.generators.checkpoint import save_generator
    from services.inversion.generators.convert_pickle import convert_network_pickle

    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes KEY=JSON_VALUE, got {item!r}")
        try:
            overrides[key] = _json.loads(value)
        except _json.JSONDecodeError:
            overrides[key] = value
    if args.kind:
        overrides["kind"] = args.kind
    gen = convert_network_pickle(args.pickle, trust=args.trust_pickle, overrides=overrides)
    out = save_generator(gen, args.out, source=f"converted from {args.pickle}")
    c = gen.cfg
    print(f"{out}: {c.kind}, planes {c.plane_resolution} x {c.channels} ch x depth {c.depth}, "
          f"w_dim {c.w_dim}, num_ws {gen.num_ws}, neural {c.neural_resolution} -> {c.output_resolution}")
    return 0


def cmd_cluster(args) -> int:
    from orchestrator import cluster

    directory = Path(args.dir)
    if args.cluster_command == "up":
        state = cluster.up(directory, args.guidance_config, args.jobs_port, args.tokens_file)
        print(f"HeadForge is up (supervisor pid {state['pid']}); jobs service at {state['jobs']}")
        for name, address in state["services"].items():
            print(f"  {name:<9} {address}")
        print(f"submit with: headforge submit PHOTO --target {state['jobs']}   (stop: headforge cluster down)")
        return 0
    if args.cluster_command == "down":
        print("stopped" if cluster.down(directory) else "no cluster running")
        return 0
    state = cluster.status(directory)
    if args.jobs_address:
        if not state["running"]:
            return 1
        print(state["jobs"])
        return 0
    if not state["running"]:
        print("no cluster running")
        return 1
    for name, address in state["services"].items():
        print(f"{name:<9} {address:<22} {state['health'][name]}")
    return 0 if all(h == "SERVING" for h in state["health"].values()) else 1


def _generate_clients(args):
    """Face and render clients: in-process by default, gRPC when a target is given."""
    from services.render.client import GrpcRenderClient, InProcessRenderClient

    face = _face_client(args)
    render = GrpcRenderClient(args.render_target, token=args.token) if args.render_target else InProcessRenderClient()
    return face, render


def _set_threads(n: int) -> None:
    import logging

    import torch

    # the head template is open at the neck on purpose: the render service's "topology problems" note is noise here
    logging.getLogger("services.render.representations.mesh").setLevel(logging.ERROR)
    # the CPU rasteriser's small ops wait on each other with more threads on a busy 2-core machine
    torch.set_num_threads(max(1, n))
    torch.set_flush_denormal(True)


def _progress_bar(enabled: bool):
    """A rich progress bar over the recipe's stages, as a progress(stage, fraction) callback."""
    from contextlib import nullcontext

    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    class Bar:
        def __enter__(self):
            self.progress = Progress(TextColumn("{task.description:<10}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                     TimeElapsedColumn(), transient=False)
            self.progress.__enter__()
            self.task = self.progress.add_task("analyse", total=1.0)
            return self

        def __call__(self, stage: str, fraction: float) -> None:
            self.progress.update(self.task, completed=fraction, description=stage)

        def __exit__(self, *exc):
            return self.progress.__exit__(*exc)

    return Bar()


def _print_generate_summary(result) -> None:
    m = result.metrics
    fr = m["views"]["frontal"]
    print(f"head written in {result.timings['total']:.1f} s to {result.out_dir}")
    for path in (result.glb, result.turntable, result.contact_sheet, result.report):
        print(f"  {path}")
    dist = f"{fr['distance']:.3f}" if fr.get("distance") is not None else "no face found"
    print(f"identity: frontal render {m['face_model']['backend']} distance {dist} "
          f"(same person below {m['face_model']['same_person_threshold']}); ID over 4 views {m['identity_similarity']:.3f}; "
          f"PSNR {m['psnr_db']:.2f} dB, SSIM {m['ssim']:.3f} at the photo's camera")
    for w in result.warnings:
        print(f"warning: {w}")


def _generate_with_recipe(args) -> int:
    """Any recipe, in this process (orchestrator/local.py): the same stages a cluster job runs."""
    from orchestrator.local import run_local
    from orchestrator.recipes import load_recipe, load_recipe_file
    from orchestrator.runtime.endpoints import INPROCESS, Endpoints

    options = _pairs(args.option, "--option")
    loaded = load_recipe_file(args.recipe_file, options) if args.recipe_file else load_recipe(args.recipe, options=options)
    guidance_config = args.guidance_config
    if guidance_config is None and args.models and (Path(args.models) / "guidance" / "guidance.yaml").is_file():
        guidance_config = str(Path(args.models) / "guidance" / "guidance.yaml")
    endpoints = Endpoints(face=args.target or INPROCESS, render=args.render_target or INPROCESS,
                          guidance=args.guidance_target or INPROCESS, guidance_config=guidance_config,
                          token=args.token)
    images = [Path(args.image).read_bytes()] if args.image else []
    result = run_local(loaded, images, args.prompt, Path(args.out), endpoints=endpoints,
                       show_progress=not args.no_progress)
    if result.state != "succeeded":
        print(f"headforge generate: {result.state}: {result.error_message}", file=sys.stderr)
        return 1
    print(f"{loaded.source} finished in {sum(result.stage_seconds.values()):.1f} s; artifacts in {result.out_dir}:")
    for name in result.artifacts:
        print(f"  {name}")
    return 0


def cmd_generate(args) -> int:
    from orchestrator.fast import run_fast

    if args.recipe_file or (args.recipe or "fast") != "fast" or args.option:
        return _generate_with_recipe(args)
    if not args.image:
        raise SystemExit("headforge generate: the fast recipe needs a photo")
    _set_threads(args.threads)
    face, render = _generate_clients(args)
    with _progress_bar(not args.no_progress) as bar:
        result = run_fast(Path(args.image), Path(args.out), face_client=face, render_client=render,
                          face_index=args.face_index or 0, progress=bar, texture_size=args.texture_size,
                          clip_model=args.clip_model)
    _print_generate_summary(result)
    return 0


def cmd_eval(args) -> int:
    from orchestrator.evaluation import evaluate_asset

    _set_threads(args.threads)
    face, render = _generate_clients(args)
    ev = evaluate_asset(Path(args.out_dir), Path(args.reference), face_client=face, render_client=render,
                        face_index=args.face_index, clip_model=args.clip_model)
    m = ev.metrics
    if args.json:
        print(json.dumps(m, indent=1))
        return 0
    print(f"identity ({m['face_model']['backend']}, mean cosine over left-frontal, left, right-frontal, right; "
          f"0 where no face): {m['identity_similarity']:.4f}")
    for name, v in m["views"].items():
        d = f"distance {v['distance']:.3f}, cosine {v['cosine']:.3f}" if v["face_found"] else "no face found"
        print(f"  {name:<14} az {v['azimuth_deg']:+6.0f}  {d}")
    print(f"PSNR {m['psnr_db']:.2f} dB, SSIM {m['ssim']:.4f} at the reference view (head mask)")
    print(f"LPIPS: {m['lpips']}")
    print(f"CLIP-I: {m['clip_i']}")
    return 0


def cmd_demo(args) -> int:
    from orchestrator.demo import run_demo

    _set_threads(args.threads)
    with _progress_bar(True) as bar:
        result = run_demo(Path(args.out), progress=bar)
    _print_generate_summary(result)
    return 0


def _add_generate_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--face-index", type=int, default=None,
                   help="which face when the photo has several (0 = the largest; eval: the one generate used)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy 2-core box)")
    p.add_argument("--clip-model", default=None, help="a local Hugging Face CLIP folder: enables CLIP-I")
    p.add_argument("--target", default=None, help="HOST:PORT of a face service; default in-process")
    p.add_argument("--render-target", default=None, help="HOST:PORT of a render service; default in-process")
    p.add_argument("--token", default=None)
    _add_face_flags(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headforge", description="Portrait to 3D head.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a service process")
    serve.add_argument("service", choices=["face", "render", "guidance", "inversion", "jobs"])
    _add_server_flags(serve)
    _add_face_flags(serve)
    render = serve.add_argument_group("render service")
    render.add_argument("--device", default=None, help="torch device; default cuda when available, else cpu")
    render.add_argument("--scene-idle-ttl-s", type=float, default=1800)
    render.add_argument("--max-scenes-per-tenant", type=int, default=16)
    render.add_argument("--max-tenant-bytes", type=int, default=8 << 30)
    render.add_argument("--max-pending-steps", type=int, default=8, help="step handles held per scene")
    guidance = serve.add_argument_group("guidance service")
    guidance.add_argument("--config", default=None,
                          help="guidance YAML (backbones, batching); default: the analytic prior only")
    guidance.add_argument("--max-batch-images", type=int, default=None)
    guidance.add_argument("--max-queue-delay-ms", type=float, default=None)
    guidance.add_argument("--max-queue-depth", type=int, default=None)
    jobs = serve.add_argument_group("jobs service")
    jobs.add_argument("--store", default="jobs/jobs.db", help="SQLite job store file")
    jobs.add_argument("--artifacts", default="jobs/artifacts", help="artifact root: a path or fsspec URL")
    jobs.add_argument("--model-root", action="append", help="allowed parent of models_dir (repeatable)")
    jobs.add_argument("--default-models-dir", default="", help="models_dir of jobs that give none")
    jobs.add_argument("--max-active-jobs", type=int, default=4, help="queued + running jobs per tenant")
    jobs.add_argument("--max-storage-bytes", type=int, default=20 << 30, help="artifact bytes per tenant")
    jobs.add_argument("--max-watch-streams", type=int, default=16, help="open WatchProgress streams per tenant")
    jobs.add_argument("--max-image-bytes", type=int, default=20 << 20, help="per input photo")
    jobs.add_argument("--retention-days", type=int, default=0, help="artifact retention; 0 = forever")
    jobs.add_argument("--runtime", choices=["ray", "none"], default="ray",
                      help="none: accept and store jobs without running them (another process runs them)")
    jobs.add_argument("--face", default="inprocess", help="face service HOST:PORT, or inprocess (in each worker)")
    jobs.add_argument("--render", default="inprocess", help="render service HOST:PORT, or inprocess")
    jobs.add_argument("--guidance", default="inprocess", help="guidance service HOST:PORT, or inprocess")
    jobs.add_argument("--guidance-config", default=None, help="model repository of in-process guidance")
    jobs.add_argument("--service-token", default=None, help="bearer token for the services")
    jobs.add_argument("--ray-address", default=None, help="an existing Ray cluster; default: start Ray locally")
    jobs.add_argument("--ray-resource", action="append", help="NAME=AMOUNT declared on a local Ray "
                      "(e.g. fake_gpu=1 on a CPU machine)")
    jobs.add_argument("--subject-cpus", type=float, default=1.0, help="CPUs held by each running subject")
    jobs.add_argument("--subject-gpus", type=float, default=0.0, help="GPU share of each subject (0.25 = 4 per GPU)")
    jobs.add_argument("--subject-resource", action="append", help="NAME=AMOUNT each subject holds "
                      "(e.g. fake_gpu=0.25)")
    jobs.add_argument("--max-running-per-tenant", type=int, default=2, help="subjects running at once per tenant")
    inv = serve.add_argument_group("inversion service (--device, --max-sessions-per-tenant, --max-tenant-bytes too)")
    inv.add_argument("--models-dir", default=None, help="serve every generator under DIR/inversion/<name>")
    inv.add_argument("--generator", action="append", help="NAME=DIR, repeatable (checkpoint directory)")
    inv.add_argument("--default-generator", default=None)
    inv.add_argument("--trust-pickles", action="store_true",
                     help="allow official EG3D/PanoHead .pkl weights (pickles run code when loaded)")
    inv.add_argument("--lpips-vgg", default=None, help="VGG16 weights (torchvision state dict .pth/.safetensors)")
    inv.add_argument("--lpips-lin", default=None, help="LPIPS lin weights (the lpips package's weights/v0.1/vgg.pth)")
    inv.add_argument("--session-idle-ttl-s", type=float, default=1800)
    inv.add_argument("--max-sessions-per-tenant", type=int, default=8)
    inv.add_argument("--max-concurrent-inversions", type=int, default=2)
    serve.set_defaults(func=cmd_serve)

    def jobs_client_flags(p):
        p.add_argument("--target", default=os.environ.get("HEADFORGE_JOBS", DEFAULT_JOBS_TARGET),
                       help="HOST:PORT of the jobs service (env HEADFORGE_JOBS)")
        p.add_argument("--token", default=os.environ.get("HEADFORGE_TOKEN"), help="bearer token (env HEADFORGE_TOKEN)")
        p.add_argument("--timeout-s", type=float, default=60.0)

    p = sub.add_parser("submit", help="queue a job on a jobs service; prints its id")
    p.add_argument("images", nargs="*", help="input photos")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--recipe", default=None, help="built-in recipe (default sds_gaussians); see `headforge recipes`")
    which.add_argument("--recipe-file", default=None, help="a recipe YAML file")
    p.add_argument("--option", action="append", metavar="K=V", help="recipe override by dotted path, YAML value")
    p.add_argument("--prompt", default="")
    p.add_argument("--label", action="append", metavar="K=V")
    p.add_argument("--priority", type=int, default=0, help="-10..10, higher first")
    p.add_argument("--name", default="", help="display name")
    p.add_argument("--models-dir", default="")
    p.add_argument("--idempotency-key", default="")
    jobs_client_flags(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="one job, or the list of your jobs")
    p.add_argument("job_id", nargs="?")
    p.add_argument("--state", action="append", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--recipe", default="")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    jobs_client_flags(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("watch", help="follow a job's progress until it ends (exit 0 = succeeded)")
    p.add_argument("job_id")
    jobs_client_flags(p)
    p.set_defaults(func=cmd_watch)

    p = sub.add_parser("fetch", help="download a job's artifacts")
    p.add_argument("job_id")
    p.add_argument("--out", default=".", help="destination folder")
    p.add_argument("--name", action="append", help="only this artifact (repeatable)")
    jobs_client_flags(p)
    p.set_defaults(func=cmd_fetch)

    p = sub.add_parser("cancel", help="cancel a job")
    p.add_argument("job_id")
    jobs_client_flags(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("recipes", help="list the built-in recipes")
    p.add_argument("--yaml", action="store_true", help="print each recipe's resolved YAML")
    p.set_defaults(func=cmd_recipes)

    face = sub.add_parser("face", help="face analysis").add_subparsers(dest="face_command", required=True)
    for name, func in (("analyze", cmd_face_analyze), ("compare", cmd_face_compare)):
        p = face.add_parser(name)
        if name == "analyze":
            p.add_argument("image")
            p.add_argument("--json", action="store_true")
            p.add_argument("--out", default=None, help="write aligned crops and masks as PNG here")
            p.add_argument("--max-faces", type=int, default=0)
            p.add_argument("--crop-size", type=int, default=512)
            p.add_argument("--crop-style", choices=["head", "ffhq"], default="head")
        else:
            p.add_argument("a")
            p.add_argument("b")
        p.add_argument("--target", default=None, help="HOST:PORT of a face service; default in-process")
        p.add_argument("--token", default=None)
        _add_face_flags(p)
        p.set_defaults(func=func)

    models = sub.add_parser("models", help="model files").add_subparsers(dest="models_command", required=True)
    tiny = models.add_parser("make-tiny", help="tiny random models in the real formats (tests only)")
    tiny.add_argument("dir")
    tiny.set_defaults(func=cmd_models_make_tiny)
    conv = models.add_parser("convert-gan", help="official EG3D/PanoHead pickle -> HeadForge safetensors generator")
    conv.add_argument("pickle")
    conv.add_argument("out")
    conv.add_argument("--trust-pickle", action="store_true", help="required: unpickling runs code from the file")
    conv.add_argument("--kind", choices=["triplane", "trigrid", "pyramid_trigrid"], default=None)
    conv.add_argument("--set", action="append", help="GeneratorConfig override KEY=JSON, e.g. depth=3, repeatable")
    conv.set_defaults(func=cmd_models_convert_gan)

    cl = sub.add_parser("cluster", help="run all services + jobs on this machine in the background")
    cl.add_argument("cluster_command", choices=["up", "down", "status"])
    cl.add_argument("--dir", default=".headforge", help="state, store, artifacts and logs")
    cl.add_argument("--guidance-config", default=None, help="guidance model repository (default: analytic prior)")
    cl.add_argument("--jobs-port", type=int, default=50050)
    cl.add_argument("--tokens-file", default=None)
    cl.add_argument("--jobs-address", action="store_true", help="status: print only the jobs address")
    cl.set_defaults(func=cmd_cluster)

    gen = sub.add_parser("generate", help="portrait -> 3D head in this process (default: the fast recipe)")
    gen.add_argument("image", nargs="?", help="the portrait (text-only recipes take none)")
    gen.add_argument("--out", default="out/head", help="output folder (written only when the run succeeds)")
    gen.add_argument("--recipe", default=None, help="a built-in recipe (default fast); see `headforge recipes`")
    gen.add_argument("--recipe-file", default=None, help="your own recipe YAML")
    gen.add_argument("--option", action="append", metavar="K=V", help="recipe override by dotted path")
    gen.add_argument("--prompt", default="")
    gen.add_argument("--models", default=None, help="model folder (as `headforge models make-tiny` writes it); "
                     "its guidance/guidance.yaml configures in-process guidance")
    gen.add_argument("--guidance-config", default=None, help="guidance model repository YAML (in-process)")
    gen.add_argument("--guidance-target", default=None, help="HOST:PORT of a guidance service")
    gen.add_argument("--texture-size", type=int, default=1024)
    gen.add_argument("--no-progress", action="store_true")
    _add_generate_flags(gen)
    gen.set_defaults(func=cmd_generate)

    ev = sub.add_parser("eval", help="the papers' evaluation protocol on a generated head")
    ev.add_argument("out_dir", help="a folder written by `headforge generate` (asset.glb)")
    ev.add_argument("--reference", required=True, help="the input photo")
    ev.add_argument("--json", action="store_true")
    _add_generate_flags(ev)
    ev.set_defaults(func=cmd_eval)

    demo = sub.add_parser("demo", help="`generate` on a bundled portrait (scikit-image's astronaut)")
    demo.add_argument("--out", default="out/demo")
    demo.add_argument("--threads", type=int, default=1)
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HeadForgeError as e:
        print(f"error ({e.code.name}): {e.message}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
