"""A tiny, random-initialised AdaFace ONNX for tests only: its outputs mean nothing.

`write_tiny_adaface(folder)` writes folder/adaface_ir101.onnx, the file an AdaFace IR-101 export would
be: input "input" (1, 3, 112, 112) -> "embedding" (1, 512), L2-normalised, and "norm" (1, 1), the
feature norm, as AdaFace's net returns (output, norm). The body is a few random conv layers
(torch.onnx.export, TorchScript exporter, opset 11), marked as random weights in the ONNX metadata and by
a HEADFORGE_RANDOM_WEIGHTS file in the folder.
"""

from __future__ import annotations

from pathlib import Path

from services.core.models import mark_random_weights
from services.face.backends.tiny_tddfa import export_onnx

FILE_NAME = "adaface_ir101.onnx"
EMBEDDING_DIM = 512


def _net(seed: int):
    import torch

    class TinyAdaFace(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8), torch.nn.PReLU(8),
                torch.nn.Conv2d(8, 8, 3, stride=4, padding=1), torch.nn.BatchNorm2d(8), torch.nn.PReLU(8),
                torch.nn.AdaptiveAvgPool2d(7), torch.nn.Flatten(), torch.nn.Linear(8 * 49, EMBEDDING_DIM),
                torch.nn.BatchNorm1d(EMBEDDING_DIM))

        def forward(self, x):
            feature = self.body(x)
            norm = torch.norm(feature, 2, 1, True)
            return feature / norm, norm

    torch.manual_seed(seed)
    return TinyAdaFace().eval()


def write_tiny_adaface(folder: Path, seed: int = 0) -> Path:
    """Write folder/adaface_ir101.onnx (module docstring) and the marker file; returns the ONNX path."""
    folder = Path(folder)
    path = export_onnx(_net(seed), folder / FILE_NAME, (1, 3, 112, 112), ["embedding", "norm"],
                       "services.face.backends.tiny_adaface.write_tiny_adaface")
    mark_random_weights(folder, "services.face.backends.tiny_adaface.write_tiny_adaface (headforge models make-tiny)")
    return path
