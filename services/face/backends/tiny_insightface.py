"""A tiny, random-initialised InsightFace pack for tests only: its outputs mean nothing.

`write_tiny_pack` writes the five files of the buffalo_l layout with the real files' input/output
signatures (names, shapes with the same dynamic dims, output count and order), built with onnx.helper,
deterministic for a seed and about 300 KB in all:

- det_10g.onnx (SCRFD, 9 outputs): behaves predictably rather than randomly. The stride-32 score is
  sigmoid(10 * (m - 0.5)) with m the mean normalised intensity of a 32x32 cell of the detector input
  (-1 black .. +1 white), so a cell more than ~75% bright scores > 0.5; strides 8 and 16 never fire.
  Box and keypoint heads output constants: each anchor's box is a DET_BOX_SIDE square (detector-input
  pixels) centred on its cell, with the five keypoints laid out like ARCFACE_112 in that square.
- 1k3d68.onnx: 1103 x 3 points whose last 68 form a fixed face-like layout plus small random terms.
- w600k_r50.onnx: a small iresnet-like net (in-graph Sub/Mul normalisation, Conv, BatchNormalization,
  PRelu, residual Add, Dropout, Flatten, Gemm to 512, feature BatchNormalization).
- 2d106det.onnx, genderage.onnx: trivial nets with the real signatures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from services.core.landmarks import ARCFACE_112, TEMPLATE_68
from services.core.models import PROVENANCE_KEY, RANDOM_WEIGHTS

OPSET = 11          # the real packs are opset-11 exports
IR_VERSION = 6
DET_STRIDES = (8, 16, 32)
DET_ANCHORS = 2
DET_SCORE_STRIDE = 32   # the only stride whose score head responds to the image
DET_BOX_SIDE = 64.0     # detector-input pixels
DET_OUTPUT_NAMES = ("448", "471", "494", "451", "474", "497", "454", "477", "500")


class _Graph:
    """Collects nodes and initializers; names values and nodes the way torch exports do."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def _name(self) -> str:
        self._n += 1
        return f"v{self._n}"

    def const(self, array, dtype=np.float32) -> str:
        name = self._name()
        self.inits.append(numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str | None = None, name: str | None = None,
           **attrs) -> str:
        output = output or self._name()
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=name or f"{op_type}_{len(self.nodes)}",
                                           **attrs))
        return output

    def model(self, inputs: list, outputs: list) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, "tiny", inputs, outputs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="headforge-tiny-insightface")
        model.ir_version = IR_VERSION
        onnx.checker.check_model(model)
        return model

    # layers
    def conv(self, x: str, w: np.ndarray, b: np.ndarray | None = None, stride: int = 1, pad: int = 0) -> str:
        ins = [x, self.const(w)] + ([self.const(b)] if b is not None else [])
        k = list(w.shape[2:])
        return self.op("Conv", ins, kernel_shape=k, strides=[stride, stride], pads=[pad] * 4,
                       dilations=[1, 1], group=1)

    def bn(self, x: str, c: int, rng: np.random.Generator, output: str | None = None) -> str:
        params = [rng.uniform(0.7, 1.3, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.7, 1.3, c)]
        return self.op("BatchNormalization", [x, *map(self.const, params)], output, epsilon=1e-5, momentum=0.9)

    def prelu(self, x: str, c: int, rng: np.random.Generator) -> str:
        return self.op("PRelu", [x, self.const(rng.uniform(0.1, 0.3, (c, 1, 1)))])


def _he(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    fan_in = int(np.prod(shape[1:]))
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)


def _image_input(name: str, batch, size) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, 3, size, size])


def _detector() -> onnx.ModelProto:
    g = _Graph()
    outputs: list[list] = [[], [], []]   # scores, boxes, keypoints; each in stride order
    for i, s in enumerate(DET_STRIDES):
        mean = g.conv("input.1", np.full((1, 3, s, s), 1.0 / (3 * s * s)), stride=s)  # (1, 1, H/s, W/s)
        w, b = (10.0, -5.0) if s == DET_SCORE_STRIDE else (0.0, -20.0)
        logits = g.conv(mean, np.full((DET_ANCHORS, 1, 1, 1), w), np.full(DET_ANCHORS, b))
        # distances in stride units from the anchor point (the cell's top-left corner) to the box sides
        near, far = (DET_BOX_SIDE / 2 - s / 2) / s, (DET_BOX_SIDE / 2 + s / 2) / s
        box = np.tile([near, near, far, far], DET_ANCHORS)
        points = np.tile(((s / 2 + (ARCFACE_112 - 56.0) * DET_BOX_SIDE / 112.0) / s).ravel(), DET_ANCHORS)
        heads = [g.op("Sigmoid", [logits]),
                 g.conv(mean, np.zeros((4 * DET_ANCHORS, 1, 1, 1)), box),
                 g.conv(mean, np.zeros((10 * DET_ANCHORS, 1, 1, 1)), points)]
        for k, (value, width) in enumerate(zip(heads, (1, 4, 10))):
            name = DET_OUTPUT_NAMES[3 * k + i]
            nhwc = g.op("Transpose", [value], perm=[0, 2, 3, 1])        # anchors fastest, as SCRFD
            g.op("Reshape", [nhwc, g.const([-1, width], np.int64)], output=name)
            outputs[k].append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, width]))
    return g.model([_image_input("input.1", 1, "?")], [o for group in outputs for o in group])


