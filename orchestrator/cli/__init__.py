"""The `headforge` command: it only builds the parser and dispatches; each command group is one module
here (serve, jobs, face, models, cluster, generate).

    headforge serve face|render|guidance|jobs ... run a service process (gRPC, health, reflection, metrics)
    headforge submit IMAGE... --recipe R     queue a job on a jobs service (prints its id)
    headforge status [JOB_ID]                one job, or the list of your jobs
    headforge watch JOB_ID                   progress until the job ends (exit 0 = succeeded)
    headforge fetch JOB_ID [--out DIR]       download artifacts (sha256 checked)
    headforge cancel JOB_ID
    headforge recipes                        the built-in recipes (no server needed)
    headforge face analyze IMAGE [--json]    analyse faces in a photo (in-process, or --target HOST:PORT)
    headforge face compare A B               same person?
    headforge serve inversion --models-dir DIR   3D-GAN inversion (generators under DIR/inversion/<name>)
    headforge models make-tiny DIR           write tiny random models in the real on-disk formats (tests)
    headforge models convert-gan PKL OUT --trust-pickle   official EG3D/PanoHead/3DPortraitGAN pickle -> safetensors
    headforge generate IMAGE [--recipe R]    portrait -> 3D head in this process (default recipe: fast)
    headforge eval OUT_DIR --reference IMAGE the papers' evaluation protocol on a generated head
    headforge demo [--out DIR]               `generate` on a bundled portrait (scikit-image's astronaut)
    headforge view OUT_DIR|JOB_ID            the result on a local web page (3D, report, images)
"""

from __future__ import annotations

import argparse
import sys

from orchestrator.cli import cluster, face, generate, jobs, models, serve, view
from services.common.errors import HeadForgeError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headforge", description="Portrait to 3D head.")
    parser.add_argument("--version", action="version", version=f"headforge {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (serve, jobs, face, models, cluster, generate, view):
        group.add_parsers(sub)
    return parser


def _version() -> str:
    """The installed distribution's version; a source checkout without it says so."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("headforge")
    except PackageNotFoundError:
        return "(source checkout, not installed)"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except HeadForgeError as e:
        print(f"error ({e.code.name}): {e.message}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"error: file not found: {e.filename}" if e.filename else f"error: {e}", file=sys.stderr)
        return 1
    except IsADirectoryError as e:
        print(f"error: a folder, not a file: {e.filename}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
