"""The guidance service's command-line pieces (services.guidance.cli) and client entry point
(services.guidance.client.connect): flags -> config, a clear error for an unusable --device, the make-tiny
line, and a client module that loads neither torch nor diffusers."""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap

import pytest
import torch
import yaml

from services.common.client import INPROCESS
from services.common.errors import FailedPrecondition
from services.common.process import ROOT
from services.common.server import add_server_arguments, server_config
from services.guidance import cli
from services.guidance.client import GrpcGuidanceClient, connect
from services.guidance.config import GuidanceConfig
from services.guidance.service import InProcessGuidanceClient

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where cuda is not usable")


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    cli.add_serve_arguments(parser)
    return parser.parse_args(argv)


def test_flags_override_the_yaml(tmp_path):
    path = tmp_path / "guidance.yaml"
    path.write_text(yaml.safe_dump({"backbones": [{"name": "prior", "backend": "analytic"}],
                                    "batching": {"max_batch_images": 4, "max_queue_depth": 9}}))
    args = _parse(["--config", str(path), "--device", "cpu", "--max-batch-images", "8",
                   "--max-queue-delay-ms", "2.5", "--max-message-bytes", "2000000"])
    config = cli.config_from_args(args, server_config(args).max_message_bytes)
    assert (config.device, config.max_message_bytes, config.base_dir) == ("cpu", 2_000_000, str(tmp_path))
    assert (config.batching.max_batch_images, config.batching.max_queue_delay_ms,
            config.batching.max_queue_depth) == (8, 2.5, 9)
    default = cli.config_from_args(_parse([]), 64 * 1024 * 1024)
    assert default.backbones == GuidanceConfig().backbones and default.device is None


@no_cuda
def test_serve_on_an_unusable_cuda_device_fails_before_loading(tmp_path):
    args = _parse(["--device", "cuda", "--port", "0"])
    with pytest.raises(FailedPrecondition, match="'cuda'") as e:
        cli.serve(args, server_config(args))
    assert e.value.reason == "DEVICE_UNAVAILABLE"


@no_cuda
def test_serve_cuda_on_a_cpu_torch_is_one_clear_line_in_a_subprocess():
    """What the `headforge serve` dispatcher does with serve()'s errors: print the message, exit 1; the
    error must be a HeadForgeError (anything else would print a traceback)."""
    script = textwrap.dedent("""
        import argparse, sys
        from services.common.errors import HeadForgeError
        from services.common.server import add_server_arguments, server_config
        from services.guidance import cli

        parser = argparse.ArgumentParser()
        add_server_arguments(parser)
        cli.add_serve_arguments(parser)
        args = parser.parse_args(sys.argv[1:])
        try:
            sys.exit(cli.serve(args, server_config(args)))
        except HeadForgeError as e:
            print(f"error ({e.code.name}): {e.message}", file=sys.stderr)
            sys.exit(1)
    """)
    done = subprocess.run([sys.executable, "-c", script, "--device", "cuda", "--port", "0"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error (FAILED_PRECONDITION): guidance device 'cuda'"), done.stderr
    assert "serving" not in done.stdout


def test_write_tiny_models_returns_the_make_tiny_line(tmp_path, monkeypatch):
    written = []

    def fake(root):
        written.append(root)
        return root / "guidance.yaml"

    monkeypatch.setattr("services.guidance.tiny_models.write_tiny_models", fake)
    lines = cli.write_tiny_models(tmp_path)
    assert written == [tmp_path / "guidance"]
    assert lines == [f"tiny diffusion models (random weights, for tests only): {tmp_path / 'guidance'}; "
                     f"serve them with `headforge serve guidance --config {tmp_path / 'guidance' / 'guidance.yaml'}`"]


def test_connect(tmp_path):
    remote = connect("127.0.0.1:1", token="t")
    assert isinstance(remote, GrpcGuidanceClient)
    remote.close()
    local = connect(INPROCESS, config=GuidanceConfig(device="cpu"))
    assert isinstance(local, InProcessGuidanceClient)
    assert [info.name for info, _ in local.describe().backbones] == ["analytic"]
    local.service.close()
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"backbones": [{"name": "prior", "backend": "analytic"}], "device": "cpu"}))
    from_file = connect(INPROCESS, config_path=str(path))
    assert [info.name for info, _ in from_file.describe().backbones] == ["prior"]
    from_file.service.close()
    with pytest.raises(ValueError):
        connect(INPROCESS, config=GuidanceConfig(), config_path=str(path))


def test_importing_the_client_loads_neither_torch_nor_diffusers():
    done = subprocess.run([sys.executable, "-c", "import sys, services.guidance.client, services.guidance.cli; "
                           "print('torch' in sys.modules, 'diffusers' in sys.modules)"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
