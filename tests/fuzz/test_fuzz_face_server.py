"""Hypothesis fuzzing of a running face service (`headforge serve face` on loopback).

Garbage and near-valid requests (random bytes, mutated PNG/JPEG/BMP/GIF/TIFF/WebP files, malformed
tensors, out-of-range options, odd Compare/IdentityLoss requests) must each end with OK or a deliberate
status (INVALID_ARGUMENT, FAILED_PRECONDITION, RESOURCE_EXHAUSTED) that carries headforge.v1.ErrorInfo,
never UNKNOWN, INTERNAL or UNAVAILABLE; and afterwards the server still answers health checks and
analyses the astronaut correctly. Where an oracle exists the verdict is checked too: encoded bytes get
exactly the verdict of the in-process decoder, options exactly the verdict of the documented ranges.

Examples are derandomized (the same inputs on every run) and bounded so the file runs in well under a
minute on two cores.
"""

from __future__ import annotations

import io
import math
import struct
import time
import zlib

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from headforge.v1 import common_pb2, face_pb2, face_pb2_grpc
from services.common.client import RetryPolicy
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.images import DEFAULT_MAX_IMAGE_PIXELS, decode_image
from services.face.client import GrpcFaceClient
from tests.conftest import jpeg_bytes, png_bytes
from tests.fuzz.protofuzz import (RSS_GROWTH_LIMIT_MB, error_info, incident_log, rss_mb, scaled, summary,
                                  write_figures)

DType = common_pb2.Tensor.DType
Code = grpc.StatusCode
DELIBERATE = {Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION, Code.RESOURCE_EXHAUSTED}
MAX_PIXELS = DEFAULT_MAX_IMAGE_PIXELS  # the server's default --max-image-pixels
IMAGE_REASONS = {"IMAGE_EMPTY", "IMAGE_UNDECODABLE", "IMAGE_TRUNCATED", "IMAGE_TOO_LARGE"}
INT32 = st.integers(-(2**31), 2**31 - 1)
FLOAT32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
# Pillow warns (and carries on) about the broken TIFF/EXIF metadata the mutations produce: expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")


def fuzz_settings(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


OUTCOMES: dict[tuple[str, str], int] = {}  # (fuzz test, status or known bug) -> count, for the floors below
# the gRPC fuzz tests' examples in `make test` (150 + 200 + 160 + 50 + 80 + 80 + 40); `make fuzz` scales them
# (by 1.1: at 10,000 the tests send about 5% fewer than asked, Hypothesis running out of distinct examples)
GRPC_SHARE = 760


def _count(test: str, outcome: str) -> None:
    OUTCOMES[test, outcome] = OUTCOMES.get((test, outcome), 0) + 1


def outcomes(test: str) -> dict[str, int]:
    return {k[1]: v for k, v in OUTCOMES.items() if k[0] == test}


# Calling the server ----------------------------------------------------------------------------------

class Caller:
    """Calls the server through a raw stub and enforces the status contract on every answer."""

    def __init__(self, server):
        self.server = server
        self.channel = grpc.insecure_channel(server.address, options=[
            ("grpc.enable_http_proxy", 0), ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20)])
        self.stub = face_pb2_grpc.FaceServiceStub(self.channel)

    def __call__(self, method: str, request, field_prefixes: tuple[str, ...], test: str = ""):
        """(code, reply or None, ErrorInfo or None); fails the test on an undeliberate status."""
        try:
            reply = getattr(self.stub, method)(request, timeout=60)
            _count(test, "OK")
            return Code.OK, reply, None
        except grpc.RpcError as err:
            code, details = err.code(), err.details()
            if code not in DELIBERATE:
                log = incident_log(self.server, details) if code == Code.INTERNAL else ""
                pytest.fail(f"{method} ended {code.name}: {details}\nrequest: {summary(request)}\n"
                            f"server log:\n{log}")
            _count(test, code.name)
            info = error_info(err)
            if code != Code.RESOURCE_EXHAUSTED:  # the transport's own size refusal carries no details
                assert info is not None and info.reason, f"{code.name} without ErrorInfo: {details}"
            if code == Code.INVALID_ARGUMENT:
                fields = [v.field for v in info.field_violations]
                assert fields and all(f.startswith(field_prefixes) for f in fields), (fields, details)
            return code, None, info

    def close(self):
        self.channel.close()


