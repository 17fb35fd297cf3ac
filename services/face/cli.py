"""The face service's command-line pieces, called by `headforge` (orchestrator/cli):

    headforge serve face [--detector ...]            add_serve_arguments + serve
    headforge face analyze|compare [--detector ...]  add_backend_arguments + config_from_args (in-process)
    headforge models make-tiny DIR                   write_tiny_models (this service's part)

Backends are imported inside the functions that need them, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from services.common.server import ServerConfig
from services.common.images import DEFAULT_MAX_IMAGE_PIXELS
from services.face.backends import DETECTORS, RECOGNIZERS
from services.face.config import FaceConfig


def add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    """--detector, --recognizer (the registered backend names), --insightface-dir, --max-image-pixels."""
    parser.add_argument("--detector", choices=DETECTORS.names(), default=None,
                        help="default insightface with --insightface-dir, else auto (MediaPipe, dlib fallback)")
    parser.add_argument("--recognizer", choices=RECOGNIZERS.names(), default=None,
                        help="default insightface with --insightface-dir, else dlib")
    parser.add_argument("--insightface-dir", default=None,
                        help="InsightFace pack folder (buffalo_l/antelopev2 layout); implies insightface backends")
    parser.add_argument("--max-image-pixels", type=int, default=None,
                        help="larger photos (width * height) are refused; default services.common.images.DEFAULT_MAX_IMAGE_PIXELS")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `headforge serve face` (the common server flags are added by the caller)."""
    add_backend_arguments(parser)


def config_from_args(args: argparse.Namespace) -> FaceConfig:
    """The FaceConfig of parsed add_backend_arguments flags (pydantic ValidationError for a bad mix,
    e.g. --detector insightface without --insightface-dir)."""
    pack = bool(args.insightface_dir)
    return FaceConfig(detector=args.detector or ("insightface" if pack else "auto"),
                      recognizer=args.recognizer or ("insightface" if pack else "dlib"),
                      insightface_dir=args.insightface_dir, max_image_pixels=args.max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS)


def serve(args: argparse.Namespace, config: ServerConfig) -> int:
    """Run `headforge serve face` until SIGTERM."""
    from services.common.server import serve_forever
    from services.face.service import FaceService
    from services.face.servicer import register

    face_config = config_from_args(args).model_copy(update={"max_message_bytes": config.max_message_bytes})
    return serve_forever("face", config, register(FaceService(face_config)))


def write_tiny_models(dir: Path) -> list[str]:
    """Write a tiny InsightFace pack (random weights, the real ONNX layout; tests only) to
    DIR/insightface/buffalo_l; returns the line for the caller to print."""
    from services.face.backends.tiny_insightface import write_tiny_pack

    path = write_tiny_pack(Path(dir) / "insightface" / "buffalo_l")
    return [f"tiny InsightFace pack (random weights, for tests only): {path}"]
