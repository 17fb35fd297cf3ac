"""Inversion tests: tiny generators written in the real on-disk format once per session, torch on one
thread (tiny ops on a busy 2-core machine: more threads only wait on each other), and one
`headforge serve inversion` process on loopback with two tenants."""

from __future__ import annotations

import pickle

import pytest

from services.common.process import ServiceProcess
from services.inversion.generators.checkpoint import save_generator
from services.inversion.tiny import tiny_generator, write_tiny_generators


from tests.helpers import single_thread  # noqa: F401 - one torch thread for every module here


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    """DIR/inversion/{tiny-triplane, tiny-trigrid, tiny-pyramid} as `headforge models make-tiny` writes
    them, plus two bad generator directories: a pickle (needs the trust flag) and a checkpoint whose
    tensors do not match its config."""
    root = tmp_path_factory.mktemp("models")
    write_tiny_generators(root / "inversion")
    pkl_dir = root / "inversion" / "pickled"
    pkl_dir.mkdir()
    with open(pkl_dir / "network.pkl", "wb") as f:
        pickle.dump({"G_ema": tiny_generator("tiny-triplane", seed=7)}, f)
    bad = root / "inversion" / "mismatched"
    save_generator(tiny_generator("tiny-triplane", seed=8), bad)
    cfg = (bad / "config.json").read_text().replace('"channels": 8', '"channels": 16')
    (bad / "config.json").write_text(cfg)
    return root


@pytest.fixture(scope="session")
def inversion_server(models_dir, tmp_path_factory):
    logs = tmp_path_factory.mktemp("inv-logs")
    tokens = logs / "tokens.yaml"
    tokens.write_text("tokens: {tok-a: tenant-a, tok-b: tenant-b}\n")
    server = ServiceProcess(["inversion", "--port", "0", "--models-dir", str(models_dir), "--default-generator",
                             "tiny-triplane", "--tokens-file", str(tokens), "--max-sessions-per-tenant", "3",
                             "--device", "cpu"], logs / "inversion.log", env={"HEADFORGE_TORCH_THREADS": "1"})
    yield server
    server.stop()
