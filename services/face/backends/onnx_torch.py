"""A small, explicit ONNX -> PyTorch converter for ArcFace-family recognisers (InsightFace iresnet
exports such as w600k_r50 / glintr100), so identity losses can back-propagate to the input image.

The graph runs node by node with torch ops; initializers and Constant nodes become buffers (floating
ones as float32, so `.double()` works). Only the ops those networks use are supported; anything else
fails at construction, naming the op and the node.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper


class UnsupportedOnnxOp(NotImplementedError):
    """The graph uses an op (or an attribute value) OnnxModule does not implement."""


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
    return torch.from_numpy(np.array(array, copy=True))


def _ints(t: torch.Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _pads(x: torch.Tensor, pads: list[int], value: float = 0.0) -> tuple[torch.Tensor, list[int]]:
    """ONNX pads [b1, b2, ..., e1, e2, ...] -> (x, symmetric per-dim padding for the torch op). Asymmetric
    pads are applied to x directly."""
    n = len(pads) // 2
    begin, end = pads[:n], pads[n:]
    if begin == end:
        return x, begin
    torch_pads = [p for i in reversed(range(n)) for p in (begin[i], end[i])]
    return F.pad(x, torch_pads, value=value), [0] * n


def _auto_pads(a: dict, x: torch.Tensor, kernel: list[int], strides: list[int], dilations: list[int]) -> list[int]:
    mode = a.get("auto_pad", b"NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    n = len(kernel)
    if mode in ("NOTSET", ""):
        return list(a.get("pads", [0] * 2 * n))
    if mode == "VALID":
        return [0] * 2 * n
    begin, end = [], []
    for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else big)
        end.append(big if mode == "SAME_UPPER" else small)
    return begin + end


def _conv(x, w, b=None, *, a):
    n = w.ndim - 2
    strides = list(a.get("strides", [1] * n))
    dilations = list(a.get("dilations", [1] * n))
    x, padding = _pads(x, _auto_pads(a, x, list(w.shape[2:]), strides, dilations))
    fn = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
    return fn(x, w, b, stride=strides, padding=padding, dilation=dilations, groups=a.get("group", 1))


def _batch_norm(x, scale, bias, mean, var, *, a):
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=a.get("epsilon", 1e-5))


def _prelu(x, slope, *, a):
    if slope.numel() == 1:
        slope = slope.reshape(())
    elif slope.ndim == 1 and x.ndim >= 2 and slope.shape[0] == x.shape[1]:
        slope = slope.reshape(1, -1, *[1] * (x.ndim - 2))  # per-channel slope stored as (C,)
    return torch.where(x >= 0, x, x * slope)


def _pool_args(a: dict, x: torch.Tensor):
    kernel = list(a["kernel_shape"])
    n = len(kernel)
    strides = list(a.get("strides", [1] * n))
    dilations = list(a.get("dilations", [1] * n))
    return kernel, strides, dilations, _auto_pads(a, x, kernel, strides, dilations)


def _max_pool(x, *, a):
    kernel, strides, dilations, pads = _pool_args(a, x)
    if any(pads):
        x = F.pad(x, [p for i in reversed(range(len(kernel))) for p in (pads[i], pads[i + len(kernel)])],
                  value=-math.inf)
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[len(kernel)]
    return fn(x, kernel, strides, 0, dilations, ceil_mode=bool(a.get("ceil_mode", 0)))


def _avg_pool(x, *, a):
    kernel, strides, dilations, pads = _pool_args(a, x)
    if any(d != 1 for d in dilations):
        raise UnsupportedOnnxOp("AveragePool with dilations != 1")
    x, padding = _pads(x, pads)
    fn = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(kernel)]
    return fn(x, kernel, strides, padding, ceil_mode=bool(a.get("ceil_mode", 0)),
              count_include_pad=bool(a.get("count_include_pad", 0)))


def _gemm(A, B, C=None, *, a):
    A = A.t() if a.get("transA", 0) else A
    B = B.t() if a.get("transB", 0) else B
    y = a.get("alpha", 1.0) * (A @ B)
    return y if C is None else y + a.get("beta", 1.0) * C


def _flatten(x, *, a):
    axis = a.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def _reshape(x, shape, *, a):
    dims = _ints(shape)
    if not a.get("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _transpose(x, *, a):
    perm = a.get("perm", list(reversed(range(x.ndim))))
    return x.permute(*perm)


def _gather(x, idx, *, a):
    axis = a.get("axis", 0) % x.ndim
    idx = idx.long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1:]))


def _unsqueeze(x, axes=None, *, a):
    axes = _ints(axes) if axes is not None else list(a["axes"])
    rank = x.ndim + len(axes)
    for ax in sorted(ax % rank for ax in axes):
        x = x.unsqueeze(ax)
    return x


def _global_avg_pool(x, *, a):
    return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)


def _dropout(x, *rest, a):
    return x, torch.ones_like(x, dtype=torch.bool)  # inference: identity, mask all kept


_OPS = {
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "PRelu": _prelu,
    "Relu": lambda x, *, a: torch.relu(x),
    "Sigmoid": lambda x, *, a: torch.sigmoid(x),
    "Add": lambda x, y, *, a: x + y,
    "Sub": lambda x, y, *, a: x - y,
    "Mul": lambda x, y, *, a: x * y,
    "Div": lambda x, y, *, a: x / y,
    "Flatten": _flatten,
    "Gemm": _gemm,
    "MatMul": lambda x, y, *, a: torch.matmul(x, y),
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Identity": lambda x, *, a: x,
    "Concat": lambda *xs, a: torch.cat(xs, dim=a["axis"]),
    "GlobalAveragePool": _global_avg_pool,
    "MaxPool": _max_pool,
    "AveragePool": _avg_pool,
    "Dropout": _dropout,
    # the shape arithmetic some torch exports emit for x.view(x.size(0), -1)
    "Shape": lambda x, *, a: torch.tensor(x.shape, dtype=torch.int64),
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
}
SUPPORTED_OPS = tuple(sorted([*_OPS, "Constant"]))


class OnnxModule(torch.nn.Module):
    """An ONNX graph as a torch module, differentiable w.r.t. its inputs.

    forward(*inputs) takes the graph's non-initializer inputs in graph order (for an ArcFace recogniser
    one float (N, 3, 112, 112) tensor, already normalised the way the model expects) and returns the
    graph's single output (e.g. (N, 512) raw embeddings), or a tuple when the graph has several.
    """

    def __init__(self, model: onnx.ModelProto):
        super().__init__()
        graph = model.graph
        self._tensor_names: dict[str, str] = {}  # ONNX value name -> buffer attribute
        for init in graph.initializer:
            self._add_constant(init.name, numpy_helper.to_array(init))
        self._nodes: list[tuple[str, str, list[str], list[str], dict]] = []
        for i, node in enumerate(graph.node):
            name = node.name or f"#{i}"
            if node.domain not in ("", "ai.onnx") or (node.op_type not in _OPS and node.op_type != "Constant"):
                raise UnsupportedOnnxOp(
                    f"ONNX op {node.op_type!r} (domain {node.domain or 'ai.onnx'!r}, node {name!r}) is not "
                    f"supported by OnnxModule; supported ops: {', '.join(SUPPORTED_OPS)}")
            a = _attrs(node)
            if node.op_type == "Constant":
                self._add_constant(node.output[0], _constant_value(a, name))
                continue
            self._nodes.append((node.op_type, name, list(node.input), list(node.output), a))
        self.input_names = [i.name for i in graph.input if i.name not in self._tensor_names]
        self.output_names = [o.name for o in graph.output]

    def _add_constant(self, name: str, array: np.ndarray) -> None:
        attr = f"_c{len(self._tensor_names)}"
        self.register_buffer(attr, _as_tensor(array), persistent=False)
        self._tensor_names[name] = attr

    def forward(self, *inputs: torch.Tensor):
        if len(inputs) != len(self.input_names):
            raise ValueError(f"expected {len(self.input_names)} inputs {self.input_names}, got {len(inputs)}")
        env: dict[str, torch.Tensor] = {n: getattr(self, attr) for n, attr in self._tensor_names.items()}
        env.update(zip(self.input_names, inputs))
        for op, name, ins, outs, a in self._nodes:
            args = [env[n] if n else None for n in ins]
            try:
                result = _OPS[op](*args, a=a)
            except UnsupportedOnnxOp as e:
                raise UnsupportedOnnxOp(f"node {name!r}: {e}") from None
            except Exception as e:
                raise RuntimeError(f"OnnxModule failed at {op} node {name!r}: {e}") from e
            results = result if isinstance(result, tuple) else (result,)
            for n, r in zip(outs, results):
                if n:
                    env[n] = r
        out = tuple(env[n] for n in self.output_names)
        return out[0] if len(out) == 1 else out


def _constant_value(a: dict, node_name: str) -> np.ndarray:
    if "value" in a:
        return numpy_helper.to_array(a["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype=dtype)
    raise UnsupportedOnnxOp(f"Constant node {node_name!r} with attributes {sorted(a)}")


def load_onnx_as_torch(path: str | Path) -> OnnxModule:
    """OnnxModule of the .onnx file at `path` (in eval mode)."""
    return OnnxModule(onnx.load(str(path))).eval()
