"""Hypothesis fuzzing of a running inversion service (`headforge serve inversion` on loopback).

Malformed and near-valid Render / ExtractMesh / ExportField / Invert requests (random latents of any
shape and dtype, cameras with any floats, unknown outputs and generators, options out of range) must
each end with OK or a deliberate status (INVALID_ARGUMENT, FAILED_PRECONDITION, RESOURCE_EXHAUSTED,
NOT_FOUND) carrying headforge.v1.ErrorInfo, never UNKNOWN or INTERNAL; afterwards the server still
renders. Work per example is bounded (Invert steps <= 3, mesh grids <= 80) so the file stays quick.
"""

from __future__ import annotations

import time
from collections import Counter

import grpc
import numpy as np
import pytest
from grpc_status import rpc_status
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headforge.v1 import common_pb2, inversion_pb2, inversion_pb2_grpc
from tests.fuzz.protofuzz import RSS_GROWTH_LIMIT_MB, rss_mb, scaled, write_figures
from services.common.images import encode_png

Code = grpc.StatusCode
DELIBERATE = {Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION, Code.RESOURCE_EXHAUSTED, Code.NOT_FOUND}
DType = common_pb2.Tensor.DType
FLOAT32 = st.floats(width=32, allow_nan=True, allow_infinity=True)
META = (("authorization", "Bearer tok-a"),)
# 25 examples per fuzz test in `make test`; `make fuzz` shares HEADFORGE_FUZZ_EXAMPLES out over the three
FUZZ = settings(max_examples=scaled(25, 75), deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
STATUSES: Counter = Counter()


@pytest.fixture(scope="module")
def stub(inversion_server):
    channel = grpc.insecure_channel(inversion_server.address)
    rss_before, started = rss_mb(inversion_server.proc.pid), time.monotonic()
    yield inversion_pb2_grpc.InversionServiceStub(channel)
    channel.close()
    after = rss_mb(inversion_server.proc.pid)
    write_figures("inversion", sum(STATUSES.values()), dict(STATUSES), rss_before, after, time.monotonic() - started)
    assert after - rss_before < RSS_GROWTH_LIMIT_MB, (rss_before, after)


def check(call):
    """Run one call; OK or a deliberate status with ErrorInfo details."""
    try:
        result = call()
        if hasattr(result, "__iter__") and not hasattr(result, "DESCRIPTOR"):
            list(result)
        STATUSES["OK"] += 1
    except grpc.RpcError as err:
        STATUSES[err.code().name] += 1
        assert err.code() in DELIBERATE, f"{err.code()}: {err.details()}"
        status = rpc_status.from_call(err)
        assert status is not None and status.details, "no ErrorInfo"
        assert "Traceback" not in err.details()


def tensors_st():
    dtype = st.sampled_from([0, DType.FLOAT32, DType.FLOAT16, DType.INT32, DType.UINT8, 99])
    shape = st.lists(st.integers(-2, 40), max_size=3)
    return st.builds(lambda d, s, data: common_pb2.Tensor(dtype=d, shape=s, data=data), dtype, shape,
                     st.one_of(st.binary(max_size=64), st.just(np.zeros(8 * 32, np.float32).tobytes()),
                               st.just(np.zeros(32, np.float32).tobytes())))


def camera_st():
    plain = st.builds(lambda fx, cx, w, m: common_pb2.Camera(fx=fx, fy=fx, cx=cx, cy=cx, width=w, height=w,
                                                             world_to_camera=m),
                      FLOAT32, FLOAT32, st.integers(-4, 300),
                      st.one_of(st.lists(FLOAT32, max_size=17),
                                st.just([1, 0, 0, 0, 0, -1, 0, 0, 0, 0, -1, 5.4, 0, 0, 0, 1])))
    label = st.lists(FLOAT32, min_size=0, max_size=26).map(lambda v: inversion_pb2.Eg3dLabel(values=v))
    return st.one_of(plain.map(lambda c: inversion_pb2.InversionCamera(camera=c)),
                     plain.map(lambda c: inversion_pb2.InversionCamera(generator_camera=c)),
                     label.map(lambda v: inversion_pb2.InversionCamera(eg3d_label=v)),
                     st.just(inversion_pb2.InversionCamera()))


def source_st():
    latent = st.builds(lambda g, w: inversion_pb2.InversionSource(latent=inversion_pb2.GanLatent(generator=g, w=w)),
                       st.sampled_from(["", "tiny-pyramid", "pickled", "mismatched", "nope"]), tensors_st())
    return st.one_of(latent, st.text(max_size=40).map(lambda s: inversion_pb2.InversionSource(session_id=s)),
                     st.just(inversion_pb2.InversionSource()))


@FUZZ
@given(source=source_st(), cams=st.lists(camera_st(), max_size=3),
       outputs=st.lists(st.sampled_from(["rgb", "rgb_raw", "alpha", "depth", "normal_camera", "x", ""]), max_size=3),
       res=st.integers(-5, 80), dtype=st.sampled_from([0, DType.FLOAT16, DType.UINT8]))
def test_fuzz_render(stub, source, cams, outputs, res, dtype):
    req = inversion_pb2.InversionRenderRequest(source=source, cameras=cams, outputs=outputs, neural_resolution=res,
                                               dtype=dtype)
    check(lambda: stub.Render(req, metadata=META, timeout=60))


@FUZZ
@given(source=source_st(), res=st.one_of(st.integers(-5, 80), st.just(2000)), thr=FLOAT32,
       fmt=st.integers(0, 4), faces=st.integers(-3, 1000), chunk=st.integers(-5, 1 << 27))
def test_fuzz_mesh_and_export(stub, source, res, thr, fmt, faces, chunk):
    req = inversion_pb2.ExtractMeshRequest(source=source, resolution=res, density_threshold=thr, format=fmt,
                                           max_faces=faces)
    check(lambda: stub.ExtractMesh(req, metadata=META, timeout=60))
    exp = inversion_pb2.ExportFieldRequest(source=source, chunk_bytes=chunk, dtype=fmt)
    check(lambda: stub.ExportField(exp, metadata=META, timeout=60))


@FUZZ
@given(side=st.integers(1, 70), square=st.booleans(), cam=camera_st(),
       steps=st.integers(-2, 3), pti=st.booleans(), lr=FLOAT32, ramp=FLOAT32, every=st.integers(-1, 3),
       preview=st.integers(-1, 2000), latent=st.one_of(st.none(), tensors_st()), space=st.integers(0, 4),
       mask=st.booleans())
def test_fuzz_invert(stub, side, square, cam, steps, pti, lr, ramp, every, preview, latent, space, mask):
    img = np.random.default_rng(side).integers(0, 255, (side, side if square else side + 1, 3), dtype=np.uint8)
    opts = inversion_pb2.InvertOptions(steps=steps, pti=pti, pti_steps=min(steps, 2) if steps > 0 else -1, lr=lr,
                                       lr_rampup=ramp, progress_every=every, preview_size=preview, latent_space=space)
    if latent is not None:
        opts.init_latent.CopyFrom(latent)
    req = inversion_pb2.InvertRequest(image=common_pb2.ImageInput(encoded=common_pb2.EncodedImage(data=encode_png(img))),
                                      camera=cam, options=opts)
    if mask:
        req.mask.CopyFrom(common_pb2.ImageInput(encoded=common_pb2.EncodedImage(data=encode_png(img[:, :side]))))
    try:
        for ev in stub.Invert(req, metadata=META, timeout=120):
            if ev.HasField("result"):
                stub.CloseSession(inversion_pb2.CloseInversionSessionRequest(session_id=ev.result.session_id),
                                  metadata=META)
    except grpc.RpcError as err:
        assert err.code() in DELIBERATE, f"{err.code()}: {err.details()}"
        assert rpc_status.from_call(err) is not None


def test_server_still_renders_after_fuzzing(stub):
    w = np.zeros((8, 32), np.float32)
    from services.common import tensors
    from services.inversion.tiny import TINY_CONFIGS

    cam = TINY_CONFIGS["tiny-triplane"].frontal_camera()
    req = inversion_pb2.InversionRenderRequest(
        source=inversion_pb2.InversionSource(latent=inversion_pb2.GanLatent(w=tensors.to_proto(w))),
        cameras=[inversion_pb2.InversionCamera(camera=cam.to_proto())], outputs=["alpha"])
    out = stub.Render(req, metadata=META, timeout=60)
    assert tuple(out.outputs["alpha"].shape) == (1, 1, 32, 32)
