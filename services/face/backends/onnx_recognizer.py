"""One recogniser backend for single-file ONNX face recognisers on the ArcFace-aligned 112x112 crop, run with
onnxruntime, configured per published model by an OnnxRecognizerSpec: its name, colour order, input
normalisation, expected embedding size, licence and same-person threshold. AdaFace (services.face.backends.
adaface) and CosFace (services.face.backends.cosface) are two specs of it; adding a third such model is one spec
plus its registration (services.face.backends RECOGNIZERS) and a FaceConfig field for the file.

What every spec shares: input float32 (N or 1, 3, 112, 112), the 5-point ArcFace-aligned crop
(insightface.arcface_transform, the alignment these models are trained on); the first output (N, D) is the
embedding (any further output, e.g. AdaFace's feature norm, is ignored). Embeddings are returned raw; the face
service normalises them and compares by cosine distance 1 - cos. Not differentiable: IdentityLoss needs an
InsightFace pack (its recogniser has a torch copy).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from services.common.errors import FailedPrecondition
from services.core.landmarks import five_from_68
from services.core.models import PROVENANCE_KEY, ModelRecord, file_sha256, folder_provenance
from services.face.backends.insightface import arcface_transform, onnx_session

INPUT_SIZE = 112


@dataclass(frozen=True)
class OnnxRecognizerSpec:
    """A published recogniser's conventions. Pixel x (uint8 0..255, in `channels` order) goes in as
    (x - mean) / std."""

    name: str                   # the RECOGNIZERS name and ModelRecord backend
    title: str                  # for messages: "AdaFace", "CosFace"
    channels: str               # "RGB" or "BGR": the channel order the model was trained on
    mean: float
    std: float
    license: str                # what the publisher states (or "check the publisher's terms")
    threshold: float            # same-person threshold on the cosine distance 1 - cos
    threshold_source: str       # where the threshold comes from ("ours: ..." when HeadForge chose it)
    config_field: str           # the FaceConfig field naming the file (e.g. "adaface_onnx")
    embedding_dim: int | None = None   # required D of the first output; None = any D
    expected: str = ""          # the file the spec expects, in words (for error messages)

    @property
    def flag(self) -> str:
        return "--" + self.config_field.replace("_", "-")


class OnnxRecognizer:
    """The Recognizer protocol (services.face.backends.base) on one ONNX file, with a spec's conventions.
    FailedPrecondition (MODELS_MISSING) for a missing or unreadable file, or a graph in another layout."""

    metric = "cosine_distance"
    typical_norm = 1.0      # the cosine metric ignores norms
    differentiable = False

    def __init__(self, spec: OnnxRecognizerSpec, path: str | Path):
        self.spec = spec
        self.name = spec.name
        self.threshold = spec.threshold
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FailedPrecondition(f"{spec.title} ONNX file {self.path} does not exist ({spec.expected})",
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
        dim = spec.embedding_dim
        want = f"(N, {dim})" if dim else "an (N, D)"
        if len(inp) != 1 or len(shape) != 4 or shape[1] != 3 or tuple(shape[2:]) != (INPUT_SIZE, INPUT_SIZE) or \
                len(oshape) != 2 or not isinstance(oshape[1], int) or (dim is not None and oshape[1] != dim):
            raise FailedPrecondition(
                f"{self.path} is not a {spec.title} recogniser in the expected layout: expected one "
                f"(N, 3, {INPUT_SIZE}, {INPUT_SIZE}) input and {want} first output, got inputs "
                f"{[i.shape for i in inp]} -> outputs {[o.shape for o in out]} ({spec.expected})",
                reason="MODELS_MISSING")
        self._input = inp[0].name
        self.embedding_dim = int(oshape[1])
        self.provenance = meta.get(PROVENANCE_KEY, "") or folder_provenance(self.path.parent)

    def crop(self, image: np.ndarray, landmarks_5: np.ndarray) -> np.ndarray:
        """The (112, 112, 3) RGB uint8 ArcFace-aligned crop of an RGB uint8 (H, W, 3) image."""
        return cv2.warpAffine(image, arcface_transform(landmarks_5), (INPUT_SIZE, INPUT_SIZE), borderValue=0)

    def input_tensor(self, crop_rgb: np.ndarray) -> np.ndarray:
        """The model's (1, 3, 112, 112) float32 input for an RGB uint8 crop: the spec's channel order and
        normalisation."""
        x = crop_rgb[..., ::-1] if self.spec.channels == "BGR" else crop_rgb
        x = (x.astype(np.float32) - self.spec.mean) / self.spec.std
        return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32)

    def embed(self, image: np.ndarray, landmarks_68: np.ndarray, landmarks_5: np.ndarray) -> np.ndarray:
        """Raw (D,) float32 embedding of the face at landmarks_5 (five_from_68 when None)."""
        lm5 = five_from_68(landmarks_68) if landmarks_5 is None else landmarks_5
        x = self.input_tensor(self.crop(image, lm5))
        return self._session.run(None, {self._input: x})[0][0].astype(np.float32)

    def models(self) -> list[ModelRecord]:
        return [ModelRecord("recognizer", self.spec.name, self.path.name, file_sha256(self.path), self.provenance,
                            self.spec.license)]


def load_for(spec: OnnxRecognizerSpec, config) -> OnnxRecognizer:
    """The recogniser of `spec` on the file its FaceConfig field names."""
    path = getattr(config, spec.config_field, None)
    if not path:
        raise FailedPrecondition(f"recognizer {spec.name!r} needs {spec.config_field} ({spec.flag} FILE)",
                                 reason="MODELS_MISSING")
    return OnnxRecognizer(spec, path)
