"""The fast recipe's tests run torch on one thread (what `headforge generate` does: on a busy 2-core
machine more threads make the CPU rasteriser's small ops wait on each other) and share one generated
head of the astronaut (in-process face and render clients, real dlib models)."""

from __future__ import annotations

import logging

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    logging.getLogger("services.render.representations.mesh").setLevel(logging.ERROR)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def template():
    from orchestrator.head_template.build import load_template

    return load_template()


@pytest.fixture(scope="session")
def face_client(face_service):
    from services.face.service import InProcessFaceClient

    return InProcessFaceClient(face_service)


@pytest.fixture(scope="session")
def render_client():
    from services.render.service import InProcessRenderClient

    return InProcessRenderClient()


@pytest.fixture(scope="session")
def astronaut_face(astronaut, face_client):
    from orchestrator.photo_intake import analyse_photo, prepare_image

    rgb, face, _, _ = analyse_photo(face_client, prepare_image(astronaut))
    return rgb, face


@pytest.fixture(scope="session")
def astronaut_head(astronaut, face_client, render_client, tmp_path_factory):
    """One full `fast` run on the astronaut: the FastResult and the progress calls it made."""
    from orchestrator.fast import run_fast

    calls = []
    out = tmp_path_factory.mktemp("fast") / "astronaut"
    result = run_fast(astronaut, out, face_client=face_client, render_client=render_client,
                      progress=lambda stage, f: calls.append((stage, f)))
    return result, calls


@pytest.fixture(scope="session")
def render_server(tmp_path_factory):
    """A `headforge serve render` process on loopback (local mode)."""
    from services.common.process import ServiceProcess

    server = ServiceProcess(["render", "--port", "0"], tmp_path_factory.mktemp("logs") / "render.log")
    yield server
    server.stop()
