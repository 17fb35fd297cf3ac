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
    """--detector, --recognizer (the registered backend names), --insightface-dir, --adaface-onnx,
    --cosface-onnx, --landmarks-3d, --tddfa-dir, --trust-pickles, --max-image-pixels."""
    parser.add_argument("--detector", choices=DETECTORS.names(), default=None,
                        help="default insightface with --insightface-dir, else auto (MediaPipe, dlib fallback)")
    parser.add_argument("--recognizer", choices=RECOGNIZERS.names(), default=None,
                        help="default insightface with --insightface-dir, else dlib")
    parser.add_argument("--insightface-dir", default=None,
                        help="InsightFace pack folder (buffalo_l/antelopev2 layout); implies insightface backends")
    parser.add_argument("--adaface-onnx", default=None,
                        help="AdaFace ONNX file (e.g. adaface_ir101.onnx exported from mk-minchul/AdaFace); "
                             "implies --recognizer adaface")
    parser.add_argument("--cosface-onnx", default=None,
                        help="CosFace ONNX file (e.g. InsightFace's glint360k_cosface_r100.onnx, arcface_torch "
                             "torch2onnx.py of its backbone.pth); implies --recognizer cosface")
    parser.add_argument("--landmarks-3d", choices=("project", "tddfa_v2"), default=None,
                        help="landmarks_3d_68 from HeadForge's fitted template (project, the default) or 3DDFA-V2 "
                             "(tddfa_v2; the default with --tddfa-dir)")
    parser.add_argument("--tddfa-dir", default=None,
                        help="3DDFA-V2 folder (weights/mb1_120x120.onnx, configs/*.npz or *.pkl)")
    parser.add_argument("--trust-pickles", action="store_true",
                        help="read 3DDFA-V2's .pkl files (numpy arrays only) instead of requiring .npz "
                             "(python -m services.face.backends.tddfa convert DIR --trust-pickles)")
    parser.add_argument("--max-image-pixels", type=int, default=None,
                        help="larger photos (width * height) are refused; default services.common.images.DEFAULT_MAX_IMAGE_PIXELS")


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `headforge serve face` (the common server flags are added by the caller)."""
    add_backend_arguments(parser)


def config_from_args(args: argparse.Namespace) -> FaceConfig:
    """The FaceConfig of parsed add_backend_arguments flags (pydantic ValidationError for a bad mix,
    e.g. --detector insightface without --insightface-dir)."""
    pack = bool(args.insightface_dir)
    adaface = getattr(args, "adaface_onnx", None)
    cosface = getattr(args, "cosface_onnx", None)
    tddfa_dir = getattr(args, "tddfa_dir", None)
    default_recognizer = ("adaface" if adaface else "cosface" if cosface else "insightface" if pack else "dlib")
    return FaceConfig(detector=args.detector or ("insightface" if pack else "auto"),
                      recognizer=args.recognizer or default_recognizer,
                      insightface_dir=args.insightface_dir, adaface_onnx=adaface, cosface_onnx=cosface,
                      landmarks_3d=getattr(args, "landmarks_3d", None) or ("tddfa_v2" if tddfa_dir else "project"),
                      tddfa_dir=tddfa_dir, trust_pickles=bool(getattr(args, "trust_pickles", False)),
                      max_image_pixels=args.max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS)


def serve(args: argparse.Namespace, config: ServerConfig) -> int:
    """Run `headforge serve face` until SIGTERM."""
    from services.common.server import serve_forever
    from services.face.service import FaceService
    from services.face.servicer import register

    face_config = config_from_args(args).model_copy(update={"max_message_bytes": config.max_message_bytes})
    return serve_forever("face", config, register(FaceService(face_config)))


def write_tiny_models(dir: Path) -> list[str]:
    """Write this service's tiny models (random weights in the real on-disk formats; tests only):
    DIR/insightface/buffalo_l (an InsightFace pack), DIR/tddfa_v2 (a 3DDFA-V2 folder, pickles as upstream)
    DIR/adaface/adaface_ir101.onnx and DIR/cosface/glint360k_cosface_r100.onnx; returns the lines for the
    caller to print."""
    from services.face.backends.tiny_adaface import write_tiny_adaface
    from services.face.backends.tiny_cosface import write_tiny_cosface
    from services.face.backends.tiny_insightface import write_tiny_pack
    from services.face.backends.tiny_tddfa import write_tiny_tddfa

    pack = write_tiny_pack(Path(dir) / "insightface" / "buffalo_l")
    tddfa = write_tiny_tddfa(Path(dir) / "tddfa_v2")
    adaface = write_tiny_adaface(Path(dir) / "adaface")
    cosface = write_tiny_cosface(Path(dir) / "cosface")
    return [f"tiny InsightFace pack (random weights, for tests only): {pack}",
            f"tiny 3DDFA-V2 folder (random weights, for tests only; .pkl: --trust-pickles): {tddfa}",
            f"tiny AdaFace ONNX (random weights, for tests only): {adaface}",
            f"tiny CosFace ONNX (random weights, for tests only): {cosface}"]