def assert_server_healthy(caller: Caller, astronaut_png: bytes) -> None:
    health = health_pb2_grpc.HealthStub(caller.channel)
    for service in ("", "headforge.v1.FaceService"):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reply = caller.stub.Analyze(face_pb2.AnalyzeRequest(
        image=common_pb2.ImageInput(encoded=common_pb2.EncodedImage(data=astronaut_png))), timeout=60)
    assert (reply.image_width, reply.image_height) == (512, 512) and len(reply.faces) == 1
    f = reply.faces[0]
    # dlib's box is (175, 76, 266, 167), MediaPipe's (the default auto detector) about (175, 75, 276, 177)
    np.testing.assert_allclose([f.box.x0, f.box.y0, f.box.x1, f.box.y1], [175, 76, 271, 172], atol=8)
    assert len(f.landmarks_68) == 68 and f.score > 0.3 and len(f.embedding.data) == 128 * 4
    assert f.aligned_crop.data and f.head_mask.data


@pytest.fixture(scope="module")
def caller(face_server):
    c = Caller(face_server)
    rss_before, started = rss_mb(face_server.proc.pid), time.monotonic()
    yield c
    c.close()
    statuses: dict[str, int] = {}
    for (_, outcome), n in OUTCOMES.items():
        if outcome in Code.__members__:    # the outcomes also count other things (faces found)
            statuses[outcome] = statuses.get(outcome, 0) + n
    after = rss_mb(face_server.proc.pid)
    write_figures("face", sum(statuses.values()), statuses, rss_before, after, time.monotonic() - started)
    assert after - rss_before < RSS_GROWTH_LIMIT_MB, (rss_before, after)


@pytest.fixture(scope="module")
def client(face_server):
    c = GrpcFaceClient(face_server.address, timeout_s=60, retry=RetryPolicy(max_attempts=1))
    c.wait_ready()
    yield c
    c.close()


@pytest.fixture(scope="module")
def astronaut_png(astronaut) -> bytes:
    return png_bytes(astronaut)


@pytest.fixture(scope="module")
def seeds(astronaut) -> dict[str, bytes]:
    """Small valid files to mutate: the astronaut at 128 px (too small for the detector: fast) in every
    supported format, and at 192 px (one detectable face: the whole pipeline runs)."""
    small = np.array(Image.fromarray(astronaut).resize((128, 128), Image.BILINEAR))
    face = np.array(Image.fromarray(astronaut).resize((192, 192), Image.BILINEAR))
    out = {"png": png_bytes(small), "jpeg": jpeg_bytes(small, 80), "face_jpeg": jpeg_bytes(face, 85),
           "face_png": png_bytes(face)}
    for fmt, kw in [("BMP", {}), ("GIF", {}), ("TIFF", {}), ("WEBP", {"quality": 70}),
                    ("PNG", {"bits": 4}), ("TIFF", {"compression": "tiff_lzw"})]:
        buf = io.BytesIO()
        im = Image.fromarray(small)
        (im.convert("P") if fmt == "GIF" or kw.get("bits") else im).save(buf, fmt, **kw)
        out[f"{fmt.lower()}{len(out)}"] = buf.getvalue()
    rgba = Image.fromarray(small).convert("RGBA")
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    out["png_rgba"] = buf.getvalue()
    return out


def _analyze_request(data: bytes, options: face_pb2.AnalyzeOptions | None = None) -> face_pb2.AnalyzeRequest:
    return face_pb2.AnalyzeRequest(image=common_pb2.ImageInput(encoded=common_pb2.EncodedImage(data=data)),
                                   options=options)


