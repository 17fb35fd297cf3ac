"""AdaFace identity embeddings (mk-minchul/AdaFace, MIT) from a user-provided ONNX export: a spec of the
generic ONNX recogniser (services.face.backends.onnx_recognizer).

The AdaFace repository publishes PyTorch checkpoints (.ckpt, e.g. adaface_ir101_webface12m.ckpt), not ONNX:
exporting one to ONNX is the user's step (load the IR-101 net from the repo's net.py with the checkpoint's
state_dict, torch.onnx.export with a (1, 3, 112, 112) input). The export this backend expects:
    input  float32 (N or 1, 3, 112, 112): the 5-point ArcFace-aligned 112x112 crop (the same alignment the
           InsightFace recogniser uses: insightface.arcface_transform), BGR, (x / 255 - 0.5) / 0.5
           (AdaFace's inference.py to_input), i.e. (x - 127.5) / 127.5;
    output (N, 512) embedding first; the model's second output (the feature norm) is ignored.
Compare uses the cosine distance 1 - cos; the same-person threshold 0.7 (cos > 0.3) is HeadForge's
convention, borrowed from ArcFace's usual operating point, not a figure from the AdaFace paper.
"""

from __future__ import annotations

from pathlib import Path

from services.face.backends.onnx_recognizer import OnnxRecognizer, OnnxRecognizerSpec, load_for

LICENSE = "MIT (mk-minchul/AdaFace code and weights)"
THRESHOLD = 0.7   # cosine distance; HeadForge's convention (see the module docstring)

SPEC = OnnxRecognizerSpec(
    name="adaface", title="AdaFace", channels="BGR", mean=127.5, std=127.5, license=LICENSE, threshold=THRESHOLD,
    threshold_source="ours: HeadForge's convention (cos > 0.3), borrowed from ArcFace's usual operating point",
    config_field="adaface_onnx",
    expected="an ONNX export of an AdaFace checkpoint: (1, 3, 112, 112) BGR input, (1, 512) first output")


class AdaFaceRecognizer(OnnxRecognizer):
    """The generic ONNX recogniser with AdaFace's conventions (SPEC)."""

    def __init__(self, path: str | Path):
        super().__init__(SPEC, path)


def load_recognizer(config, detector) -> OnnxRecognizer:
    """The RECOGNIZERS entry "adaface": the AdaFace ONNX file config.adaface_onnx."""
    return load_for(SPEC, config)