def _bn_data(g: _Graph) -> str:
    """mxnet-style in-graph input normalisation: a BatchNormalization named bn_data on raw pixels."""
    return g.op("BatchNormalization", ["data", g.const(np.ones(3)), g.const(np.zeros(3)), g.const(np.full(3, 127.5)),
                                       g.const(np.full(3, 128.0 ** 2))], name="bn_data", epsilon=1e-5)


def _linear_head(g: _Graph, x: str, channels: int, bias: np.ndarray, rng: np.random.Generator) -> str:
    pooled = g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    w = rng.normal(0.0, 0.01, (bias.size, channels))
    return g.op("Gemm", [pooled, g.const(w), g.const(bias)], output="fc1", alpha=1.0, beta=1.0, transB=1)


def _landmarks_3d68(rng: np.random.Generator) -> onnx.ModelProto:
    g = _Graph()
    x = g.prelu(g.conv(_bn_data(g), _he(rng, (4, 3, 8, 8)), stride=8), 4, rng)
    # a face-like layout in the crop's normalised coordinates (-1..1, y down), within the detected box
    face = TEMPLATE_68 * np.array([1.0, -1.0, 1.0])
    face = (face - (face.max(0) + face.min(0)) / 2) / np.ptp(face[:, :2], 0).max() * 1.2
    points = np.concatenate([rng.uniform(-0.5, 0.5, (1103 - 68, 3)), face])
    out = _linear_head(g, x, 4, points.ravel(), rng)
    return g.model([_image_input("data", 1, 192)], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 3309])])


def _trivial(rng: np.random.Generator, size: int, n_out: int) -> onnx.ModelProto:
    g = _Graph()
    out = _linear_head(g, _bn_data(g), 3, rng.normal(0.0, 0.1, n_out), rng)
    return g.model([_image_input("data", 1, size)], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, n_out])])


def _recognizer(rng: np.random.Generator) -> onnx.ModelProto:
    g = _Graph()
    x = g.op("Sub", ["input.1", g.const([127.5])])
    x = g.op("Mul", [x, g.const([1.0 / 127.5])])
    c = 8
    x = g.prelu(g.bn(g.conv(x, _he(rng, (c, 3, 3, 3)), stride=2, pad=1), c, rng), c, rng)  # (N, 8, 56, 56)
    for cin, cout in ((8, 8), (8, 8), (8, 2)):  # iresnet basic blocks, each halving H and W -> 7x7
        y = g.bn(x, cin, rng)
        y = g.prelu(g.bn(g.conv(y, _he(rng, (cout, cin, 3, 3)), pad=1), cout, rng), cout, rng)
        y = g.bn(g.conv(y, _he(rng, (cout, cout, 3, 3)), stride=2, pad=1), cout, rng)
        short = g.bn(g.conv(x, _he(rng, (cout, cin, 1, 1)), stride=2), cout, rng)
        x = g.op("Add", [y, short])
    x = g.op("Dropout", [g.bn(x, 2, rng)], ratio=0.0)
    x = g.op("Flatten", [x], axis=1)                                                       # (N, 98)
    x = g.op("Gemm", [x, g.const(_he(rng, (512, 98))), g.const(rng.normal(0, 0.1, 512))], transB=1)
    out = g.bn(x, 512, rng, output="683")
    return g.model([_image_input("input.1", "None", 112)],
                   [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["None", 512])])


def write_tiny_pack(folder: Path, seed: int = 0) -> Path:
    """Write the tiny buffalo_l-layout pack into `folder` (created if needed) and return it. Every file says
    in its ONNX metadata that its weights are random (services.core.models.PROVENANCE_KEY)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    models = {
        "det_10g.onnx": _detector(),
        "1k3d68.onnx": _landmarks_3d68(rng),
        "2d106det.onnx": _trivial(rng, 192, 212),
        "genderage.onnx": _trivial(rng, 96, 3),
        "w600k_r50.onnx": _recognizer(rng),
    }
    for name, model in models.items():
        helper.set_model_props(model, {PROVENANCE_KEY: RANDOM_WEIGHTS, "headforge_written_by":
                                       "services.face.backends.tiny_insightface.write_tiny_pack (headforge models "
                                       "make-tiny); the weights are random, their outputs mean nothing"})
        onnx.save(model, str(folder / name))
    return folder