# Strategies ------------------------------------------------------------------------------------------

MAGIC = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"\xff\xd8\xff\xe1", b"GIF89a", b"GIF87a", b"BM",
         b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"\x00\x00\x01\x00", b"P6\n",
         b"%!PS-Adobe-3.0", b"\x00\x00\x00\x0cjP  ", b"8BPS", b"qoif", b"\x0a\x05\x01\x08"]

random_bytes = st.one_of(
    st.binary(max_size=2048),
    st.tuples(st.sampled_from(MAGIC), st.binary(max_size=1024)).map(lambda t: t[0] + t[1]),
)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


@st.composite
def mutated_file(draw, seeds: dict[str, bytes]):
    # half the time a file with a face, so that mutations which still decode run the whole pipeline
    name = draw(mostly(st.sampled_from(["face_jpeg", "face_png"]), st.sampled_from(sorted(seeds)), odds=1))
    data = bytearray(seeds[name])
    steps = []
    for _ in range(draw(st.integers(1, 3))):
        n = len(data)
        op = draw(st.sampled_from(["flip", "byte", "header", "int", "truncate", "splice", "insert", "delete",
                                   "repeat", "png_size"]))
        if n == 0:
            op = "insert"
        if op == "flip":
            pos, bit = draw(st.integers(0, n - 1)), draw(st.integers(0, 7))
            data[pos] ^= 1 << bit
        elif op == "byte":
            data[draw(st.integers(0, n - 1))] = draw(st.integers(0, 255))
        elif op == "header":  # corrupt the first bytes, where formats keep magic, sizes and modes
            for _ in range(draw(st.integers(1, 4))):
                data[draw(st.integers(0, min(n, 64) - 1))] = draw(st.integers(0, 255))
        elif op == "int":  # an interesting integer over a header field (widths, heights, offsets, counts)
            pos = draw(st.integers(0, max(0, min(n, 128) - 4)))
            value = draw(st.sampled_from([0, 1, 2, 3, 255, 256, 4000, 6000, 32767, 65535, 2**31 - 1, 2**32 - 1]))
            fmt = draw(st.sampled_from(["<H", ">H", "<I", ">I"]))
            packed = struct.pack(fmt, value & (0xFFFF if fmt.endswith("H") else 0xFFFFFFFF))
            data[pos:pos + len(packed)] = packed
        elif op == "truncate":
            del data[draw(st.integers(0, n)):]
        elif op == "splice":
            other = seeds[draw(st.sampled_from(sorted(seeds)))]
            data = data[:draw(st.integers(0, n))] + other[draw(st.integers(0, len(other))):]
        elif op == "insert":
            pos = draw(st.integers(0, n))
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            i = draw(st.integers(0, n - 1))
            del data[i:i + draw(st.integers(1, 256))]
        elif op == "repeat":
            i = draw(st.integers(0, n - 1))
            j = draw(st.integers(i, min(n, i + 512)))
            data[j:j] = data[i:j] * draw(st.integers(1, 4))
        elif op == "png_size" and data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
            # a consistent (CRC-correct) IHDR with another size: the decoder believes it
            w = draw(st.one_of(st.integers(0, 64), st.sampled_from([1, 2, 3, 4000, 6000, 2**31 - 1])))
            h = draw(st.one_of(st.integers(0, 64), st.sampled_from([1, 2, 3, 4000, 6000, 2**31 - 1])))
            ihdr = struct.pack(">II", w, h) + bytes(data[24:29])
            data[8:33] = _png_chunk(b"IHDR", ihdr)
        steps.append(op)
    return name, steps, bytes(data)


_NP = {DType.FLOAT32: "<f4", DType.FLOAT16: "<f2", DType.UINT8: "u1", DType.INT32: "<i4", DType.INT64: "<i8"}


def _np_dtype(value: int):
    return np.dtype(_NP[value]) if value in _NP else None


