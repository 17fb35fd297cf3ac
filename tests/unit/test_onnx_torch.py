"""OnnxModule (ONNX -> torch) against onnxruntime: single-op graphs, the tiny recogniser, errors, gradients."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from services.face.backends.onnx_torch import OnnxModule, UnsupportedOnnxOp, load_onnx_as_torch
from services.face.backends.tiny_insightface import write_tiny_pack

RNG = np.random.default_rng(7)


def _f32(*shape) -> np.ndarray:
    return RNG.normal(size=shape).astype(np.float32)


def _model(nodes, x_shape, inits: dict, opset: int = 13) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _single(op: str, x_shape, inits: dict | None = None, opset: int = 13, **attrs) -> onnx.ModelProto:
    inits = inits or {}
    return _model([helper.make_node(op, ["x", *inits], ["y"], name=f"{op}_0", **attrs)], x_shape, inits, opset)


def _check(model: onnx.ModelProto, x: np.ndarray) -> None:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    got = OnnxModule(model)(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


CASES = {
    "conv_group_pads_strides_dilations": (
        (1, 4, 9, 11), lambda: _single("Conv", (1, 4, 9, 11), {"w": _f32(6, 2, 3, 3), "b": _f32(6)}, group=2,
                                       pads=[1, 0, 2, 1], strides=[2, 1], dilations=[1, 2])),
    "conv_same_upper": ((1, 3, 8, 8), lambda: _single("Conv", (1, 3, 8, 8), {"w": _f32(2, 3, 3, 3)}, strides=[2, 2],
                                                      auto_pad="SAME_UPPER")),
    "batchnorm": ((2, 3, 4, 5), lambda: _single("BatchNormalization", (2, 3, 4, 5), {
        "s": _f32(3), "b": _f32(3), "m": _f32(3), "v": np.abs(_f32(3)) + 0.5}, epsilon=1e-3)),
    "batchnorm_1d": ((2, 6), lambda: _single("BatchNormalization", (2, 6), {
        "s": _f32(6), "b": _f32(6), "m": _f32(6), "v": np.abs(_f32(6)) + 0.5})),
    "prelu_channels": ((2, 3, 4, 5), lambda: _single("PRelu", (2, 3, 4, 5), {"a": _f32(3, 1, 1)})),
    "relu": ((2, 3), lambda: _single("Relu", (2, 3))),
    "sigmoid": ((2, 3), lambda: _single("Sigmoid", (2, 3))),
    "add": ((2, 3, 4), lambda: _single("Add", (2, 3, 4), {"c": _f32(4)})),
    "sub": ((2, 3, 4), lambda: _single("Sub", (2, 3, 4), {"c": _f32(3, 1)})),
    "mul": ((2, 3, 4), lambda: _single("Mul", (2, 3, 4), {"c": _f32(1)})),
    "div": ((2, 3, 4), lambda: _single("Div", (2, 3, 4), {"c": np.abs(_f32(4)) + 1})),
    "flatten_axis2": ((2, 3, 4, 5), lambda: _single("Flatten", (2, 3, 4, 5), axis=2)),
    "gemm_trans_alpha_beta": ((5, 3), lambda: _single("Gemm", (5, 3), {"b": _f32(4, 5), "c": _f32(4)},
                                                      alpha=0.5, beta=2.0, transA=1, transB=1)),
    "matmul": ((2, 3, 4), lambda: _single("MatMul", (2, 3, 4), {"w": _f32(4, 6)})),
    "reshape_zero_minus1": ((2, 3, 4), lambda: _single("Reshape", (2, 3, 4), {"s": np.array([0, -1], np.int64)})),
    "transpose": ((2, 3, 4), lambda: _single("Transpose", (2, 3, 4), perm=[2, 0, 1])),
    "identity": ((2, 3), lambda: _single("Identity", (2, 3))),
    "global_avg_pool": ((2, 3, 5, 7), lambda: _single("GlobalAveragePool", (2, 3, 5, 7))),
    "max_pool_pads_ceil": ((1, 2, 9, 9), lambda: _single("MaxPool", (1, 2, 9, 9), kernel_shape=[3, 3],
                                                         strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1)),
    "max_pool_asymmetric": ((1, 2, 8, 8), lambda: _single("MaxPool", (1, 2, 8, 8), kernel_shape=[2, 2],
                                                          strides=[2, 2], pads=[0, 0, 1, 1])),
    "avg_pool": ((1, 2, 8, 8), lambda: _single("AveragePool", (1, 2, 8, 8), kernel_shape=[2, 2], strides=[2, 2])),
    "dropout": ((2, 3), lambda: _single("Dropout", (2, 3), opset=11, ratio=0.5)),
    "concat_with_constant": ((2, 3), lambda: _model([
        helper.make_node("Constant", [], ["k"], name="const", value=numpy_helper.from_array(_f32(2, 2))),
        helper.make_node("Concat", ["x", "k"], ["y"], name="cat", axis=1)], (2, 3), {})),
    # x.view(x.size(0), -1) as torch exports it (opset 11: Unsqueeze axes as an attribute)
    "shape_gather_unsqueeze_reshape": ((2, 3, 4), lambda: _model([
        helper.make_node("Shape", ["x"], ["s"], name="shape"),
        helper.make_node("Gather", ["s", "i0"], ["n"], name="gather", axis=0),
        helper.make_node("Unsqueeze", ["n"], ["n1"], name="unsq", axes=[0]),
        helper.make_node("Concat", ["n1", "m1"], ["shape2"], name="cat", axis=0),
        helper.make_node("Reshape", ["x", "shape2"], ["y"], name="reshape")], (2, 3, 4),
        {"i0": np.array(0, np.int64), "m1": np.array([-1], np.int64)}, opset=11)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_single_op_matches_onnxruntime(case):
    shape, build = CASES[case]
    _check(build(), _f32(*shape))


def test_prelu_per_channel_slope_stored_flat():
    """A (C,) slope (some mxnet exports) applies per channel, like a (C, 1, 1) one."""
    x, a = torch.from_numpy(_f32(2, 3, 4, 5)), _f32(3)
    flat = OnnxModule(_single("PRelu", (2, 3, 4, 5), {"a": a}))(x)
    full = OnnxModule(_single("PRelu", (2, 3, 4, 5), {"a": a.reshape(3, 1, 1)}))(x)
    torch.testing.assert_close(flat, full)


@pytest.fixture(scope="module")
def tiny_recognizer(tmp_path_factory):
    return write_tiny_pack(tmp_path_factory.mktemp("pack")) / "w600k_r50.onnx"


def test_tiny_recognizer_matches_onnxruntime(tiny_recognizer):
    x = np.random.default_rng(0).uniform(0, 255, (2, 3, 112, 112)).astype(np.float32)
    sess = ort.InferenceSession(str(tiny_recognizer), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"input.1": x})[0]
    module = load_onnx_as_torch(tiny_recognizer)
    got = module(torch.from_numpy(x)).detach().numpy()
    assert got.shape == want.shape == (2, 512)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert module.input_names == ["input.1"] and module.output_names == ["683"]


def test_gradient_flows_to_the_input(tiny_recognizer):
    module = load_onnx_as_torch(tiny_recognizer)
    x = torch.rand(1, 3, 112, 112, dtype=torch.float64, requires_grad=True) * 255
    x.retain_grad()
    module.double()(x).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert not any(b.requires_grad for b in module.buffers())


def test_unsupported_op_names_op_and_node():
    model = _single("Softmax", (2, 3))
    model.graph.node[0].name = "my_softmax"
    with pytest.raises(UnsupportedOnnxOp, match=r"'Softmax'.*'my_softmax'"):
        OnnxModule(model)


def test_custom_domain_op_is_unsupported():
    model = _single("Relu", (2, 3))
    model.graph.node[0].domain = "com.microsoft"
    with pytest.raises(UnsupportedOnnxOp, match="com.microsoft"):
        OnnxModule(model)
