"""The wire format of tensors: headforge.v1.Tensor <-> numpy / torch, never pickle.

Raw little-endian bytes in C order with an explicit dtype and shape. Decoding validates that the byte
count matches the shape and raises InvalidArgument naming the request field otherwise.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from headforge.v1 import common_pb2
from services.common.errors import InvalidArgument

DType = common_pb2.Tensor.DType

_NP_BY_PROTO = {
    DType.FLOAT32: np.dtype("<f4"),
    DType.FLOAT16: np.dtype("<f2"),
    DType.UINT8: np.dtype("u1"),
    DType.INT32: np.dtype("<i4"),
    DType.INT64: np.dtype("<i8"),
}
_PROTO_BY_KIND = {(v.kind, v.itemsize): k for k, v in _NP_BY_PROTO.items()}


def to_proto(array, dtype: np.dtype | str | None = None) -> common_pb2.Tensor:
    """Encode a numpy array or torch tensor (any device; detached) as a Tensor message.

    dtype: cast to this numpy dtype first (e.g. "float16" to halve the bytes on the wire).
    """
    if hasattr(array, "detach"):
        if str(array.dtype) == "torch.bfloat16":
            raw = array.detach().cpu().contiguous().view(dtype=__import__("torch").int16).numpy()
            return common_pb2.Tensor(dtype=DType.BFLOAT16, shape=list(raw.shape),
                                     data=raw.astype("<i2").tobytes())
        array = array.detach().cpu().numpy()
    a = np.asarray(array)
    if dtype is not None:
        a = a.astype(dtype)
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8)
    key = (a.dtype.kind, a.dtype.itemsize)
    if key not in _PROTO_BY_KIND:
        raise TypeError(f"dtype {a.dtype} has no wire encoding")
    proto_dtype = _PROTO_BY_KIND[key]
    a = np.asarray(a, dtype=_NP_BY_PROTO[proto_dtype], order="C")  # keeps 0-d (ascontiguousarray would not)
    return common_pb2.Tensor(dtype=proto_dtype, shape=list(a.shape), data=a.tobytes())


def from_proto(
    msg: common_pb2.Tensor,
    field: str,
    *,
    dtypes: Sequence[int] | None = None,
    ndim: int | Sequence[int] | None = None,
    max_elements: int = 1 << 30,
) -> np.ndarray:
    """Decode a Tensor message to a numpy array (read-only view of the bytes, float16 kept as is).

    Raises InvalidArgument(field, ...) for an unknown or disallowed dtype, a wrong number of dimensions,
    negative or oversized shapes, or a byte count that does not match the shape. bfloat16 is widened to
    float32.
    """
    if msg.dtype == DType.DTYPE_UNSPECIFIED:
        raise InvalidArgument(f"{field}.dtype", "dtype is unspecified")
    if msg.dtype not in DType.values():  # proto3 enums are open: any int32 arrives
        raise InvalidArgument(f"{field}.dtype", f"unknown dtype value {msg.dtype}")
    if dtypes is not None and msg.dtype not in dtypes:
        allowed = ", ".join(DType.Name(d) for d in dtypes)
        raise InvalidArgument(f"{field}.dtype", f"got {DType.Name(msg.dtype)}, expected one of {allowed}")
    shape = tuple(int(s) for s in msg.shape)
    if ndim is not None:
        allowed_ndims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if len(shape) not in allowed_ndims:
            raise InvalidArgument(f"{field}.shape",
                                  f"got {len(shape)} dimensions {list(shape)}, expected {allowed_ndims}")
    if any(s < 0 for s in shape):
        raise InvalidArgument(f"{field}.shape", f"negative dimension in {list(shape)}")
    count = math.prod(shape)
    # a zero in the shape must not hide a huge other dimension (numpy cannot even reshape to it)
    if count > max_elements or math.prod(max(s, 1) for s in shape) > max_elements:
        raise InvalidArgument(f"{field}.shape", f"{count} elements exceed the limit of {max_elements}")
    if msg.dtype == DType.BFLOAT16:
        expected = count * 2
        if len(msg.data) != expected:
            raise InvalidArgument(f"{field}.data", f"{len(msg.data)} bytes, shape {list(shape)} needs {expected}")
        bits = np.frombuffer(msg.data, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    np_dtype = _NP_BY_PROTO.get(msg.dtype)
    if np_dtype is None:
        raise InvalidArgument(f"{field}.dtype", f"unknown dtype value {msg.dtype}")
    expected = count * np_dtype.itemsize
    if len(msg.data) != expected:
        raise InvalidArgument(f"{field}.data",
                              f"{len(msg.data)} bytes, but shape {list(shape)} of {DType.Name(msg.dtype)} needs {expected}")
    return np.frombuffer(msg.data, dtype=np_dtype).reshape(shape)


def require_finite(a: np.ndarray, field: str) -> None:
    """InvalidArgument when a float array holds NaN or inf."""
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise InvalidArgument(field, "contains NaN or infinite values")