@st.composite
def mostly(draw, valid, anything, odds: int = 6):
    """A draw from `valid` `odds` times in odds + 1, else from `anything`."""
    return draw(anything) if draw(st.integers(0, odds)) == 0 else draw(valid)


dtype_values = mostly(st.sampled_from(list(DType.values())),
                      st.one_of(st.integers(-3, 12), st.sampled_from([2**31 - 1, -(2**31), 1000])))
dims = st.one_of(st.integers(0, 8), st.integers(-4, -1), st.integers(9, 6000),
                 st.sampled_from([2**31, 2**32 + 3, 2**62, 2**63 - 1, -(2**63), 1 << 20]))


@st.composite
def random_tensor(draw):
    """Any dtype value, any shape, data that fits the shape, nearly fits it or is random."""
    dtype = draw(dtype_values)
    shape = draw(st.lists(dims, max_size=5))
    np_dtype = _np_dtype(dtype)
    count = math.prod(shape) if shape else 1
    exact = np_dtype.itemsize * count if np_dtype is not None and count >= 0 else None
    how = draw(st.sampled_from(["exact", "off_by", "random"]))
    if how == "exact" and exact is not None and exact <= 1 << 16:
        data = draw(st.binary(min_size=exact, max_size=exact))
    elif how == "off_by" and exact is not None and exact <= 1 << 16:
        data = bytes(max(0, exact + draw(st.sampled_from([-1, 1, -8, 8]))))
    else:
        data = draw(st.binary(max_size=256))
    return common_pb2.Tensor(dtype=dtype, shape=shape, data=data)


@st.composite
def pixel_tensor(draw):
    """Mostly well-formed pixel tensors of every layout and size class, with odd values."""
    kind = draw(st.sampled_from(["uint8_hwc", "float_chw", "float_1chw", "thin"]))
    small = st.integers(0, 48)
    if kind == "thin":  # a strip: one side 1..3 pixels, the other up to 6000
        short, long = draw(st.integers(1, 3)), draw(st.integers(1, 6000))
        h, w = (short, long) if draw(st.booleans()) else (long, short)
        shape = [h, w, 3]
        dtype = DType.UINT8
    elif kind == "uint8_hwc":
        shape = [draw(small), draw(small), 3]
        dtype = DType.UINT8
    else:
        dtype = draw(st.sampled_from([DType.FLOAT32, DType.FLOAT16]))
        shape = [3, draw(small), draw(small)]
        if kind == "float_1chw":
            shape = [draw(st.sampled_from([1, 1, 1, 2])), *shape]
    np_dtype = _np_dtype(dtype)
    n = math.prod(shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = draw(st.sampled_from(["unit", "bytes", "out_of_range", "special"]))
    if np_dtype.kind == "u" or values == "bytes":
        data = rng.integers(0, 256, n * np_dtype.itemsize, dtype=np.uint8).tobytes()
    else:
        a = rng.random(n)
        if values == "out_of_range":
            a = a * 3 - 1
        elif values == "special" and n:
            a[rng.integers(0, n)] = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1.0005, -0.0005, 1e30]))
        with np.errstate(over="ignore"):  # 1e30 as float16 is inf: one more odd value
            data = a.astype(np_dtype).tobytes()
    return common_pb2.Tensor(dtype=dtype, shape=shape, data=data)


@st.composite
def analyze_options(draw):
    """Each field in its documented range about 6 times in 7, anything else otherwise."""
    msg = face_pb2.AnalyzeOptions(
        max_faces=draw(mostly(st.integers(0, 3), INT32)),
        min_face_size=draw(mostly(st.floats(0, 120, width=32), FLOAT32)),
        skip_embedding=draw(st.booleans()), skip_crop=draw(st.booleans()), skip_masks=draw(st.booleans()),
        crop_size=draw(mostly(st.sampled_from([0, 64, 65, 100, 256, 511, 1024, 2048]),
                              st.one_of(st.sampled_from([-1, 1, 63, 2049]), INT32))),
        crop_style=draw(mostly(st.sampled_from([0, 1, 2]), st.one_of(st.integers(-3, 10), INT32))))
    if draw(st.booleans()):
        msg.upsample = draw(mostly(st.integers(-1, 2), st.one_of(st.integers(-3, 5), INT32)))
    if draw(st.booleans()):
        msg.min_score = draw(mostly(st.floats(-2, 3, width=32), FLOAT32))
    return msg


