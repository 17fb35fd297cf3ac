"""Shared fixtures: real portraits from installed packages, a face service process on loopback, and the
face client parametrised over both transports (the same behavioural tests run against each)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from services.common.process import ServiceProcess

@pytest.fixture(autouse=True, scope="session")
def headforge_home(tmp_path_factory) -> Path:
    """A per-session HEADFORGE_HOME (orchestrator/state_dir.py): the tests' local clusters and default job
    stores never touch the user's ~/.headforge; every `headforge` child process inherits it."""
    import os

    home = tmp_path_factory.mktemp("headforge-home")
    old = os.environ.get("HEADFORGE_HOME")
    os.environ["HEADFORGE_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("HEADFORGE_HOME", None)
    else:
        os.environ["HEADFORGE_HOME"] = old


def png_bytes(array: np.ndarray, **save_kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", **save_kw)
    return buf.getvalue()


def jpeg_bytes(array: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """scikit-image's astronaut (Eileen Collins), 512x512 RGB uint8: one real frontal face."""
    from skimage import data

    return data.astronaut()


@pytest.fixture(scope="session")
def hopper() -> np.ndarray:
    """matplotlib's sample portrait of Grace Hopper, RGB uint8: a different real person."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return np.array(Image.open(path).convert("RGB"))


@pytest.fixture(scope="session")
def face_service():
    from services.face.service import FaceService

    return FaceService()


@pytest.fixture(scope="session")
def face_server(tmp_path_factory):
    """One face service process for the session (dlib backend, local mode)."""
    log = tmp_path_factory.mktemp("logs") / "face.log"
    server = ServiceProcess(["face", "--port", "0", "--max-workers", "4"], log)
    yield server
    server.stop()


@pytest.fixture(params=["inprocess", "grpc"])
def face_client(request, face_service):
    from services.face.client import GrpcFaceClient
    from services.face.service import InProcessFaceClient

    if request.param == "inprocess":
        yield InProcessFaceClient(face_service)
        return
    server = request.getfixturevalue("face_server")
    client = GrpcFaceClient(server.address, timeout_s=60)
    client.wait_ready()
    yield client
    client.close()


@pytest.fixture(scope="session")
def tiny_guidance_yaml(tmp_path_factory):
    """The tiny random diffusion models in the real on-disk formats (headforge models make-tiny)."""
    from services.guidance.tiny_models import write_tiny_models

    return write_tiny_models(tmp_path_factory.mktemp("tiny-guidance"))
