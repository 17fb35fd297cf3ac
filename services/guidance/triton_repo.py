"""Write a Triton Inference Server model repository that serves a diffusers Stable Diffusion UNet.

The guidance service can run its UNet in Triton (backbone backend "triton") while the text encoder and the
VAE stay in the guidance process; `services.guidance.backbones.triton_unet.TritonUNet` is the client side.
`write_triton_repository(unet_dir, repo_dir)` turns the `unet/` folder of a diffusers `save_pretrained`
Stable Diffusion folder (config.json + diffusion_pytorch_model.safetensors) into this layout:

    repo_dir/
      <model_name>/                      "unet" by default
        config.pbtxt                     backend "python", dynamic batching, the tensors below
        1/                               model version 1
          model.py                       Triton python-backend model: loads the diffusers UNet with torch
          unet/                          a copy (or symlinks, weights="symlink") of the diffusers unet folder
            config.json
            diffusion_pytorch_model.safetensors

The tensors (names, dtypes and shapes without the batch dimension, which Triton adds because
max_batch_size > 0):

    input  sample                 TYPE_FP32   [C, -1, -1]   noisy latents, C = config.in_channels
    input  timestep               TYPE_INT64  [1]           integer training timestep, one per row
    input  encoder_hidden_states  TYPE_FP32   [-1, D]       text-encoder states, D = config.cross_attention_dim
    output noise_pred             TYPE_FP32   [C', -1, -1]  the UNet's prediction (C' = config.out_channels)

h, w and the sequence length L are variable; Triton's dynamic batcher groups requests of the same shapes
(up to `max_batch_size` rows, waiting at most `max_queue_delay_us` for partners) into one model execution.
The prediction is whatever the UNet predicts (epsilon or v; the backbone converts), exactly the output of
the in-process `UNet2DConditionModel(sample, timestep, encoder_hidden_states).sample`.

Why the python backend: the Triton server that installs from PyPI (the `nvidia-pytriton` wheel's
`tritonserver` binary) ships only the python backend, so this is the format that runs everywhere we can run
Triton (CPU developer machines and GPU nodes alike). `model.py` needs torch, numpy, safetensors and diffusers
in the Python environment the python backend runs (see `services.guidance.triton_server`). On a GPU instance
group (instance_kind "KIND_GPU", or "KIND_AUTO" on a GPU machine) it runs on the instance's CUDA device, in
`dtype` ("float32", or "float16" for speed; the wire stays FP32).

Operators: `python -m services.guidance.triton_repo UNET_DIR REPO_DIR [--max-batch-size 16 ...]` writes the
repository; `python -m services.guidance.triton_server` starts a server on it (see that module).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from services.guidance.backbones.base import ModelFilesError

# Tensor names shared with the client (backbones/triton_unet.py).
INPUT_SAMPLE = "sample"
INPUT_TIMESTEP = "timestep"
INPUT_TEXT = "encoder_hidden_states"
OUTPUT_NOISE = "noise_pred"

WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")
INSTANCE_KINDS = ("KIND_AUTO", "KIND_CPU", "KIND_GPU")
DTYPES = ("float32", "float16", "bfloat16")

# The python-backend model. It runs inside Triton's Python stub (its own interpreter and environment, without
# HeadForge on the path), so it is self-contained: torch, numpy and diffusers only.
MODEL_PY = '''\
"""Triton python-backend model: a diffusers UNet2DConditionModel (written by HeadForge's
services/guidance/triton_repo.py; edit that file, not this copy).

