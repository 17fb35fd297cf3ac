"""The inversion service's outer shape: its own `serve` flags, the convert-gan arguments, connect(), and
a client module that loads no torch."""

from __future__ import annotations

import argparse
import subprocess
import sys

from services.common.client import INPROCESS
from services.common.process import ROOT
from services.common.server import add_server_arguments, server_config
from services.inversion import cli
from services.inversion.client import GrpcInversionClient, connect
from services.inversion.service import InProcessInversionClient


def serve_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    cli.add_serve_arguments(parser)
    return parser.parse_args(list(argv))


def test_serve_flags_make_the_config(models_dir):
    args = serve_args("--models-dir", str(models_dir), "--generator", "extra=/some/dir", "--device", "cpu",
                      "--max-tenant-bytes", "12345", "--max-sessions-per-tenant", "3", "--max-image-pixels", "99")
    config = cli.config_from_args(args, server_config(args).max_message_bytes)
    assert {"tiny-triplane", "tiny-trigrid", "tiny-pyramid", "extra"} <= set(config.generators)
    assert config.limits.max_tenant_bytes == 12345 and config.limits.max_sessions_per_tenant == 3
    assert config.max_image_pixels == 99 and config.device == "cpu"
    defaults = cli.config_from_args(serve_args())
    assert defaults.limits.max_tenant_bytes == 8 << 30 and defaults.max_image_pixels == 40_000_000


def test_convert_arguments():
    parser = argparse.ArgumentParser()
    cli.add_convert_arguments(parser)
    args = parser.parse_args(["net.pkl", "out", "--kind", "trigrid", "--set", "depth=3"])
    assert (args.pickle, args.out, args.trust_pickle, args.kind, args.set) == ("net.pkl", "out", False, "trigrid",
                                                                               ["depth=3"])


def test_connect(models_dir):
    local = connect(INPROCESS, models_dir=models_dir, default_generator="tiny-triplane", device="cpu")
    assert isinstance(local, InProcessInversionClient)
    assert local.service.config.default_generator == "tiny-triplane"
    remote = connect("127.0.0.1:1", token="t")
    assert isinstance(remote, GrpcInversionClient)
    remote.close()


def test_client_import_loads_no_torch():
    code = "import sys, services.inversion.client; print('torch' in sys.modules, 'diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
