"""Finding and checking model files before anything is loaded: Stable Diffusion folders, ControlNet folders and
single weights files (identity adapters, LoRAs), local or in the local Hugging Face cache (never downloaded).

Every check raises ModelFilesError naming the missing or refused path and the expected layout (the *_LAYOUT
texts), so a bad model repository fails at server start with a message a person can act on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from services.core.models import ModelRecord, file_sha256, folder_provenance
from services.guidance.backbones.base import ModelFilesError

SD_LAYOUT = ("a diffusers Stable Diffusion folder: model_index.json, unet/, vae/, text_encoder/, tokenizer/, "
             "scheduler/ (unet, vae and text_encoder each with config.json and safetensors weights; tokenizer with "
             "vocab.json + merges.txt or tokenizer.json; scheduler/scheduler_config.json)")
VAE_LAYOUT = ("a diffusers AutoencoderKL folder (e.g. stabilityai/sd-vae-ft-mse, what Realistic Vision's _noVAE "
              "variants are used with): config.json and diffusion_pytorch_model.safetensors")
CONTROLNET_LAYOUT = ("a diffusers ControlNet folder (ControlNetModel.save_pretrained): config.json and "
                     "diffusion_pytorch_model.safetensors")
ADAPTER_LAYOUT = ("an IP-Adapter-FaceID weights file (e.g. ip-adapter-faceid_sd15.bin from h94/IP-Adapter-FaceID): "
                  "a dict {'image_proj': {proj.0.*, proj.2.*, norm.*}, 'ip_adapter': {'<i>.to_k_ip.weight', "
                  "'<i>.to_v_ip.weight', ...}} (torch pickle, or safetensors with image_proj./ip_adapter. prefixes)")
LORA_LAYOUT = ("a UNet LoRA weights file that diffusers' load_lora_weights reads (diffusers or kohya format, e.g. "
               "pytorch_lora_weights.safetensors)")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

# Model folders are never downloaded: huggingface_hub reads this when it is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The weights file stem of each weighted Stable Diffusion component (diffusers vs transformers naming).
SD_WEIGHT_STEMS = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}


def resolve_root(path: str, base_dir: Path, layout: str) -> Path:
    """A configured location -> a local folder: an existing directory (relative to base_dir or absolute), else an
    HF repo id ("owner/name") resolved from the local cache only."""
    p = Path(path).expanduser()
    local = p if p.is_absolute() else Path(base_dir) / p
    if local.is_dir():
        return local
    looks_like_repo = (not p.is_absolute() and path.count("/") == 1 and not path.startswith((".", "~"))
                       and all(part for part in path.split("/")))
    if looks_like_repo:
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(repo_id=path, local_files_only=True))
        except Exception as e:  # LocalEntryNotFoundError, HFValidationError, ...
            raise ModelFilesError(
                f"missing {local} (no such folder) and Hugging Face repo {path!r} is not in the local cache "
                f"({type(e).__name__}); expected {layout}") from None
    raise ModelFilesError(f"missing {local}; expected {layout}")


def require(path: Path, layout: str) -> Path:
    """`path` itself when it exists, else ModelFilesError naming it and `layout`."""
    if not path.exists():
        raise ModelFilesError(f"missing {path}; expected {layout}")
    return path


def weights_files(folder: Path, stem: str, variant: str | None, allow_pickle: bool, layout: str) -> list[Path]:
    """The weights file(s) diffusers/transformers will load from `folder` (stem "diffusion_pytorch_model" or
    "model"), safetensors first, sharded or not; pickles only when allowed."""
    v = f".{variant}" if variant else ""
    single = folder / f"{stem}{v}.safetensors"
    if single.is_file():
        return [single]
    index = folder / f"{stem}{v}.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ModelFilesError(f"missing {folder / missing[0]} (listed in {index}); expected {layout}")
        return [folder / s for s in shards]
    pickled = folder / f"{'pytorch_model' if stem == 'model' else stem}{v}.bin"
    if pickled.is_file():
        if not allow_pickle:
            raise ModelFilesError(
                f"{pickled} is a pickle and no safetensors weights are in {folder}; set allow_pickle: true to "
                f"load it (read with torch.load(weights_only=True)); expected {layout}")
        return [pickled]
    raise ModelFilesError(f"missing {single}; expected {layout}")


def check_sd_components(root: Path, parts: tuple[str, ...], variant: str | None,
                        allow_pickle: bool) -> dict[str, list[Path]]:
    """Each weighted component in `parts` ("unet", "vae", "text_encoder") of the SD folder `root`: its folder,
    config.json and weights; then the tokenizer and the scheduler config. Returns {part: weights files}."""
    weights = {}
    for sub in parts:
        require(root / sub, SD_LAYOUT)
        require(root / sub / "config.json", SD_LAYOUT)
        weights[sub] = weights_files(root / sub, SD_WEIGHT_STEMS[sub], variant, allow_pickle, SD_LAYOUT)
    tok = require(root / "tokenizer", SD_LAYOUT)
    if not (tok / "tokenizer.json").is_file():
        require(tok / "vocab.json", SD_LAYOUT)
        require(tok / "merges.txt", SD_LAYOUT)
    require(root / "scheduler" / "scheduler_config.json", SD_LAYOUT)
    return weights


def read_scheduler_config(root: Path) -> dict:
    """The SD folder's scheduler/scheduler_config.json (the training noise schedule and sampler defaults)."""
    return json.loads(require(root / "scheduler" / "scheduler_config.json", SD_LAYOUT).read_text())


def weight_file(root: Path, subfolder: str, weight_name: str, allow_pickle: bool, layout: str) -> Path:
    """root/[subfolder/]weight_name, which must exist; a pickle (PICKLE_SUFFIXES) only when allowed."""
    path = require(root / subfolder / weight_name if subfolder else root / weight_name, layout)
    if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ModelFilesError(f"{path} is a pickle; set allow_pickle: true on its entry to load it (read with "
                              f"torch.load(weights_only=True)); expected {layout}")
    return path


def weights_provenance(files: list[Path]) -> str:
    """The provenance (services.core.models) of a model's weights files: "random_weights" when the random-weights
    marker lies in a file's folder or the folder above it (a component or subfolder of a model root)."""
    return folder_provenance(*{d for f in files for d in (f.parent, f.parent.parent)})


def component_records(path: str, weights: dict[str, list[Path]], backend: str = "diffusers") -> list[ModelRecord]:
    """One ModelRecord per SD component (role = component, name = "<configured path>/<component>") with the
    SHA-256 and the provenance of its weights files."""
    return [ModelRecord(sub, backend, f"{path}/{sub}", file_sha256(*files), weights_provenance(files))
            for sub, files in weights.items()]
