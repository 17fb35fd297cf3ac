"""Photos of any size: faces are found on the whole photo, cut out of the full-resolution photo and only then
downscaled; the pixel cap is a clear error and `generate --max-image-pixels` sets it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tests.conftest import png_bytes
from tests.helpers import headforge


def _canvas_with_face(astronaut: np.ndarray, width: int, height: int, face_scale: float) -> np.ndarray:
    """A flat grey canvas (width x height) with the astronaut pasted at face_scale (her face box is ~110 px
    at scale 1) off-centre."""
    head = cv2.resize(astronaut, None, fx=face_scale, fy=face_scale, interpolation=cv2.INTER_CUBIC)
    canvas = np.full((height, width, 3), 128, np.uint8)
    y, x = height // 3, width // 2
    canvas[y:y + head.shape[0], x:x + head.shape[1]] = head
    return canvas


def test_a_190px_face_in_a_4000px_photo_keeps_its_pixels(astronaut, face_service):
    from orchestrator.photo_intake import intake_photo, prepare_image, analyse_photo

    photo = _canvas_with_face(astronaut, 4000, 3000, 1.75)          # face box ~ 190 px
    rgb, face, _, warnings = intake_photo(face_service, photo)
    side = min(face.box[2] - face.box[0], face.box[3] - face.box[1])
    assert side > 150 and not any("small face" in w for w in warnings), (side, warnings)
    assert max(rgb.shape[:2]) <= 1024 and face.camera.width == rgb.shape[1]
    # the old path (the whole photo downscaled first) sees a ~47 px face and has to upscale it
    _, small_face, _, small_warnings = analyse_photo(face_service, prepare_image(photo))
    assert any("small face" in w for w in small_warnings)


def test_a_48_megapixel_photo_is_accepted_and_the_cap_is_clear(astronaut, face_service):
    from orchestrator.photo_intake import intake_photo
    from services.common.errors import InvalidArgument

    photo = _canvas_with_face(astronaut, 8000, 6000, 4.0)           # 48 MP, face box ~ 440 px
    _, face, _, _ = intake_photo(face_service, photo)
    assert min(face.box[2] - face.box[0], face.box[3] - face.box[1]) > 150
    with pytest.raises(InvalidArgument, match="pixels"):
        intake_photo(face_service, photo, max_pixels=40_000_000)


def test_generate_honours_max_image_pixels(astronaut, tmp_path):
    photo = tmp_path / "astronaut.png"
    photo.write_bytes(png_bytes(astronaut))
    out = tmp_path / "out"
    r = headforge("generate", str(photo), "--out", str(out), "--no-progress", "--max-image-pixels", "100000")
    assert r.returncode != 0 and "Traceback" not in r.stderr and "pixels" in r.stderr, r.stderr
    assert not out.exists()


def test_face_index_in_a_large_photo_picks_that_face_after_the_crop(astronaut, hopper, face_service):
    from orchestrator.photo_intake import intake_photo

    canvas = np.full((1800, 3000, 3), 128, np.uint8)
    canvas[200:712, 300:812] = astronaut
    canvas[1100:1100 + hopper.shape[0], 2200:2200 + hopper.shape[1]] = hopper
    _, first, _, warnings = intake_photo(face_service, canvas, 0)
    _, second, _, _ = intake_photo(face_service, canvas, 1)
    assert any("2 faces found" in w for w in warnings)
    # both crops are analysed at a face size near the photo's own (no upscale), and they are two people
    d = face_service.compare(first.embedding, second.embedding)
    assert not d.same_person, d
