from __future__ import annotations

import grpc
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from headforge.v1 import common_pb2
from services.common import tensors
from services.common.errors import FailedPrecondition, InvalidArgument

DType = common_pb2.Tensor.DType


@settings(max_examples=60, deadline=None, derandomize=True)
@given(hnp.arrays(dtype=st.sampled_from([np.float32, np.float16, np.uint8, np.int32, np.int64]),
                  shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=5)))
def test_round_trip_is_exact(a):
    msg = tensors.to_proto(a)
    back = tensors.from_proto(common_pb2.Tensor.FromString(msg.SerializeToString()), "t")
    assert back.dtype == a.dtype.newbyteorder("<") and back.shape == a.shape
    # bit-exact (value comparison would depend on the process's flush-denormal mode)
    assert back.tobytes() == np.asarray(a, dtype=back.dtype).tobytes()


def test_torch_and_bfloat16():
    t = torch.linspace(-2, 2, 12).reshape(3, 4)
    np.testing.assert_array_equal(tensors.from_proto(tensors.to_proto(t), "t"), t.numpy())
    bf = t.to(torch.bfloat16)
    back = tensors.from_proto(tensors.to_proto(bf), "t")
    np.testing.assert_array_equal(back, bf.float().numpy())


@pytest.mark.parametrize("msg,field", [
    (common_pb2.Tensor(dtype=DType.FLOAT32, shape=[2, 2], data=b"\0" * 15), "x.data"),
    (common_pb2.Tensor(dtype=DType.DTYPE_UNSPECIFIED, shape=[1], data=b"\0"), "x.dtype"),
    (common_pb2.Tensor(dtype=99, shape=[1], data=b"\0"), "x.dtype"),
    (common_pb2.Tensor(dtype=DType.UINT8, shape=[-1, 4], data=b""), "x.shape"),
    (common_pb2.Tensor(dtype=DType.UINT8, shape=[1 << 20, 1 << 20], data=b""), "x.shape"),
])
def test_malformed_tensors_name_the_field(msg, field):
    with pytest.raises(InvalidArgument) as info:
        tensors.from_proto(msg, "x")
    assert info.value.field == field


def test_ndim_and_dtype_restrictions():
    msg = tensors.to_proto(np.zeros((2, 3), np.float32))
    with pytest.raises(InvalidArgument, match="dimensions"):
        tensors.from_proto(msg, "x", ndim=4)
    with pytest.raises(InvalidArgument, match="expected one of UINT8"):
        tensors.from_proto(msg, "x", dtypes=[DType.UINT8])


def test_error_to_status_carries_error_info():
    err = InvalidArgument("images[2].shape", "must be (N, 3, H, W)", reason="BAD_SHAPE")
    status = err.to_status()
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    info = common_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "BAD_SHAPE" and info.field_violations[0].field == "images[2].shape"
    fp = FailedPrecondition("configure X", reason="NEEDS_X", metadata={"option": "--x"})
    assert fp.to_status().code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