def invalid_option_fields(o: face_pb2.AnalyzeOptions) -> set[str]:
    """The documented ranges of AnalyzeOptions (face.proto): the fields this message breaks."""
    bad = set()
    if o.max_faces < 0:
        bad.add("max_faces")
    if not (math.isfinite(o.min_face_size) and o.min_face_size >= 0):
        bad.add("min_face_size")
    if o.HasField("upsample") and not -1 <= o.upsample <= 2:
        bad.add("upsample")
    if o.HasField("min_score") and not math.isfinite(o.min_score):
        bad.add("min_score")
    if o.crop_size != 0 and not 64 <= o.crop_size <= 2048:
        bad.add("crop_size")
    if o.crop_style not in (0, 1, 2):
        bad.add("crop_style")
    return bad


# Fuzzing the server ----------------------------------------------------------------------------------
# Each fuzzer ends by checking that the server is still healthy and that its examples did reach the
# interesting outcomes (a fuzzer whose inputs are all refused at the first check tests little).

def test_fuzz_random_bytes(caller, astronaut_png):
    test = "random_bytes"

    @fuzz_settings(scaled(150, GRPC_SHARE, 1.1))
    @given(random_bytes)
    def run(data):
        code, _, info = caller("Analyze", _analyze_request(data), ("image",), test)
        if code == Code.OK:
            decode_image(data, max_pixels=MAX_PIXELS)  # a lucky valid file: the decoder agrees
        else:
            assert code == Code.INVALID_ARGUMENT and info.reason in IMAGE_REASONS, (code, info)

    run()
    assert_server_healthy(caller, astronaut_png)
    assert outcomes(test).get("INVALID_ARGUMENT", 0) >= 100


def test_fuzz_mutated_files_match_the_local_decoder(client, caller, seeds, astronaut_png):
    """GrpcFaceClient on mutated files: the verdict is exactly the in-process decoder's, and a file that
    decodes is analysed (its size reported as decoded)."""
    test = "mutated_files"

    @fuzz_settings(scaled(200, GRPC_SHARE, 1.1))
    @given(mutated_file(seeds))
    def run(case):
        name, steps, data = case
        try:
            expected = decode_image(data, max_pixels=MAX_PIXELS)
        except InvalidArgument as e:
            expected = e
        request = _analyze_request(data)
        try:
            result = client.analyze(data)
        except InvalidArgument as e:
            _count(test, "INVALID_ARGUMENT")
            assert isinstance(expected, InvalidArgument), f"{name} {steps}: server refused a decodable file: {e}"
            assert (e.reason, e.field) == (expected.reason, expected.field), (name, steps, e.message)
            return
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"{name} {steps}: {type(e).__name__} {getattr(e, 'code', '')}: {e}")
        _count(test, "OK")
        if result.faces:
            _count(test, "faces")
        assert isinstance(expected, np.ndarray), f"{name} {steps}: server accepted what the decoder refuses"
        assert (result.image_height, result.image_width) == expected.shape[:2]
        for f in result.faces:
            assert f.landmarks_68.shape == (68, 2) and np.isfinite(f.landmarks_68).all()
            assert f.aligned_crop.shape == (512, 512, 3)
            assert f.head_mask.shape == expected.shape[:2]

    run()
    assert_server_healthy(caller, astronaut_png)
    seen = outcomes(test)
    assert seen.get("OK", 0) >= 20 and seen.get("faces", 0) >= 3 and seen.get("INVALID_ARGUMENT", 0) >= 50, seen


