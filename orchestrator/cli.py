"""The `headforge` command.

    headforge serve face [--port N] ...      run a service process (gRPC, health, reflection, metrics)
    headforge face analyze IMAGE [--json]    analyse faces in a photo (in-process, or --target HOST:PORT)
    headforge face compare A B               same person?
    headforge serve inversion --models-dir DIR   3D-GAN inversion (generators under DIR/inversion/<name>)
    headforge models make-tiny DIR           write tiny random models in the real on-disk formats (tests)
    headforge models convert-gan PKL OUT --trust-pickle   official EG3D/PanoHead pickle -> safetensors
    headforge demo [--out DIR]               the demo on a bundled portrait
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from services.common.errors import HeadForgeError

_LATER = {"guidance": 4, "jobs": 6}


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
    if args.service == "inversion":
        return serve_forever("inversion", config, register_inversion_service(args))
    from services.face.service import FaceService
    from services.face.servicer import register

    face_config = _face_config(args).model_copy(update={"max_message_bytes": args.max_message_bytes})
    return serve_forever("face", config, register(FaceService(face_config)))


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

    path = write_tiny_pack(Path(args.dir) / "insightface" / "buffalo_l")
    print(f"tiny InsightFace pack (random weights, for tests only): {path}")
    from services.inversion.tiny import write_tiny_generators

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


def cmd_demo(args) -> int:
    from orchestrator.demo import run_demo

    return run_demo(Path(args.out))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headforge", description="Portrait to 3D head.")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a service process")
    serve.add_argument("service", choices=["face", "render", "inversion", *_LATER])
    _add_server_flags(serve)
    _add_face_flags(serve)
    render = serve.add_argument_group("render service")
    render.add_argument("--device", default=None, help="torch device; default cuda when available, else cpu")
    render.add_argument("--scene-idle-ttl-s", type=float, default=1800)
    render.add_argument("--max-scenes-per-tenant", type=int, default=16)
    render.add_argument("--max-tenant-bytes", type=int, default=8 << 30)
    render.add_argument("--max-pending-steps", type=int, default=8, help="step handles held per scene")
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

    demo = sub.add_parser("demo", help="run the demo on a bundled portrait")
    demo.add_argument("--out", default="out/demo")
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
