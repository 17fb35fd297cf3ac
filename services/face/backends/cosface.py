"""CosFace identity embeddings (Wang et al., CVPR 2018, "Large margin cosine loss"): a spec of the generic ONNX
recogniser (services.face.backends.onnx_recognizer), for the metric ID-to-3D reports.

The checkpoints this targets are InsightFace's CosFace-trained iresnets from recognition/arcface_torch
(model zoo: glint360k_cosface_r18/r34/r50/r100_fp16_0.1, published as backbone.pth; ONNX copies of the same
nets circulate as e.g. glint360k_cosface_r100.onnx). The ONNX is the one arcface_torch's torch2onnx.py writes
from backbone.pth (the user's step where only the .pth is at hand):
    input  "data" float32 (N, 3, 112, 112), the batch dimension dynamic: the 5-point ArcFace-aligned 112x112
           crop (insightface.arcface_transform), RGB (arcface_torch's inference.py converts cv2's BGR to RGB),
           (x / 255 - 0.5) / 0.5, i.e. (x - 127.5) / 127.5; no normalisation inside the graph;
    output one (N, 512): the raw feature (the iresnet's last BatchNorm1d), not L2-normalised; the face service
           normalises it.
Licence: InsightFace's model zoo states its pretrained models are for non-commercial research purposes only;
the arcface_torch code is MIT.
Compare uses the cosine distance 1 - cos. The same-person threshold 0.7 (cos > 0.3) is ours: HeadForge's
ArcFace-family convention, not a figure from the CosFace paper or InsightFace (verification thresholds depend
on the target false-accept rate and the test set).
"""

from __future__ import annotations

from pathlib import Path

from services.face.backends.onnx_recognizer import OnnxRecognizer, OnnxRecognizerSpec, load_for

LICENSE = "non-commercial research use only (InsightFace model zoo pretrained models; arcface_torch code MIT)"
THRESHOLD = 0.7   # cosine distance; ours (see the module docstring)
EMBEDDING_DIM = 512

SPEC = OnnxRecognizerSpec(
    name="cosface", title="CosFace", channels="RGB", mean=127.5, std=127.5, license=LICENSE, threshold=THRESHOLD,
    threshold_source="ours: HeadForge's ArcFace-family convention (cos > 0.3), not a CosFace/InsightFace figure",
    config_field="cosface_onnx", embedding_dim=EMBEDDING_DIM,
    expected="a CosFace recogniser ONNX such as InsightFace's glint360k_cosface_r100 (arcface_torch torch2onnx.py): "
             "(N, 3, 112, 112) RGB input, (N, 512) output")


class CosFaceRecognizer(OnnxRecognizer):
    """The generic ONNX recogniser with CosFace's conventions (SPEC)."""

    def __init__(self, path: str | Path):
        super().__init__(SPEC, path)


def load_recognizer(config, detector) -> OnnxRecognizer:
    """The RECOGNIZERS entry "cosface": the CosFace ONNX file config.cosface_onnx."""
    return load_for(SPEC, config)