def test_fuzz_pixel_tensors(caller, astronaut_png):
    test = "pixel_tensors"

    @fuzz_settings(scaled(160, GRPC_SHARE, 1.1))
    @given(st.one_of(random_tensor(), pixel_tensor()), st.booleans())
    def run(tensor, fast):
        options = face_pb2.AnalyzeOptions(skip_masks=True, skip_crop=True) if fast else None
        request = face_pb2.AnalyzeRequest(image=common_pb2.ImageInput(pixels=tensor), options=options)
        code, reply, _ = caller("Analyze", request, ("image",), test)
        if code == Code.OK:
            shape = list(tensor.shape)
            h, w = (shape[0], shape[1]) if tensor.dtype == DType.UINT8 else (shape[-2], shape[-1])
            assert (reply.image_height, reply.image_width) == (h, w)
        else:
            assert code in (Code.INVALID_ARGUMENT, Code.INTERNAL), code  # INTERNAL: a known bug only

    run()
    assert_server_healthy(caller, astronaut_png)
    seen = outcomes(test)
    assert seen.get("OK", 0) >= 20 and seen.get("INVALID_ARGUMENT", 0) >= 50, seen


def test_fuzz_analyze_options(caller, seeds, astronaut_png):
    """Options outside their documented range are refused naming the field; all others are honoured."""
    test = "options"
    images = {"face": seeds["face_jpeg"], "no_face": seeds["png"]}

    @fuzz_settings(scaled(50, GRPC_SHARE, 1.1))
    @given(analyze_options(), st.sampled_from(["face", "face", "no_face"]))
    def run(options, which):
        code, reply, info = caller("Analyze", _analyze_request(images[which], options), ("options",), test)
        bad = invalid_option_fields(options)
        if bad:
            assert code == Code.INVALID_ARGUMENT, (bad, options)
            assert info.field_violations[0].field.split(".", 1)[1] in bad, (info, options)
            return
        assert code == Code.OK, (code, info, options)
        if reply.faces:
            _count(test, "faces")
        if options.max_faces:
            assert len(reply.faces) <= options.max_faces
        for f in reply.faces:
            if not options.skip_crop:
                crop = Image.open(io.BytesIO(f.aligned_crop.data))
                assert crop.size == (options.crop_size or 512,) * 2
            assert bool(f.head_mask.data) != options.skip_masks
            assert bool(f.embedding.data) != options.skip_embedding
            assert min(f.box.x1 - f.box.x0, f.box.y1 - f.box.y0) >= (options.min_face_size or 20) - 1e-3

    run()
    assert_server_healthy(caller, astronaut_png)
    seen = outcomes(test)
    assert seen.get("faces", 0) >= 8 and seen.get("INVALID_ARGUMENT", 0) >= 8, seen


@pytest.fixture(scope="module")
def astronaut_embedding(client, seeds) -> tuple[np.ndarray, float]:
    f = client.analyze(seeds["face_jpeg"]).faces[0]
    return f.embedding, f.embedding_norm


