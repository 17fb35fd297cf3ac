"""The `mediapipe` face detector (BlazeFace + MediaPipe's 478-point face mesh with irises) on real photos,
in-process and as a `headforge serve face --detector mediapipe` process on loopback.

Figures (pixels; mean distance of the iBUG 27-67 points read off the mesh to dlib's 68 on the same photo,
`pytest -s` prints them): astronaut 1.57 (eyes 1.14), Grace Hopper 2.62 (eyes 1.74). The map's choice
among neighbouring mesh points was made on these two photos (services/core/face_mesh.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from services.common.errors import FailedPrecondition, InvalidArgument
from services.core import face_mesh as mp
from services.face.types import AnalyzeOptions
from tests.conftest import png_bytes

FAST = AnalyzeOptions(skip_crop=True, skip_masks=True)


@pytest.fixture(scope="module")
def mp_service():
    from services.face.config import FaceConfig
    from services.face.service import FaceService

    return FaceService(FaceConfig(detector="mediapipe"))


@pytest.fixture(scope="module")
def dlib_service():
    from services.face.config import FaceConfig
    from services.face.service import FaceService

    return FaceService(FaceConfig(detector="dlib"))


@pytest.fixture(scope="module")
def mp_server(tmp_path_factory):
    from services.common.process import ServiceProcess

    server = ServiceProcess(["face", "--port", "0", "--detector", "mediapipe"],
                            tmp_path_factory.mktemp("logs") / "face-mediapipe.log")
    yield server
    server.stop()


@pytest.fixture(params=["inprocess", "grpc"])
def mp_client(request, mp_service):
    from services.face.client import GrpcFaceClient
    from services.face.service import InProcessFaceClient

    if request.param == "inprocess":
        yield InProcessFaceClient(mp_service)
        return
    client = GrpcFaceClient(request.getfixturevalue("mp_server").address, timeout_s=60)
    client.wait_ready()
    yield client
    client.close()


@pytest.fixture(scope="module", params=["astronaut", "hopper"])
def photo(request):
    return request.getfixturevalue(request.param)


def test_478_points_lie_on_the_face_in_image_order(mp_client, photo):
    result = mp_client.analyze(png_bytes(photo), FAST)
    assert len(result.faces) == 1
    f = result.faces[0]
    p = f.landmarks_478
    assert p.shape == (478, 2) and f.landmarks_3d_478.shape == (478, 3) and f.landmarks_68.shape == (68, 2)
    x0, y0, x1, y1 = f.box
    m = 0.15 * (x1 - x0)  # the mesh reaches the forehead, a little above BlazeFace's box
    assert ((p[:, 0] > x0 - m) & (p[:, 0] < x1 + m) & (p[:, 1] > y0 - m) & (p[:, 1] < y1 + m)).all()
    # image left/right: MediaPipe's "right" eye (33, 133, iris 468) is the subject's right = image left
    right_eye, left_eye = p[[33, 133]].mean(0), p[[362, 263]].mean(0)
    assert right_eye[0] < p[mp.NOSE_TIP, 0] < left_eye[0]
    assert p[33, 0] < p[133, 0] < p[362, 0] < p[263, 0], "outer/inner eye corners, image left to right"
    assert p[61, 0] < p[0, 0] < p[291, 0] and p[234, 0] < p[152, 0] < p[454, 0]
    assert p[468, 0] < p[473, 0]
    for iris, eye in ((mp.RIGHT_IRIS, (33, 133)), (mp.LEFT_IRIS, (362, 263))):
        assert p[eye[0], 0] < p[iris[0], 0] < p[eye[1], 0], "the pupil between its eye's corners"
        radius = np.linalg.norm(p[list(iris[1:])] - p[iris[0]], axis=1)
        assert 0.05 < radius.mean() / np.linalg.norm(left_eye - right_eye) < 0.2
    # top to bottom: forehead, brows, eyes, nose tip, mouth, chin
    assert p[10, 1] < p[105, 1] < right_eye[1] < p[mp.NOSE_TIP, 1] < p[[13, 14]].mean(0)[1] < p[152, 1]
    # the 68 and 5 are read off the 478
    np.testing.assert_allclose(f.landmarks_68, mp.ibug68_from_478(p), atol=1e-3)
    np.testing.assert_allclose(f.landmarks_5, mp.five_from_478(p), atol=1e-3)
    assert f.embedding.shape == (128,), "the recogniser stays dlib"


def test_eye_nose_mouth_points_are_near_dlibs(mp_service, dlib_service, photo, request):
    mine = mp_service.analyze(photo, FAST).faces[0].landmarks_68
    dlib = dlib_service.analyze(photo, FAST).faces[0].landmarks_68
    dist = np.linalg.norm(mine - dlib, axis=1)
    iod = np.linalg.norm(dlib[36:42].mean(0) - dlib[42:48].mean(0))
    print(f"\n{request.node.callspec.id}: mean distance to dlib's 68, eyes/nose/mouth {dist[27:].mean():.2f} px "
          f"(eyes {dist[36:48].mean():.2f}, nose {dist[27:36].mean():.2f}, mouth {dist[48:].mean():.2f}; "
          f"jaw {dist[:17].mean():.2f}, brows {dist[17:27].mean():.2f}); eye distance {iod:.1f} px")
    assert dist[27:].mean() < 0.05 * iod and dist[36:48].mean() < 0.03 * iod
    assert dist.max() < 0.2 * iod


def test_dlib_identity_and_pose_from_the_mesh_68(mp_service, dlib_service, astronaut, hopper):
    """dlib's descriptor computed at the mesh's 68 is the one at dlib's own 68 (same person by far), still
    tells the two people apart, and the head pose agrees."""
    raw = lambda f: f.embedding * f.embedding_norm  # noqa: E731 - dlib's distances are on raw descriptors
    mine = [mp_service.analyze(p, FAST).faces[0] for p in (astronaut, hopper)]
    dlib = [dlib_service.analyze(p, FAST).faces[0] for p in (astronaut, hopper)]
    for m, d in zip(mine, dlib):
        assert np.linalg.norm(raw(m) - raw(d)) < 0.2
        assert abs(m.pose.yaw - d.pose.yaw) < 5 and abs(m.pose.pitch - d.pose.pitch) < 5
        assert abs(m.pose.roll - d.pose.roll) < 5
    assert np.linalg.norm(raw(mine[0]) - raw(mine[1])) > 0.6


def test_3d_points_in_the_head_frame(mp_client, photo):
    f = mp_client.analyze(photo, FAST).faces[0]
    p3 = f.landmarks_3d_478
    # the nose tip (MediaPipe's points 1 and 4, pronasale and just above it) is the front-most point
    assert int(np.argmax(p3[:, 2])) in (1, 4)
    assert p3[mp.NOSE_TIP, 2] > p3[[33, 263], 2].max() + 0.2 > p3[[234, 454], 2].max() + 0.4
    # +Y up, the subject's left (image right) at +X; head units: eye centres ~6-7 cm = 0.6-0.7 apart
    assert p3[10, 1] > p3[mp.NOSE_TIP, 1] > p3[152, 1] and p3[263, 0] > p3[33, 0]
    assert 0.5 < np.linalg.norm(p3[list(mp.LEFT_IRIS)].mean(0) - p3[list(mp.RIGHT_IRIS)].mean(0)) < 0.8
    # seen through the photo's camera they land on the 2D points; the mesh's 68 agree with the template fit
    np.testing.assert_allclose(f.camera.project(p3), f.landmarks_478, atol=0.05)
    assert np.linalg.norm(mp.ibug68_from_478(p3)[27:] - f.landmarks_3d_68[27:], axis=1).mean() < 0.1


def test_grpc_gives_the_in_process_answer(mp_service, mp_server, astronaut):
    from services.face.client import GrpcFaceClient

    mine = mp_service.analyze(astronaut, FAST).faces[0]
    client = GrpcFaceClient(mp_server.address, timeout_s=60)
    try:
        client.wait_ready()
        remote = client.analyze(astronaut, FAST).faces[0]
        desc = client.describe()
    finally:
        client.close()
    np.testing.assert_allclose(remote.landmarks_478, mine.landmarks_478, atol=1e-3)  # float32 on the wire
    np.testing.assert_allclose(remote.landmarks_3d_478, mine.landmarks_3d_478, atol=1e-5)
    names = {m.name: m for m in desc.models}
    assert {"face_detection_front.tflite", "face_detection_back.tflite", "face_landmark.tflite",
            "iris_landmark.tflite"} <= set(names)
    assert all(len(names[n].sha256) == 16 for n in names if n.endswith(".tflite"))
    assert desc.identity_backend == "dlib" and desc.embedding_dim == 128


def test_upsample_finds_a_small_face_in_a_large_photo(mp_service, astronaut):
    """The astronaut at 380 px (a face of ~70 px) in a 4000 x 3000 photo: the whole-photo pass misses it,
    one tile level finds it, with the points of the full-size photo scaled down."""
    from PIL import Image

    side, at = 380, np.array([1500, 900])
    big = np.full((3000, 4000, 3), 120, np.uint8)
    big[at[1]:at[1] + side, at[0]:at[0] + side] = np.array(Image.fromarray(astronaut).resize((side, side)))
    opts = lambda up: AnalyzeOptions(skip_embedding=True, skip_crop=True, skip_masks=True, upsample=up)  # noqa: E731
    assert mp_service.analyze(big, opts(0)).faces == []
    (face,) = mp_service.analyze(big, opts(1)).faces
    ref = mp_service.analyze(astronaut, opts(0)).faces[0].landmarks_478 * (side / 512) + at
    iod = np.linalg.norm(ref[468] - ref[473])
    assert np.linalg.norm(face.landmarks_478 - ref, axis=1).mean() < 0.1 * iod
    big[at[1]:at[1] + 512, at[0]:at[0] + 512] = astronaut
    assert len(mp_service.analyze(big, opts(2)).faces) == 1, "BlazeFace's false positive on the badge is dropped"


def test_dlib_faces_have_no_478_points(dlib_service, astronaut):
    assert dlib_service.analyze(astronaut, FAST).faces[0].landmarks_478 is None


def _outcome(client, image):
    try:
        return ("faces", len(client.analyze(image, FAST).faces))
    except InvalidArgument as e:
        return ("invalid", e.violations[0].field)


def test_bad_input_gets_dlibs_statuses(mp_client, dlib_service, astronaut, request):
    """The dlib service over the same transport answers every case the same way."""
    from services.face.client import GrpcFaceClient
    from services.face.service import InProcessFaceClient

    if request.node.callspec.params["mp_client"] == "grpc":
        dlib = GrpcFaceClient(request.getfixturevalue("face_server").address, timeout_s=60)
        dlib.wait_ready()
        request.addfinalizer(dlib.close)
    else:
        dlib = InProcessFaceClient(dlib_service)
    rng = np.random.default_rng(0)
    cases = [rng.integers(0, 255, (200, 300, 3), dtype=np.uint8), np.zeros((64, 64, 3), np.uint8),
             np.zeros((1, 1, 3), np.uint8), np.full((2, 700, 3), 200, np.uint8), astronaut[:12, :12],
             np.zeros((0, 10, 3), np.uint8), np.zeros((32, 32, 4), np.uint8), b"definitely not an image"]
    for image in cases:
        assert _outcome(mp_client, image) == _outcome(dlib, image)
    assert _outcome(mp_client, np.zeros((64, 64, 3), np.uint8)) == ("faces", 0)
    with pytest.raises(FailedPrecondition, match="face"):
        mp_client.compare(astronaut, np.full((128, 128, 3), 127, np.uint8))


def test_missing_model_file_is_failed_precondition():
    from services.face.backends.tflite_models import TFLiteModel

    with pytest.raises(FailedPrecondition) as info:
        TFLiteModel("no_such_model.tflite", "detector")
    assert info.value.reason == "MODELS_MISSING" and "no_such_model.tflite" in info.value.message


def test_auto_detector_is_mediapipe_with_dlibs_identity(face_service, dlib_service, astronaut):
    """The default detector (auto) gives MediaPipe's 478 points, and dlib's descriptor aligned with dlib's
    own 68 points: the embedding is dlib's (0.036 apart on the astronaut, against 0.087 at the mesh's 68)."""
    assert face_service.config.detector == "auto"
    mine = face_service.analyze(astronaut, FAST).faces[0]
    dlib = dlib_service.analyze(astronaut, FAST).faces[0]
    assert mine.landmarks_478 is not None and mine.landmarks_3d_478.shape == (478, 3)
    raw = lambda f: f.embedding * f.embedding_norm  # noqa: E731
    assert np.linalg.norm(raw(mine) - raw(dlib)) < 0.06
    roles = {m.name for m in face_service.analyze(astronaut, FAST).models}
    assert {"face_landmark.tflite", "shape_predictor_68_face_landmarks.dat"} <= roles


def test_auto_detector_falls_back_to_dlib(dlib_service, astronaut):
    """When MediaPipe finds no face, dlib's detector and 68 points are used (no 478 points). No photo was
    found where MediaPipe misses a face dlib finds (cut-off, rotated, occluded, dark, blurred, tight crops of
    the astronaut and Grace Hopper: MediaPipe found every face dlib found), so MediaPipe's detect is replaced
    by one that finds nothing: a stand-in, the only one in this module."""
    from services.face.backends.auto import AutoFace
    from services.face.config import FaceConfig
    from services.face.service import FaceService

    service = FaceService(FaceConfig(detector="auto"))
    assert isinstance(service.detector, AutoFace)
    service.detector.mediapipe.detect = lambda image, upsample: []
    face = service.analyze(astronaut, FAST).faces[0]
    ref = dlib_service.analyze(astronaut, FAST).faces[0]
    assert face.landmarks_478 is None and face.landmarks_3d_478 is None
    np.testing.assert_allclose(face.landmarks_68, ref.landmarks_68)
    np.testing.assert_allclose(face.embedding, ref.embedding, atol=1e-6)
