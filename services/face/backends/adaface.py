"""AdaFace identity embeddings (mk-minchul/AdaFace, MIT) from a user-provided ONNX export, run with onnxruntime.

The AdaFace repository publishes PyTorch checkpoints (.ckpt, e.g. adaface_ir101_webface12m.ckpt), not ONNX:
exporting one to ONNX is the user's step (load the IR-101 net from the repo's net.py with the checkpoint's
state_dict, torch.onnx.export with a (1, 3, 112, 112) input). The export this backend expects:
    input  float32 (N or 1, 3, 112, 112): the 5-point ArcFace-aligned 112x112 crop (the same alignment the
           InsightFace recogniser uses: insightface.arcface_transform), BGR, (x / 255 - 0.5) / 0.5
           (AdaFace's inference.py to_input);
    output (N, 512) embedding first; the model's second output (the feature norm) is ignored.
Compare uses the cosine distance 1 - cos; the same-person threshold 0.7 (cos > 0.3) is HeadForge's
convention, borrowed from ArcFace's usual operating point, not a figure from the AdaFace paper.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from services.common.errors import FailedPrecondition
from services.core.landmarks import five_from_68
from services.core.models import PROVENANCE_KEY, ModelRecord, file_sha256, folder_provenance
from services.face.backends.insightface import arcface_transform, onnx_session

INPUT_SIZE = 112
LICENSE = "MIT (mk-minchul/AdaFace code and weights)"
THRESHOLD = 0.7   # cosine distance; HeadForge's convention (see the module docstring)


class AdaFaceRecognizer:
    """The Recognizer protocol (services.face.backends.base) on an AdaFace ONNX file. Not differentiable:
    IdentityLoss needs an InsightFace pack."""

    name = "adaface"
    metric = "cosine_distance"
    threshold = THRESHOLD
    typical_norm = 1.0      # the cosine metric ignores norms
    differentiable = False

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FailedPrecondition(f"AdaFace ONNX file {self.path} does not exist (an ONNX export of an AdaFace "
                                     "checkpoint: (1, 3, 112, 112) BGR input, (1, 512) first output)",
                                     reason="MODELS_MISSING")
        try:
            import onnx

            meta = {p.key: p.value for p in onnx.load(str(self.path), load_external_data=False).metadata_props}
            self._session = onnx_session(self.path)
        except Exception as e:   # not an ONNX file, truncated, ...
            raise FailedPrecondition(f"{self.path} is not a readable ONNX model ({type(e).__name__}: {e})",
                                     reason="MODELS_MISSING") from e
        inp, out = self._session.get_inputs(), self._session.get_outputs()
        shape, oshape = inp[0].shape, out[0].shape
        if len(inp) != 1 or len(shape) != 4 or shape[1] != 3 or tuple(shape[2:]) != (INPUT_SIZE, INPUT_SIZE) or \
                len(oshape) != 2 or not isinstance(oshape[1], int):
            raise FailedPrecondition(f"{self.path}: expected one (N, 3, 112, 112) input and an (N, D) first output, "
                                     f"got {[i.shape for i in inp]} -> {[o.shape for o in out]}", reason="MODELS_MISSING")
        self._input = inp[0].name
        self.embedding_dim = int(oshape[1])
        self.provenance = meta.get(PROVENANCE_KEY, "") or folder_provenance(self.path.parent)

    def crop(self, image: np.ndarray, landmarks_5: np.ndarray) -> np.ndarray:
        """The (112, 112, 3) RGB uint8 ArcFace-aligned crop of an RGB uint8 (H, W, 3) image."""
        return cv2.warpAffine(image, arcface_transform(landmarks_5), (INPUT_SIZE, INPUT_SIZE), borderValue=0)

    def embed(self, image: np.ndarray, landmarks_68: np.ndarray, landmarks_5: np.ndarray) -> np.ndarray:
        """Raw (D,) float32 embedding of the face at landmarks_5 (five_from_68 when None)."""
        lm5 = five_from_68(landmarks_68) if landmarks_5 is None else landmarks_5
        bgr = self.crop(image, lm5)[..., ::-1].astype(np.float32)
        x = ((bgr / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)[None].astype(np.float32)
        return self._session.run(None, {self._input: x})[0][0].astype(np.float32)

    def models(self) -> list[ModelRecord]:
        return [ModelRecord("recognizer", "adaface", self.path.name, file_sha256(self.path), self.provenance, LICENSE)]


def load_recognizer(config, detector) -> AdaFaceRecognizer:
    """The RECOGNIZERS entry "adaface": the AdaFace ONNX file config.adaface_onnx."""
    if not config.adaface_onnx:
        raise FailedPrecondition("recognizer 'adaface' needs adaface_onnx (--adaface-onnx FILE)", reason="MODELS_MISSING")
    return AdaFaceRecognizer(config.adaface_onnx)
