"""The guidance service's command-line pieces: the flags and the body of `headforge serve guidance`, and its
share of `headforge models make-tiny`. torch and diffusers are imported only when a command runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from services.common.server import ServerConfig

if TYPE_CHECKING:
    from services.guidance.config import GuidanceConfig


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `headforge serve guidance` (the common server flags are added by the caller)."""
    parser.add_argument("--config", default=None,
                        help="guidance YAML (backbones, batching); default: the analytic prior only")
    parser.add_argument("--device", default=None, help="torch device; default cuda when available, else cpu")
    parser.add_argument("--max-batch-images", type=int, default=None)
    parser.add_argument("--max-queue-delay-ms", type=float, default=None)
    parser.add_argument("--max-queue-depth", type=int, default=None)


def config_from_args(args: argparse.Namespace, max_message_bytes: int) -> GuidanceConfig:
    """The GuidanceConfig of parsed add_serve_arguments flags: the --config YAML (else the analytic prior)
    with --device and the batching flags, when given, overriding its values. ModelFilesError naming the
    file or field for a missing or bad YAML."""
    from services.guidance.config import GuidanceConfig, load_config

    overrides = {"device": args.device, "max_message_bytes": max_message_bytes}
    if args.config:
        config = load_config(args.config, **overrides)
    else:
        config = GuidanceConfig(**{k: v for k, v in overrides.items() if v is not None})
    batching = {k: v for k, v in (("max_batch_images", args.max_batch_images),
                                   ("max_queue_delay_ms", args.max_queue_delay_ms),
                                   ("max_queue_depth", args.max_queue_depth)) if v is not None}
    if batching:
        config = config.model_copy(update={"batching": config.batching.model_copy(update=batching)})
    return config


def serve(args: argparse.Namespace, config: ServerConfig) -> int:
    """Run `headforge serve guidance` until SIGTERM. Every backbone is loaded before the server listens:
    a missing model file, a bad config field or an unusable --device (e.g. cuda with a CPU-only torch)
    raises FailedPrecondition / InvalidArgument, which the caller prints without a traceback."""
    from services.common.server import serve_forever
    from services.guidance.service import GuidanceService
    from services.guidance.servicer import register

    service = GuidanceService(config_from_args(args, config.max_message_bytes))
    return serve_forever("guidance", config, register(service))


def write_tiny_models(dir: Path) -> list[str]:
    """Write the tiny random diffusion models (the real on-disk formats, tests only) and their guidance.yaml
    to DIR/guidance; returns the line for the caller to print."""
    from services.guidance.tiny_models import write_tiny_models as write

    config = write(Path(dir) / "guidance")
    return [f"tiny diffusion models (random weights, for tests only): {config.parent}; "
            f"serve them with `headforge serve guidance --config {config}`"]
