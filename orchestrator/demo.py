"""`make demo`: face analysis on a real bundled portrait (scikit-image's astronaut).

Writes the input, an annotated overlay (box, 68 landmarks, head mask, pose axes), the aligned crop with
its head mask, and analysis.json; prints where they are. Later issues replace this with the 3D head.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from services.common.images import encode_png


def overlay(image: np.ndarray, face) -> np.ndarray:
    """The photo with the head mask tinted, the box, the landmarks and the head's axes drawn."""
    out = image.copy()
    if face.head_mask is not None:
        tint = out.astype(np.float32)
        m = face.head_mask > 0
        tint[m] = tint[m] * 0.6 + np.array([80, 160, 255]) * 0.4
        out = tint.astype(np.uint8)
    x0, y0, x1, y1 = (int(round(v)) for v in face.box)
    cv2.rectangle(out, (x0, y0), (x1, y1), (255, 220, 0), 1)
    for x, y in face.landmarks_68:
        cv2.circle(out, (int(round(x)), int(round(y))), 1, (0, 255, 0), -1)
    origin = face.landmarks_3d_68[30]
    axes = np.array([origin, origin + [0.5, 0, 0], origin + [0, 0.5, 0], origin + [0, 0, 0.5]])
    p = face.camera.project(axes)
    for end, colour in zip(p[1:], [(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        cv2.line(out, tuple(int(v) for v in p[0]), tuple(int(v) for v in end), colour, 2)
    return out


def run_demo(out: Path) -> int:
    from skimage import data

    from services.face.client import InProcessFaceClient
    from services.face.convert import face_to_dict

    out.mkdir(parents=True, exist_ok=True)
    image = data.astronaut()
    client = InProcessFaceClient()
    result = client.analyze(image)
    (out / "input.png").write_bytes(encode_png(image))
    if not result.faces:
        print("no face found in the demo portrait")
        return 1
    face = result.faces[0]
    (out / "overlay.png").write_bytes(encode_png(overlay(image, face)))
    (out / "aligned_crop.png").write_bytes(encode_png(face.aligned_crop))
    (out / "crop_head_mask.png").write_bytes(encode_png(face.crop_head_mask))
    (out / "analysis.json").write_text(json.dumps(
        {"faces": [face_to_dict(f) for f in result.faces], "models": [vars(m) for m in result.models]}, indent=1))
    print(f"{len(result.faces)} face(s); largest: yaw {face.pose.yaw:+.1f}, pitch {face.pose.pitch:+.1f}, "
          f"roll {face.pose.roll:+.1f} deg, detector score {face.score:.2f}")
    for name in ("overlay.png", "aligned_crop.png", "crop_head_mask.png", "analysis.json"):
        print(f"  {out / name}")
    return 0
