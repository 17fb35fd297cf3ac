"""Behaviour of the face service on real photos; every test runs in-process and over gRPC on loopback."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from services.common.errors import FailedPrecondition, InvalidArgument
from services.face.types import AnalyzeOptions
from tests.conftest import jpeg_bytes, png_bytes


def test_analyze_astronaut_landmarks_are_anatomical(face_client, astronaut):
    result = face_client.analyze(png_bytes(astronaut))
    assert (result.image_width, result.image_height) == (512, 512)
    assert len(result.faces) == 1, "the mission badge must not count as a face"
    f = result.faces[0]
    x0, y0, x1, y1 = f.box
    lm = f.landmarks_68
    assert lm.shape == (68, 2) and f.landmarks_5.shape == (5, 2) and f.landmarks_3d_68.shape == (68, 3)
    inner = lm[17:]  # brows, nose, eyes and mouth lie inside the detector's box (jaw may touch its edge)
    margin = 0.1 * (x1 - x0)
    assert (inner[:, 0] > x0 - margin).all() and (inner[:, 0] < x1 + margin).all()
    assert (inner[:, 1] > y0 - margin).all() and (inner[:, 1] < y1 + margin).all()
    left_eye, right_eye = lm[36:42].mean(0), lm[42:48].mean(0)
    nose_tip, mouth, chin = lm[30], lm[48:60].mean(0), lm[8]
    assert left_eye[0] < nose_tip[0] < right_eye[0]
    assert max(left_eye[1], right_eye[1]) < nose_tip[1] < mouth[1] < chin[1]
    assert lm[17:22, 1].mean() < left_eye[1] and lm[22:27, 1].mean() < right_eye[1]
    assert np.all(np.diff(lm[0:9, 1]) > -2), "jaw descends from the left ear to the chin"
    assert lm[0, 0] < lm[8, 0] < lm[16, 0]
    assert lm[48, 0] < lm[54, 0]
    # 5 points in ArcFace order, consistent with the 68
    # (MediaPipe's 5 points take the eyes from its iris model: within a px of the eye contour's mean)
    eye_tol = 1e-3 if f.landmarks_478 is None else 1.0
    np.testing.assert_allclose(f.landmarks_5[0], left_eye, atol=eye_tol)
    np.testing.assert_allclose(f.landmarks_5[4], lm[54], atol=1e-3)


def test_pose_camera_and_3d_landmarks_agree(face_client, astronaut):
    f = face_client.analyze(astronaut).faces[0]
    assert abs(f.pose.yaw) < 15 and abs(f.pose.roll) < 10 and abs(f.pose.pitch) < 25, "a frontal portrait"
    # the 3D landmarks, seen through the estimated camera, land on the 2D landmarks
    np.testing.assert_allclose(f.camera.project(f.landmarks_3d_68), f.landmarks_68, atol=0.05)
    # head frame: +Y up, face toward +Z, subject's left eye (image right) at +X
    p3 = f.landmarks_3d_68
    assert p3[27:31, 1].mean() > p3[8, 1] and p3[30, 2] > p3[0, 2] and p3[45, 0] > p3[36, 0]
    assert f.camera.position[2] > 5, "the camera sits in front of the face"
    # EG3D label: cam2world then normalised intrinsics, camera 2.7 from (0, 0, 0.2)
    c2w = f.eg3d_label[:16].reshape(4, 4)
    assert np.linalg.norm(c2w[:3, 3] - [0, 0, 0.2]) == pytest.approx(2.7, abs=1e-4)
    assert c2w[2, 3] > 2.0


def test_aligned_crop_and_masks(face_client, astronaut):
    f = face_client.analyze(astronaut, AnalyzeOptions(crop_size=256)).faces[0]
    assert f.aligned_crop.shape == (256, 256, 3) and f.aligned_crop.dtype == np.uint8
    # the crop transform maps the eyes to a level line in the upper half, centred
    eyes = np.c_[f.landmarks_5[:2], np.ones(2)] @ f.crop_transform.T
    assert abs(eyes[0, 1] - eyes[1, 1]) < 2.0
    assert 0.35 * 256 < eyes.mean(0)[0] < 0.65 * 256 and eyes[:, 1].mean() < 0.6 * 256
    face_px = (f.face_mask > 0).sum()
    head_px = (f.head_mask > 0).sum()
    assert f.face_mask.shape == f.head_mask.shape == (512, 512)
    assert 0 < face_px < head_px < 4 * face_px, "the head (with hair) is larger than the face, not the photo"
    assert ((f.face_mask > 0) & (f.head_mask == 0)).sum() == 0
    assert f.crop_head_mask.shape == (256, 256)
    ffhq = face_client.analyze(astronaut, AnalyzeOptions(crop_size=256, crop_style="ffhq")).faces[0]
    ffhq_eyes = np.c_[ffhq.landmarks_5[:2], np.ones(2)] @ ffhq.crop_transform.T
    assert np.linalg.norm(ffhq_eyes[1] - ffhq_eyes[0]) > np.linalg.norm(eyes[1] - eyes[0]), \
        "the FFHQ framing is tighter than the whole-head framing"


def test_embedding_robust_to_flip_rescale_and_jpeg(face_client, astronaut, hopper):
    ref = face_client.analyze(astronaut).faces[0].embedding
    assert ref.shape == (128,) and np.linalg.norm(ref) == pytest.approx(1.0, abs=1e-5)
    other = face_client.analyze(hopper).faces[0].embedding
    d_other = np.linalg.norm(ref - other)
    variants = {
        "flip": np.ascontiguousarray(astronaut[:, ::-1]),
        "rescale": np.array(Image.fromarray(astronaut).resize((768, 768), Image.BICUBIC)),
        "jpeg": jpeg_bytes(astronaut, quality=60),
    }
    for name, image in variants.items():
        emb = face_client.analyze(image).faces[0].embedding
        d = np.linalg.norm(ref - emb)
        assert d < 0.5 * d_other, f"{name}: {d:.3f} vs different person {d_other:.3f}"


def test_compare_same_and_different_person(face_client, astronaut, hopper):
    same = face_client.compare(png_bytes(astronaut), jpeg_bytes(astronaut, quality=70))
    diff = face_client.compare(astronaut, hopper)
    assert same.same_person and not diff.same_person
    assert same.metric == "euclidean" and same.threshold == pytest.approx(0.6)
    assert same.distance < 0.3 < diff.distance and same.cosine_similarity > diff.cosine_similarity
    # embeddings from Analyze work as inputs too
    f = face_client.analyze(astronaut).faces[0]
    by_embedding = face_client.compare(f.embedding, hopper, norm_a=f.embedding_norm)
    assert by_embedding.distance == pytest.approx(diff.distance, abs=1e-4)


def test_compare_without_face_is_failed_precondition(face_client, astronaut):
    blank = np.full((128, 128, 3), 127, np.uint8)
    with pytest.raises(FailedPrecondition, match="face"):
        face_client.compare(astronaut, blank)


def test_identity_loss_needs_differentiable_backend(face_client):
    with pytest.raises(FailedPrecondition) as info:
        face_client.identity_loss(np.zeros((1, 3, 64, 64), np.float32), np.ones(128, np.float32) / np.sqrt(128))
    assert "--recognizer insightface" in info.value.message and info.value.reason == "BACKEND_NOT_DIFFERENTIABLE"


def test_no_face_is_an_empty_list(face_client):
    rng = np.random.default_rng(0)
    assert face_client.analyze(rng.integers(0, 255, (200, 300, 3), dtype=np.uint8)).faces == []
    assert face_client.analyze(np.zeros((64, 64, 3), np.uint8)).faces == []


def test_many_faces_largest_first(face_client, astronaut, hopper):
    a = astronaut[40:240, 120:320]
    h = np.array(Image.fromarray(hopper).resize((300, 300 * hopper.shape[0] // hopper.shape[1])))[:300]
    canvas = np.full((460, 900, 3), 230, np.uint8)
    canvas[20:220, 20:220] = a
    canvas[240:440, 20:220] = a[:, ::-1]
    canvas[20:320, 300:600] = h
    canvas[100:300, 650:850] = a
    result = face_client.analyze(canvas, AnalyzeOptions(skip_masks=True))
    assert len(result.faces) == 4
    areas = [(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]) for f in result.faces]
    assert areas == sorted(areas, reverse=True)
    assert 300 <= result.faces[0].box[0] < 600, "Hopper's face is the largest"
    assert len(face_client.analyze(canvas, AnalyzeOptions(max_faces=2, skip_masks=True)).faces) == 2


@pytest.mark.parametrize("variant", ["grayscale", "rgba", "16bit", "cmyk", "palette", "exif_rotated"])
def test_image_formats_give_the_same_face(face_client, astronaut, variant):
    ref = face_client.analyze(astronaut, AnalyzeOptions(skip_masks=True, skip_crop=True)).faces[0]
    im = Image.fromarray(astronaut)
    buf = io.BytesIO()
    if variant == "grayscale":
        im.convert("L").save(buf, "PNG")
    elif variant == "rgba":
        rgba = im.convert("RGBA")
        rgba.putalpha(255)
        rgba.save(buf, "PNG")
    elif variant == "16bit":
        gray16 = (np.asarray(im.convert("L"), np.uint16) * 257)
        Image.fromarray(gray16).save(buf, "PNG")
    elif variant == "cmyk":
        im.convert("CMYK").save(buf, "JPEG", quality=95)
    elif variant == "palette":
        im.convert("P", palette=Image.ADAPTIVE, colors=256).save(buf, "PNG")
    elif variant == "exif_rotated":
        # pixels stored rotated 90 deg clockwise, EXIF orientation 8 says "rotate back"
        exif = Image.Exif()
        exif[0x0112] = 8
        im.transpose(Image.Transpose.ROTATE_270).save(buf, "JPEG", quality=95, exif=exif.tobytes())
    result = face_client.analyze(buf.getvalue(), AnalyzeOptions(skip_masks=True, skip_crop=True))
    assert (result.image_width, result.image_height) == (512, 512)
    assert len(result.faces) == 1
    np.testing.assert_allclose(result.faces[0].box, ref.box, atol=12)
    np.testing.assert_allclose(result.faces[0].landmarks_68, ref.landmarks_68, atol=6)


@pytest.mark.parametrize("data,reason", [
    (b"", "IMAGE_EMPTY"),
    (b"definitely not an image", "IMAGE_UNDECODABLE"),
    ("truncated_png", "IMAGE_TRUNCATED"),
    ("truncated_jpeg", "IMAGE_TRUNCATED"),
    ("huge", "IMAGE_TOO_LARGE"),
])
def test_bad_images_are_invalid_argument(face_client, astronaut, data, reason):
    if data == "truncated_png":
        data = png_bytes(astronaut)[:5000]
    elif data == "truncated_jpeg":
        data = jpeg_bytes(astronaut)[:4000]
    elif data == "huge":  # a 9000x9000 PNG header: refused from its size before any pixel is decoded
        data = png_bytes(np.zeros((9000, 9000), np.uint8), compress_level=9)
    with pytest.raises(InvalidArgument) as info:
        face_client.analyze(data)
    assert info.value.reason == reason
    assert info.value.violations and info.value.violations[0].field.startswith("image")


def test_bad_pixels_and_options_name_the_field(face_client, astronaut):
    cases = [
        (np.zeros((0, 10, 3), np.uint8), {}, "image"),
        (np.full((3, 32, 32), np.nan, np.float32), {}, "image"),
        (np.full((3, 32, 32), 2.0, np.float32), {}, "image"),
        (np.zeros((32, 32, 4), np.uint8), {}, "image"),
        (astronaut, {"crop_size": 10}, "options.crop_size"),
        (astronaut, {"upsample": 7}, "options.upsample"),
        (astronaut, {"max_faces": -1}, "options.max_faces"),
    ]
    for image, opts, field in cases:
        with pytest.raises(InvalidArgument) as info:
            face_client.analyze(image, AnalyzeOptions(**opts))
        violation = info.value.violations[0]
        assert violation.field.startswith(field), (opts, info.value.violations)
        assert violation.description


def test_describe(face_client):
    d = face_client.describe()
    assert d.identity_backend == "dlib" and d.embedding_dim == 128 and not d.identity_loss_available
    roles = {m.role for m in d.models}
    assert {"detector", "landmarks_68", "recognizer"} <= roles
    assert all(len(m.sha256) == 16 for m in d.models if m.role != "detector")
