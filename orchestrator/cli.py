"""The `headforge` command.

    headforge serve face|render|guidance ... run a service process (gRPC, health, reflection, metrics)
    headforge face analyze IMAGE [--json]    analyse faces in a photo (in-process, or --target HOST:PORT)
    headforge face compare A B               same person?
    headforge models make-tiny DIR           write tiny random models in the real on-disk formats (tests)
    headforge generate IMAGE [--out DIR]     portrait -> textured 3D head (the `fast` recipe, in-process)
    headforge eval OUT_DIR --reference IMAGE the papers' evaluation protocol on a generated head
    headforge demo [--out DIR]               `generate` on a bundled portrait (scikit-image's astronaut)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from services.common.errors import HeadForgeError

_LATER = {"inversion": 5, "jobs": 6}


def _add_server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=50051, help="0 = any free port (printed on stdout)")
    p.add_argument("--metrics-port", type=int, default=None, help="serve Prometheus /metrics here")
    p.add_argument("--tokens-file", default=None, help="YAML {tokens: {TOKEN: TENANT}}; none = local mode")
    p.add_argument("--max-workers", type=int, default=8)
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
    if args.service in _LATER:
        print(f"headforge serve {args.service}: not built yet (tracked in issue {_LATER[args.service]})",
              file=sys.stderr)
        return 2
    from services.common import logs
    from services.common.server import ServerConfig, serve_forever

    logs.configure(f"{args.service}", args.log_level)
    config = ServerConfig(host=args.host, port=args.port, metrics_port=args.metrics_port,
                          tokens_file=args.tokens_file, max_workers=args.max_workers,
                          max_message_bytes=args.max_message_bytes, grace_s=args.grace_s)
    if args.service == "render":
        import torch

        # denormal floats (opaque fields, far-off Gaussians) make CPU kernels an order of magnitude slower;
        # set for the whole server process (it is process-global state, so not inside RenderService)
        torch.set_flush_denormal(True)
        from services.render.service import RenderService
        from services.render.servicer import register as register_render
        from services.render.sessions import RenderLimits

        limits = RenderLimits(scene_idle_ttl_s=args.scene_idle_ttl_s, max_scenes_per_tenant=args.max_scenes_per_tenant,
                              max_tenant_bytes=args.max_tenant_bytes,
                              max_pending_steps_per_scene=args.max_pending_steps)
        return serve_forever("render", config, register_render(RenderService(limits, device=args.device,
                                                                             max_message_bytes=args.max_message_bytes)))
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
    from services.face.service import FaceService
    from services.face.servicer import register

    face_config = _face_config(args).model_copy(update={"max_message_bytes": args.max_message_bytes})
    return serve_forever("face", config, register(FaceService(face_config)))


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

    path = write_tiny_pack(Path(args.dir) / "insightface" / "buffalo_l")
    print(f"tiny InsightFace pack (random weights, for tests only): {path}")
    config = write_tiny_models(Path(args.dir) / "guidance")
    print(f"tiny diffusion models (random weights, for tests only): {config.parent}; "
          f"serve them with `headforge serve guidance --config {config}`")
    return 0


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


def cmd_generate(args) -> int:
    from orchestrator.fast import run_fast

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
    serve.add_argument("service", choices=["face", "render", "guidance", *_LATER])
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
    serve.set_defaults(func=cmd_serve)

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

    gen = sub.add_parser("generate", help="portrait -> textured 3D head (the fast recipe, in-process)")
    gen.add_argument("image")
    gen.add_argument("--out", default="out/head", help="output folder (written only when the run succeeds)")
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
