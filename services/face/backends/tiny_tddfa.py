"""A tiny, random-initialised 3DDFA-V2 folder for tests only: its outputs mean nothing.

`write_tiny_tddfa(folder)` writes the 3DDFA_V2 repository's file names and formats (services.face.backends.tddfa):
    weights/mb1_120x120.onnx                a small random conv net (torch.onnx.export, TorchScript exporter,
                                            opset 11): input "input" (1, 3, 120, 120) -> "output" (1, 62)
    configs/param_mean_std_62d_120x120.pkl  {'mean': (62,), 'std': (62,)} float32 (pickle protocol 4)
    configs/bfm_noneck_v3.pkl               a tiny BFM of N = 200 vertices: 'u' (600, 1), 'w_shp' (600, 40),
                                            'w_exp' (600, 10) float32, 'tri' (3, M) int32, 'keypoints' (204,)
                                            int64 (pickle protocol 2, as older Pythons wrote)
The 68 keypoint vertices, scattered through the vertex list, are HeadForge's own 3D template
(services.core.landmarks.TEMPLATE_68, in millimetres, centred), and the parameter mean is a frontal pose
that puts that face where 3DDFA-V2 expects a face in its 120 crop, so the random net's outputs (small
next to the std) give a plausible face. Every file is marked: a HEADFORGE_RANDOM_WEIGHTS file in the folder
and the ONNX metadata (services.core.models).

`constant_output` (62,) makes the net's last layer all-zero weights with that bias, so the net returns it
for every image: the tests use it to know R and t exactly.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from services.core.landmarks import TEMPLATE_68
from services.core.models import PROVENANCE_KEY, RANDOM_WEIGHTS, mark_random_weights
from services.face.backends.tddfa import BFM_STEM, N_EXP, N_PARAMS, N_SHAPE, ONNX_NAME, PARAM_STEM, SIZE

OPSET = 11
N_VERTICES = 200
FACE_MM = 100.0          # TEMPLATE_68 is in head units of 10 cm
CROP_FACE_PX = SIZE / 1.58   # the face box's side inside 3DDFA-V2's roi, in crop pixels


def tiny_bfm(seed: int = 0) -> dict[str, np.ndarray]:
    """The tiny BFM's arrays (shapes in the module docstring)."""
    rng = np.random.default_rng(seed)
    face = (TEMPLATE_68 - TEMPLATE_68.mean(0)) * FACE_MM
    verts = rng.uniform(face.min(0), face.max(0), (N_VERTICES, 3))
    at = rng.permutation(N_VERTICES)[:68]
    verts[at] = face
    keypoints = (3 * at[:, None] + np.arange(3)).reshape(-1).astype(np.int64)
    return {"u": verts.reshape(-1, 1).astype(np.float32),
            "w_shp": rng.normal(0.0, 1.0, (3 * N_VERTICES, N_SHAPE)).astype(np.float32),
            "w_exp": rng.normal(0.0, 1.0, (3 * N_VERTICES, N_EXP)).astype(np.float32),
            "tri": rng.integers(0, N_VERTICES, (3, 300)).astype(np.int32),
            "keypoints": keypoints}


def tiny_param_stats() -> dict[str, np.ndarray]:
    """mean: a frontal pose, the face centred where the roi puts the face box; std: small pose noise."""
    s = CROP_FACE_PX / float(np.ptp(TEMPLATE_68[:, 0]) * FACE_MM)
    # crop frame has y up; the face box centre lies 0.14 / 1.58 of the crop above its centre
    tx, ty = SIZE / 2 + 1, SIZE - (SIZE / 2 - 0.14 / 1.58 * SIZE)
    mean = np.zeros(N_PARAMS, np.float32)
    mean[:12] = [s, 0, 0, tx, 0, s, 0, ty, 0, 0, s, 0]
    std = np.ones(N_PARAMS, np.float32)
    std[:12] = [0.02 * s] * 3 + [1.0] + [0.02 * s] * 3 + [1.0] + [0.02 * s] * 3 + [1.0]
    return {"mean": mean, "std": std}


def _net(seed: int, constant_output: np.ndarray | None):
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, N_PARAMS))
    if constant_output is not None:
        with torch.no_grad():
            net[-1].weight.zero_()
            net[-1].bias.copy_(torch.as_tensor(np.asarray(constant_output, np.float32).reshape(N_PARAMS)))
    return net.eval()


def export_onnx(net, path: Path, input_shape: tuple[int, ...], output_names: list[str], written_by: str, *,
                input_name: str = "input", dynamic_batch: bool = False) -> Path:
    """torch.onnx.export with the TorchScript exporter (dynamo=False: the dynamo exporter needs onnxscript,
    not installed), then the random-weights provenance in the file's metadata. dynamic_batch: the input's
    and outputs' first dimension symbolic ("None", as InsightFace's arcface_torch torch2onnx.py leaves it)."""
    import warnings

    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the exporter's deprecation notice
        axes = {n: {0: "None"} for n in [input_name, *output_names]} if dynamic_batch else None
        torch.onnx.export(net, torch.zeros(input_shape), str(path), input_names=[input_name],
                          output_names=output_names, opset_version=OPSET, dynamo=False, dynamic_axes=axes)
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {PROVENANCE_KEY: RANDOM_WEIGHTS, "headforge_written_by":
                                        f"{written_by}; the weights are random, their outputs mean nothing"})
    onnx.save(model, str(path))
    return path


def write_tiny_tddfa(folder: Path, seed: int = 0, constant_output: np.ndarray | None = None) -> Path:
    """Write the tiny 3DDFA-V2 folder (module docstring) into `folder` and return it."""
    folder = Path(folder)
    (folder / "configs").mkdir(parents=True, exist_ok=True)
    export_onnx(_net(seed, constant_output), folder / "weights" / ONNX_NAME, (1, 3, SIZE, SIZE), ["output"],
                "services.face.backends.tiny_tddfa.write_tiny_tddfa")
    with open(folder / "configs" / f"{PARAM_STEM}.pkl", "wb") as f:
        pickle.dump(tiny_param_stats(), f, protocol=4)
    with open(folder / "configs" / f"{BFM_STEM}.pkl", "wb") as f:
        pickle.dump(tiny_bfm(seed), f, protocol=2)
    mark_random_weights(folder, "services.face.backends.tiny_tddfa.write_tiny_tddfa (headforge models make-tiny)")
    return folder
