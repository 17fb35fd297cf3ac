"""A tiny, random-initialised CosFace ONNX for tests only: its outputs mean nothing.

`write_tiny_cosface(folder)` writes folder/glint360k_cosface_r100.onnx, the file InsightFace's arcface_torch
torch2onnx.py writes from a glint360k_cosface_r100_fp16_0.1 backbone.pth: input "data" (None, 3, 112, 112)
-> "embedding" (None, 512), the raw feature after a BatchNorm1d (not L2-normalised), the batch dimension
dynamic. The body is a few random conv layers (torch.onnx.export, TorchScript exporter, opset 11), marked as
random weights in the ONNX metadata and by a HEADFORGE_RANDOM_WEIGHTS file in the folder. input_size and
embedding_dim other than 112 / 512 write a file in a wrong layout (for the refusal tests; input_size
56 * k for the pooling).
"""

from __future__ import annotations

from pathlib import Path

from services.core.models import mark_random_weights
from services.face.backends.tiny_tddfa import export_onnx

FILE_NAME = "glint360k_cosface_r100.onnx"
EMBEDDING_DIM = 512
WRITTEN_BY = "services.face.backends.tiny_cosface.write_tiny_cosface"


def _net(seed: int, embedding_dim: int):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8), torch.nn.PReLU(8),
        torch.nn.Conv2d(8, 8, 3, stride=4, padding=1), torch.nn.BatchNorm2d(8), torch.nn.PReLU(8),
        torch.nn.AdaptiveAvgPool2d(7), torch.nn.Flatten(), torch.nn.Linear(8 * 49, embedding_dim),
        torch.nn.BatchNorm1d(embedding_dim)).eval()


def write_tiny_cosface(folder: Path, seed: int = 0, *, input_size: int = 112, embedding_dim: int = EMBEDDING_DIM,
                       name: str = FILE_NAME) -> Path:
    """Write folder/`name` (module docstring) and the marker file; returns the ONNX path."""
    folder = Path(folder)
    path = export_onnx(_net(seed, embedding_dim), folder / name, (1, 3, input_size, input_size), ["embedding"],
                       WRITTEN_BY, input_name="data", dynamic_batch=True)
    mark_random_weights(folder, f"{WRITTEN_BY} (headforge models make-tiny)")
    return path