inputs  sample (B, C, h, w) FP32, timestep (B, 1) INT64, encoder_hidden_states (B, L, D) FP32
output  noise_pred (B, C', h, w) FP32
Requests that Triton's dynamic batcher hands over together are concatenated (grouped by shape) and run in
one UNet call; each request gets its own rows back.
"""

import json
import os

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        version_dir = os.path.join(args["model_repository"], str(args["model_version"]))
        unet_dir = params.get("unet_dir") or "unet"
        if not os.path.isabs(unet_dir):
            unet_dir = os.path.join(version_dir, unet_dir)
        threads = int(params.get("torch_num_threads") or 0)
        if threads > 0:
            torch.set_num_threads(threads)
        if args.get("model_instance_kind") == "GPU" and torch.cuda.is_available():
            self.device = torch.device("cuda", int(args.get("model_instance_device_id") or 0))
        else:
            self.device = torch.device("cpu")
        self.dtype = _DTYPES[params.get("dtype") or "float32"]
        if self.device.type == "cpu" and self.dtype == torch.float16:
            self.dtype = torch.float32   # no fast fp16 convolutions on CPU

        from diffusers import UNet2DConditionModel

        variant = params.get("variant") or None
        self.unet = UNet2DConditionModel.from_pretrained(unet_dir, torch_dtype=self.dtype, variant=variant,
                                                         use_safetensors=True, local_files_only=True)
        self.unet.to(self.device).eval().requires_grad_(False)
        self.names = (params.get("input_sample") or "sample", params.get("input_timestep") or "timestep",
                      params.get("input_text") or "encoder_hidden_states", params.get("output") or "noise_pred")

    def _inputs(self, request):
        sample_name, t_name, text_name, _ = self.names
        sample = pb_utils.get_input_tensor_by_name(request, sample_name).as_numpy()
        t = pb_utils.get_input_tensor_by_name(request, t_name).as_numpy()
        text = pb_utils.get_input_tensor_by_name(request, text_name).as_numpy()
        if sample.ndim != 4 or text.ndim != 3 or t.reshape(-1).shape[0] != sample.shape[0] \\
                or text.shape[0] != sample.shape[0]:
            raise ValueError(f"inconsistent shapes: sample {sample.shape}, timestep {t.shape}, "
                             f"encoder_hidden_states {text.shape}")
        return sample, t.reshape(-1).astype(np.int64), text

    def execute(self, requests):
        responses = [None] * len(requests)
        groups = {}
        for i, request in enumerate(requests):
            try:
                sample, t, text = self._inputs(request)
            except Exception as exc:  # one bad request must not fail its batch partners
                responses[i] = pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc)))
                continue
            groups.setdefault((sample.shape[1:], text.shape[1:]), []).append((i, sample, t, text))
        for members in groups.values():
            try:
                sample = torch.from_numpy(np.concatenate([m[1] for m in members]))
                t = torch.from_numpy(np.concatenate([m[2] for m in members]))
                text = torch.from_numpy(np.concatenate([m[3] for m in members]))
                with torch.inference_mode():
                    out = self.unet(sample.to(self.device, self.dtype), t.to(self.device),
                                    encoder_hidden_states=text.to(self.device, self.dtype), return_dict=False)[0]
                out = out.float().cpu().numpy()
                row = 0
                for i, s, _, _ in members:
                    piece = np.ascontiguousarray(out[row:row + s.shape[0]])
                    row += s.shape[0]
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.names[3], piece)])
            except Exception as exc:
                for i, *_ in members:
                    responses[i] = pb_utils.InferenceResponse(output_tensors=[],
                                                              error=pb_utils.TritonError(f"UNet failed: {exc}"))
        return responses

    def finalize(self):
        self.unet = None
'''


def read_unet_config(unet_dir: Path) -> dict:
    """The diffusers UNet config (unet_dir/config.json); ModelFilesError naming the path when missing or bad."""
    path = Path(unet_dir) / "config.json"
    if not path.is_file():
        raise ModelFilesError(f"UNet folder {unet_dir}: no config.json (expected a diffusers UNet folder: "
                              f"config.json + diffusion_pytorch_model.safetensors)")
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFilesError(f"{path}: not a readable JSON file: {exc}") from exc
    class_name = config.get("_class_name", "UNet2DConditionModel")
    if class_name != "UNet2DConditionModel":
        raise ModelFilesError(f"{path}: _class_name is {class_name!r}; only UNet2DConditionModel is served "
                              f"over Triton")
    for key in ("in_channels", "cross_attention_dim"):
        if not isinstance(config.get(key), int):
            raise ModelFilesError(f"{path}: {key} missing or not an integer")
    return config


def _weights(unet_dir: Path, variant: str | None) -> list[Path]:
    name = f"diffusion_pytorch_model.{variant}.safetensors" if variant else WEIGHT_FILES[0]
    single = unet_dir / name
    if single.is_file():
        return [single]
    # Sharded checkpoints: an index plus its shards.
    index = unet_dir / (name + ".index.json")
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, json.JSONDecodeError, KeyError, AttributeError) as exc:
            raise ModelFilesError(f"{index}: not a safetensors index: {exc}") from exc
        missing = [s for s in shards if not (unet_dir / s).is_file()]
        if missing:
            raise ModelFilesError(f"{index}: shards missing: {', '.join(missing)}")
        return [index, *(unet_dir / s for s in shards)]
    raise ModelFilesError(f"UNet folder {unet_dir}: no {name} (safetensors weights are required; pickled .bin "
                          f"weights are not served)")


def _dims(values) -> str:
    return "[ " + ", ".join(str(int(v)) for v in values) + " ]"


def model_config_pbtxt(config: dict, *, model_name: str, max_batch_size: int, max_queue_delay_us: int,
                       preferred_batch_sizes: tuple[int, ...], instance_kind: str, instance_count: int,
                       parameters: dict[str, str]) -> str:
    """config.pbtxt text for the UNet (see the module docstring for the tensors)."""
    c_in = int(config["in_channels"])
    c_out = int(config.get("out_channels", c_in))
    d = int(config["cross_attention_dim"])
    lines = [
        f'name: "{model_name}"',
        'backend: "python"',
        f"max_batch_size: {max_batch_size}",
        "input [",
        f'  {{ name: "{INPUT_SAMPLE}" data_type: TYPE_FP32 dims: {_dims([c_in, -1, -1])} }},',
        f'  {{ name: "{INPUT_TIMESTEP}" data_type: TYPE_INT64 dims: {_dims([1])} }},',
        f'  {{ name: "{INPUT_TEXT}" data_type: TYPE_FP32 dims: {_dims([-1, d])} }}',
        "]",
        "output [",
        f'  {{ name: "{OUTPUT_NOISE}" data_type: TYPE_FP32 dims: {_dims([c_out, -1, -1])} }}',
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: {_dims(preferred_batch_sizes)}",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        f"instance_group [ {{ count: {instance_count} kind: {instance_kind} }} ]",
    ]
    for key, value in sorted(parameters.items()):
        lines.append(f'parameters {{ key: "{key}" value: {{ string_value: {json.dumps(str(value))} }} }}')
    return "\n".join(lines) + "\n"


def write_triton_repository(
    unet_dir: Path,
    repo_dir: Path,
    *,
    model_name: str = "unet",
    max_batch_size: int = 16,
    max_queue_delay_us: int = 2000,
    preferred_batch_sizes: tuple[int, ...] | None = None,
    instance_kind: str = "KIND_AUTO",
    instance_count: int = 1,
    dtype: str = "float32",
    variant: str | None = None,
    weights: str = "copy",
    torch_num_threads: int = 0,
    overwrite: bool = False,
) -> Path:
    """Write repo_dir/<model_name>/{config.pbtxt, 1/model.py, 1/unet/...} serving the UNet in unet_dir.

    max_batch_size: most rows per model execution (Triton's dynamic batcher sums the requests' batch sizes);
      a client call with more rows is split by TritonUNet. preferred_batch_sizes: batch sizes the batcher
      dispatches at once (default: (max_batch_size,)); otherwise it waits up to max_queue_delay_us.
    instance_kind / instance_count: Triton instance group ("KIND_AUTO" = GPU when the server has one).
    dtype: compute dtype inside the model ("float16" only takes effect on GPU instances). variant: the
      weights variant to load (e.g. "fp16" for diffusion_pytorch_model.fp16.safetensors).
    weights: "copy" (self-contained repository), "symlink" (links to the files in unet_dir; the repository
      then depends on unet_dir staying in place) or "reference" (no files; model.py loads unet_dir by its
      absolute path, which must exist on the Triton host).
    torch_num_threads: torch.set_num_threads in the model (0 = torch's default).
    overwrite: replace an existing repo_dir/<model_name>; otherwise an existing one is an error.
    Returns the model folder repo_dir/<model_name>. ModelFilesError when unet_dir is not a diffusers UNet
    folder with safetensors weights; ValueError for bad options.
    """
    unet_dir = Path(unet_dir).resolve()
    repo_dir = Path(repo_dir)
    if not model_name or any(ch in model_name for ch in "/\\ \"") or model_name.startswith("."):
        raise ValueError(f"model_name {model_name!r}: use a plain folder name")
    if not 1 <= max_batch_size <= 4096:
        raise ValueError(f"max_batch_size {max_batch_size}: must be in 1..4096")
    if max_queue_delay_us < 0:
        raise ValueError(f"max_queue_delay_us {max_queue_delay_us}: must be >= 0")
    preferred = tuple(int(b) for b in (preferred_batch_sizes or (max_batch_size,)))
    if not preferred or any(not 1 <= b <= max_batch_size for b in preferred):
        raise ValueError(f"preferred_batch_sizes {preferred}: each must be in 1..max_batch_size")
    if instance_kind not in INSTANCE_KINDS:
        raise ValueError(f"instance_kind {instance_kind!r}: one of {INSTANCE_KINDS}")
    if instance_count < 1:
        raise ValueError("instance_count must be >= 1")
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: one of {DTYPES}")
    if weights not in ("copy", "symlink", "reference"):
        raise ValueError(f"weights {weights!r}: 'copy', 'symlink' or 'reference'")

    config = read_unet_config(unet_dir)
    files = _weights(unet_dir, variant)

    model_dir = repo_dir / model_name
    if model_dir.exists():
        if not overwrite:
            raise FileExistsError(f"{model_dir} exists (pass overwrite=True to replace it)")
        shutil.rmtree(model_dir)
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True)

    parameters = {"dtype": dtype}
    if variant:
        parameters["variant"] = variant
    if torch_num_threads:
        parameters["torch_num_threads"] = str(int(torch_num_threads))
    if weights == "reference":
        parameters["unet_dir"] = str(unet_dir)
    else:
        target = version_dir / "unet"
        target.mkdir()
        for src in [unet_dir / "config.json", *files]:
            if weights == "copy":
                shutil.copy2(src, target / src.name)
            else:
                os.symlink(src, target / src.name)

    (version_dir / "model.py").write_text(MODEL_PY)
    (model_dir / "config.pbtxt").write_text(model_config_pbtxt(
        config, model_name=model_name, max_batch_size=max_batch_size, max_queue_delay_us=max_queue_delay_us,
        preferred_batch_sizes=preferred, instance_kind=instance_kind, instance_count=instance_count,
        parameters=parameters))
    return model_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a Triton model repository serving a diffusers UNet.")
    parser.add_argument("unet_dir", type=Path, help="the unet/ folder of a diffusers Stable Diffusion folder")
    parser.add_argument("repo_dir", type=Path, help="the Triton model repository to write into")
    parser.add_argument("--model-name", default="unet")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-queue-delay-us", type=int, default=2000)
    parser.add_argument("--preferred-batch-size", type=int, action="append", default=None)
    parser.add_argument("--instance-kind", default="KIND_AUTO", choices=INSTANCE_KINDS)
    parser.add_argument("--instance-count", type=int, default=1)
    parser.add_argument("--dtype", default="float32", choices=DTYPES)
    parser.add_argument("--variant", default=None)
    parser.add_argument("--weights", default="copy", choices=("copy", "symlink", "reference"))
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    model_dir = write_triton_repository(
        args.unet_dir, args.repo_dir, model_name=args.model_name, max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        preferred_batch_sizes=tuple(args.preferred_batch_size) if args.preferred_batch_size else None,
        instance_kind=args.instance_kind, instance_count=args.instance_count, dtype=args.dtype,
        variant=args.variant, weights=args.weights, overwrite=args.overwrite)
    print(model_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
