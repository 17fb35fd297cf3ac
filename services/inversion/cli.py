"""The inversion service's command-line pieces, called by `headforge` (orchestrator/cli):

    headforge serve inversion --models-dir DIR ...      add_serve_arguments + serve
    headforge models make-tiny DIR                      write_tiny_models (this service's part)
    headforge models convert-gan PKL OUT --trust-pickle add_convert_arguments + convert_gan

torch is imported inside the functions that need it, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from services.common.server import ServerConfig
from services.inversion.types import InversionConfig, InversionLimits


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `headforge serve inversion` (the common server flags are added by the caller)."""
    parser.add_argument("--device", default=None, help="torch device; default cuda when available, else cpu")
    parser.add_argument("--models-dir", default=None, help="serve every generator under DIR/inversion/<name> (and "
                        "LPIPS weights DIR/lpips/vgg16.pth + vgg.pth when there and no --lpips-vgg is given)")
    parser.add_argument("--generator", action="append", help="NAME=DIR, repeatable (checkpoint directory)")
    parser.add_argument("--default-generator", default=None)
    parser.add_argument("--trust-pickles", action="store_true",
                        help="allow official EG3D/PanoHead/3DPortraitGAN .pkl weights (pickles run code when loaded)")
    parser.add_argument("--lpips-vgg", default=None, help="VGG16 weights (torchvision state dict .pth/.safetensors)")
    parser.add_argument("--lpips-lin", default=None,
                        help="LPIPS lin weights (the lpips package's weights/v0.1/vgg.pth)")
    parser.add_argument("--session-idle-ttl-s", type=float, default=1800)
    parser.add_argument("--max-sessions-per-tenant", type=int, default=8)
    # 8 GiB: what `serve inversion` got before it had its own flag (the render service's --max-tenant-bytes)
    parser.add_argument("--max-tenant-bytes", type=int, default=8 << 30, help="session bytes per tenant")
    parser.add_argument("--max-concurrent-inversions", type=int, default=2)
    parser.add_argument("--max-image-pixels", type=int, default=40_000_000, help="larger input images are refused")


LPIPS_FILES = ("vgg16.pth", "vgg.pth")   # under --models-dir/lpips/: torchvision's VGG16 state dict, lpips' lin weights


def config_from_args(args: argparse.Namespace, max_message_bytes: int = 64 * 1024 * 1024) -> InversionConfig:
    """The InversionConfig of parsed add_serve_arguments flags; SystemExit for a malformed --generator."""
    generators = {}
    if args.models_dir:
        generators.update(InversionConfig.from_models_dir(args.models_dir).generators)
    for spec in args.generator or []:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--generator takes NAME=DIR, got {spec!r}")
        generators[name] = path
    limits = InversionLimits(session_idle_ttl_s=args.session_idle_ttl_s,
                             max_sessions_per_tenant=args.max_sessions_per_tenant,
                             max_tenant_bytes=args.max_tenant_bytes,
                             max_concurrent_inversions=args.max_concurrent_inversions)
    lpips_vgg, lpips_lin = args.lpips_vgg, args.lpips_lin
    if args.models_dir and not lpips_vgg:   # the models folder's convention: DIR/lpips/{vgg16.pth, vgg.pth}
        found = {name: Path(args.models_dir) / "lpips" / name for name in LPIPS_FILES}
        if found["vgg16.pth"].is_file():
            lpips_vgg = str(found["vgg16.pth"])
            lpips_lin = lpips_lin or (str(found["vgg.pth"]) if found["vgg.pth"].is_file() else None)
    return InversionConfig(generators=generators, default_generator=args.default_generator or "",
                           trust_pickles=args.trust_pickles, device=args.device, lpips_vgg=lpips_vgg,
                           lpips_lin=lpips_lin, limits=limits, max_message_bytes=max_message_bytes,
                           max_image_pixels=args.max_image_pixels)


def serve(args: argparse.Namespace, config: ServerConfig) -> int:
    """Run `headforge serve inversion` until SIGTERM. HEADFORGE_TORCH_THREADS (env) caps torch's CPU
    threads (small models on a shared CPU run faster on fewer)."""
    import torch

    from services.common.server import serve_forever
    from services.inversion.service import InversionService
    from services.inversion.servicer import register

    torch.set_flush_denormal(True)  # denormal floats make CPU kernels far slower (process-global)
    if os.environ.get("HEADFORGE_TORCH_THREADS"):
        torch.set_num_threads(int(os.environ["HEADFORGE_TORCH_THREADS"]))
    service = InversionService(config_from_args(args, config.max_message_bytes))
    return serve_forever("inversion", config, register(service))


def write_tiny_models(dir: Path) -> list[str]:
    """Write the tiny random generators to DIR/inversion/<name> (the real on-disk format, tests only);
    returns one line per generator for the caller to print."""
    from services.inversion.tiny import write_tiny_generators

    return [f"tiny 3D-GAN generator (random weights + shape prior, for tests only): {p}"
            for p in write_tiny_generators(Path(dir) / "inversion")]


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of `headforge models convert-gan`."""
    from services.inversion.convert import KIND_ENUMS

    parser.add_argument("pickle")
    parser.add_argument("out")
    parser.add_argument("--trust-pickle", action="store_true", help="required: unpickling runs code from the file")
    parser.add_argument("--kind", choices=list(KIND_ENUMS), default=None)
    parser.add_argument("--set", action="append",
                        help="GeneratorConfig override KEY=JSON, e.g. depth=3, repeatable")


def convert_gan(args: argparse.Namespace) -> int:
    """An official EG3D / PanoHead / 3DPortraitGAN network pickle -> a HeadForge safetensors generator
    directory; the parts that could not be converted are printed. Without --trust-pickle the pickle is
    refused unopened (unpickling runs code from the file)."""
    from services.inversion.generators.checkpoint import save_generator
    from services.inversion.generators.convert_pickle import convert_network_pickle

    overrides = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes KEY=JSON_VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if args.kind:
        overrides["kind"] = args.kind
    report: list[str] = []
    gen = convert_network_pickle(args.pickle, trust=args.trust_pickle, overrides=overrides, report=report)
    out = save_generator(gen, args.out, source=f"converted from {args.pickle}")
    c = gen.cfg
    print(f"{out}: {c.kind}, planes {c.plane_resolution} x {c.channels} ch x depth {c.depth}, "
          f"w_dim {c.w_dim}, num_ws {gen.num_ws}, neural {c.neural_resolution} -> {c.output_resolution}"
          + (f", pyramid {c.pyramid_style} levels {list(c.pyramid_levels)}" if c.kind == "pyramid_trigrid" else ""))
    for line in report:
        print(f"  not converted: {line}")
    return 0
