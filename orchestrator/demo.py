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
    from services.common.client import INPROCESS
    from services.face.client import connect as connect_face
    from services.render.client import connect as connect_render

    image = demo_portrait()
    out.mkdir(parents=True, exist_ok=True)
    (out / "input.png").write_bytes(encode_png(image))
    return run_fast(image, out, face_client=connect_face(INPROCESS), render_client=connect_render(INPROCESS),
                    progress=progress, source_name="skimage.data.astronaut()")


def turntable_strip(gif_path: Path, frames: int = 8):
    """frames evenly spaced turntable frames side by side, (S, frames * S, 3) uint8."""
    import numpy as np
    from PIL import Image, ImageSequence

    all_frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(gif_path))]
    step = max(1, len(all_frames) // frames)
    return np.concatenate(all_frames[::step][:frames], 1)


def write_docs_picture(out: Path) -> None:
    """The README picture: turntables of the astronaut and of matplotlib's Grace Hopper (needs matplotlib).
    `python -m orchestrator.demo docs/turntable.jpg`"""
    import tempfile

    import matplotlib
    import numpy as np
    from PIL import Image

    from orchestrator.fast import run_fast
    from services.common.client import INPROCESS
    from services.face.client import connect as connect_face
    from services.render.client import connect as connect_render

    face, render = connect_face(INPROCESS), connect_render(INPROCESS)
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, image in (("astronaut", demo_portrait()), ("hopper", hopper)):
            result = run_fast(image, Path(tmp) / name, face_client=face, render_client=render)
            rows.append(turntable_strip(result.turntable))
    Image.fromarray(np.concatenate(rows, 0)).save(out, quality=88)


if __name__ == "__main__":
    import sys

    import torch

    torch.set_num_threads(1)
    write_docs_picture(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/turntable.jpg"))