def test_fuzz_compare(caller, seeds, astronaut_embedding, astronaut_png):
    test = "compare"
    embedding, norm = astronaut_embedding
    images = st.sampled_from([seeds["face_jpeg"]] * 4 + [seeds["png"], b"", b"\x89PNG\r\n\x1a\n broken"])
    good_embedding = st.builds(
        lambda scale, noise: common_pb2.Tensor(
            dtype=DType.FLOAT32, shape=[128],
            data=(embedding * scale + noise * np.linspace(-1, 1, 128)).astype("<f4").tobytes()),
        st.sampled_from([1.0, 1.0, 1.0, -1.0, 1e-9, 1e30, 0.0]), st.floats(-1, 1))

    @st.composite
    def side(draw):
        kind = draw(st.sampled_from(["image"] * 3 + ["embedding"] * 3 + ["pixels", "tensor", "unset"]))
        s = face_pb2.CompareRequest.Side(face_index=draw(mostly(st.integers(0, 1), INT32)),
                                         embedding_norm=draw(mostly(st.sampled_from([0.0, norm]), FLOAT32)))
        if kind == "image":
            s.image.encoded.data = draw(images)
        elif kind == "pixels":
            s.image.pixels.CopyFrom(draw(pixel_tensor()))
        elif kind == "embedding":
            s.embedding.CopyFrom(draw(good_embedding))
        elif kind == "tensor":
            s.embedding.CopyFrom(draw(random_tensor()))
        return s

    @fuzz_settings(scaled(80, GRPC_SHARE, 1.1))
    @given(side(), side())
    def run(a, b):
        code, reply, _ = caller("Compare", face_pb2.CompareRequest(a=a, b=b), ("a", "b"), test)
        if code == Code.OK:
            assert reply.metric == "euclidean" and reply.threshold == pytest.approx(0.6)
            assert -1.0 <= reply.cosine_similarity <= 1.0 or math.isnan(reply.cosine_similarity)
            if abs(reply.distance - reply.threshold) > 1e-5:  # float32 on the wire
                assert reply.same_person == (reply.distance < reply.threshold)

    run()
    assert_server_healthy(caller, astronaut_png)
    seen = outcomes(test)
    assert seen.get("OK", 0) >= 10 and seen.get("INVALID_ARGUMENT", 0) >= 10, seen
    assert seen.get("FAILED_PRECONDITION", 0) >= 1, seen


def test_fuzz_identity_loss(caller, astronaut_png):
    """The dlib backend has no differentiable recogniser: after validation, FAILED_PRECONDITION."""
    test = "identity_loss"

    @st.composite
    def images(draw):
        if draw(st.booleans()):
            return draw(random_tensor())
        n, h, w = draw(st.integers(0, 3)), draw(st.integers(0, 40)), draw(st.integers(0, 40))
        a = np.random.default_rng(draw(st.integers(0, 2**16))).random((n, 3, h, w))
        return common_pb2.Tensor(dtype=draw(st.sampled_from([DType.FLOAT32, DType.FLOAT16])), shape=[n, 3, h, w],
                                 data=a.astype("<f4" if draw(st.booleans()) else "<f2").tobytes())

    point = st.builds(common_pb2.Point2, x=FLOAT32, y=FLOAT32)
    landmarks = st.lists(st.builds(lambda pts: face_pb2.IdentityLossRequest.Landmarks(points=pts),
                                   st.lists(point, max_size=6)), max_size=3)
    reference = st.one_of(random_tensor(), st.builds(
        lambda rows: common_pb2.Tensor(dtype=DType.FLOAT32, shape=[128] if rows == 0 else [rows, 128],
                                       data=np.ones((max(rows, 1), 128), "<f4").tobytes()),
        st.integers(0, 3)))

    well_formed = (common_pb2.Tensor(dtype=DType.FLOAT32, shape=[1, 3, 64, 64], data=bytes(4 * 3 * 64 * 64)),
                   common_pb2.Tensor(dtype=DType.FLOAT32, shape=[128], data=np.ones(128, "<f4").tobytes()), [])

    @fuzz_settings(scaled(80, GRPC_SHARE, 1.1))
    @example(*well_formed)   # always one request that only the backend can refuse
    @given(images(), reference, landmarks)
    def run(imgs, ref, lms):
        request = face_pb2.IdentityLossRequest(images=imgs, reference_embedding=ref, landmarks=lms)
        code, _, info = caller("IdentityLoss", request, ("images", "reference_embedding", "landmarks"), test)
        assert code != Code.OK, "IdentityLoss cannot succeed on the dlib backend"
        if code == Code.FAILED_PRECONDITION:
            assert info.reason == "BACKEND_NOT_DIFFERENTIABLE"

    run()
    assert_server_healthy(caller, astronaut_png)
    seen = outcomes(test)
    assert seen.get("FAILED_PRECONDITION", 0) >= 1 and seen.get("INVALID_ARGUMENT", 0) >= 10, seen


