"""`make demo`: the fast recipe on a real portrait that an installed package ships (scikit-image's
astronaut, Eileen Collins): a textured 3D head (asset.glb), a turntable, a contact sheet and report.json
in out/demo, everything in-process on the CPU with the shipped dlib models."""

from __future__ import annotations

from pathlib import Path


def demo_portrait():
    from skimage import data

    return data.astronaut()


def run_demo(out: Path, progress=None):
    from orchestrator.fast import run_fast
    from services.common.images import encode_png
    from services.face.client import InProcessFaceClient
    from services.render.client import InProcessRenderClient

    image = demo_portrait()
    out.mkdir(parents=True, exist_ok=True)
    (out / "input.png").write_bytes(encode_png(image))
    return run_fast(image, out, face_client=InProcessFaceClient(), render_client=InProcessRenderClient(),
                    progress=progress, source_name="skimage.data.astronaut()")
