"""`headforge models make-tiny | convert-gan`: model files in the real on-disk formats."""

from __future__ import annotations

import importlib

# each module has write_tiny_models(dir) -> lines to print
TINY_WRITERS = ("services.face.cli", "services.guidance.cli", "services.inversion.cli")


def add_parsers(sub) -> None:
    """`models make-tiny` and `models convert-gan`, on the top-level subparsers `sub`."""
    from services.inversion.cli import add_convert_arguments

    models = sub.add_parser("models", help="model files").add_subparsers(dest="models_command", required=True)
    tiny = models.add_parser("make-tiny", help="tiny random models in the real formats (tests only)")
    tiny.add_argument("dir")
    tiny.set_defaults(func=cmd_models_make_tiny)
    conv = models.add_parser("convert-gan", help="official EG3D/PanoHead/3DPortraitGAN pickle -> HeadForge safetensors generator")
    add_convert_arguments(conv)
    conv.set_defaults(func=cmd_models_convert_gan)


def cmd_models_make_tiny(args) -> int:
    for module in TINY_WRITERS:
        for line in importlib.import_module(module).write_tiny_models(args.dir):
            print(line)
    return 0


def cmd_models_convert_gan(args) -> int:
    from services.inversion.cli import convert_gan

    return convert_gan(args)