def test_fuzz_client_errors_are_typed(client, seeds, astronaut_embedding):
    """Through GrpcFaceClient every refusal is a typed HeadForgeError of a deliberate kind."""
    embedding, _ = astronaut_embedding

    @fuzz_settings(scaled(40, GRPC_SHARE, 1.1))
    @given(random_bytes, st.sampled_from(["analyze", "compare_bytes", "compare_embedding"]))
    def run(data, how):
        try:
            if how == "analyze":
                client.analyze(data)
            elif how == "compare_bytes":
                client.compare(data, seeds["face_jpeg"])
            else:
                client.compare(embedding, np.frombuffer(data[: len(data) // 4 * 4], "<f4"))
        except (InvalidArgument, FailedPrecondition) as e:
            assert e.violations or e.reason, e
        except Exception as e:  # noqa: BLE001
            pytest.fail(f"{how} {data[:40]!r}: {type(e).__name__} {getattr(e, 'code', '')}: {e}")

    run()


# In-process: the decoder alone -----------------------------------------------------------------------

def test_fuzz_decode_image_in_process(seeds):
    @fuzz_settings(600)
    @given(st.one_of(random_bytes, mutated_file(seeds).map(lambda case: case[2])),
           st.sampled_from([1_000_000, 64 * 64, 40_000_000]))
    def run(data, max_pixels):
        try:
            out = decode_image(data, max_pixels=max_pixels, field="x.data")
        except InvalidArgument as e:
            assert e.field == "x.data" and e.reason in IMAGE_REASONS, (e.field, e.reason, e.message)
            assert e.code == Code.INVALID_ARGUMENT
            return
        assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
        assert out.shape[0] >= 1 and out.shape[1] >= 1 and out.shape[0] * out.shape[1] <= max_pixels

    run()


# Regression tests for the bugs the fuzzers found (fixed) -----------------------------------------------------

def test_regression_unknown_dtype_is_invalid_argument(caller):
    for request, prefix in [
        (face_pb2.AnalyzeRequest(image=common_pb2.ImageInput(
            pixels=common_pb2.Tensor(dtype=99, shape=[2, 2, 3], data=bytes(12)))), "image.pixels.dtype"),
        (face_pb2.CompareRequest(a=face_pb2.CompareRequest.Side(
            embedding=common_pb2.Tensor(dtype=-1, shape=[128], data=bytes(512)))), "a.embedding.dtype"),
    ]:
        method = "Analyze" if isinstance(request, face_pb2.AnalyzeRequest) else "Compare"
        try:
            getattr(caller.stub, method)(request, timeout=30)
        except grpc.RpcError as err:
            assert err.code() == Code.INVALID_ARGUMENT, (method, err.code(), err.details())
            assert err.details().startswith(prefix)
        else:
            pytest.fail("accepted")


def test_regression_zero_size_tensor_with_huge_dimension_is_invalid_argument(caller):
    for shape in ([2**62, 0, 3], [2**63 - 1, 2**63 - 1, 0]):
        request = face_pb2.AnalyzeRequest(image=common_pb2.ImageInput(
            pixels=common_pb2.Tensor(dtype=DType.UINT8, shape=shape)))
        with pytest.raises(grpc.RpcError) as info:
            caller.stub.Analyze(request, timeout=30)
        assert info.value.code() == Code.INVALID_ARGUMENT, (shape, info.value.details())
        assert info.value.details().startswith("image.pixels")


def test_regression_extreme_aspect_ratio_image_is_analyzed(caller):
    for h, w in [(1, 4000), (5000, 2), (1, 40_000)]:
        data = png_bytes(np.full((h, w, 3), 128, np.uint8))
        reply = caller.stub.Analyze(_analyze_request(data), timeout=60)
        assert (reply.image_height, reply.image_width) == (h, w) and list(reply.faces) == []

