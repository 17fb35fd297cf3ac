"""The Triton backbone: a Stable Diffusion folder whose UNet runs in Triton Inference Server (called with
tritonclient over gRPC) while the text encoder and the VAE run in the guidance process. Everything above the
UNet call (SDS, CFG, batching, sampling) is the diffusers backbone's, so the semantics are identical.

    - name: sd15-triton
      backend: triton
      path: /models/stable-diffusion-v1-5       # vae/, text_encoder/, tokenizer/, scheduler/, unet/config.json
      triton_url: triton.models.svc:8001
      triton_model: unet                        # written by `python -m services.guidance.triton_repo`

ControlNets, identity adapters and LoRAs change the UNet's computation, which Triton's model does not
expose: a Triton entry cannot have them (a config error naming the field)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Literal

import torch

from services.core.models import ModelRecord, folder_provenance
from services.guidance.backbones.base import ModelFilesError
from services.guidance.backbones.diffusers_backbone import DiffusersBackbone
from services.guidance.backbones.diffusers_config import DiffusersBackboneConfig
from services.guidance.backbones.diffusers_loader import TORCH_DTYPES
from services.guidance.backbones.model_files import (SD_LAYOUT, check_sd_components, component_records,
                                                    read_scheduler_config, require, resolve_root)
from services.guidance.backbones.triton_unet import TritonUNet


class TritonBackboneConfig(DiffusersBackboneConfig):
    backend: Literal["triton"] = "triton"          # type: ignore[assignment]
    triton_url: str                                # HOST:PORT of Triton's gRPC endpoint
    triton_model: str = "unet"
    triton_model_version: str = ""
    triton_timeout_s: float = 120.0


def load_triton_backbone(config: TritonBackboneConfig | dict, base_dir: Path, device="cpu") -> DiffusersBackbone:
    """One `backend: triton` entry: the SD folder's text encoder, tokenizer and VAE loaded here (checked first,
    like the diffusers backend's), its UNet a TritonUNet checked against the server's model."""
    cfg = config if isinstance(config, TritonBackboneConfig) else TritonBackboneConfig.model_validate(config)
    for field in ("controlnets", "identity_adapters", "loras"):
        if getattr(cfg, field):
            raise ModelFilesError(f"backbone {cfg.name!r}: {field} are not available with backend: triton (the "
                                  "UNet runs in Triton); use backend: diffusers for them")
    device, dtype = torch.device(device), TORCH_DTYPES[cfg.dtype]
    root = resolve_root(cfg.path, Path(base_dir), SD_LAYOUT)
    require(root / "unet" / "config.json", SD_LAYOUT)
    weights = check_sd_components(root, ("vae", "text_encoder"), cfg.variant, cfg.allow_pickle)
    scheduler_cfg = read_scheduler_config(root)

    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTokenizer

    common = {"local_files_only": True, "use_safetensors": None if cfg.allow_pickle else True}
    try:
        vae = AutoencoderKL.from_pretrained(str(root), subfolder="vae", dtype=dtype, variant=cfg.variant, **common)
        text_encoder = CLIPTextModel.from_pretrained(str(root), subfolder="text_encoder", dtype=dtype,
                                                     variant=cfg.variant, **common)
        tokenizer = CLIPTokenizer.from_pretrained(str(root), subfolder="tokenizer", local_files_only=True)
    except Exception as e:
        raise ModelFilesError(f"could not load {root} ({type(e).__name__}: {e}); expected {SD_LAYOUT}") from e
    unet = TritonUNet(cfg.triton_url, root / "unet", model_name=cfg.triton_model,
                      model_version=cfg.triton_model_version, client_timeout_s=cfg.triton_timeout_s)
    for m in (vae, text_encoder):
        m.to(device).eval().requires_grad_(False)
    # Triton serves the UNet exported from this SD folder's unet/ (the config read here): the folder's marker
    # says whether its weights are random
    records = [ModelRecord("unet", "triton", f"{cfg.triton_url}/{cfg.triton_model}",
                           provenance=folder_provenance(root, root / "unet")),
               *component_records(cfg.path, weights)]
    pipe = SimpleNamespace(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)
    return DiffusersBackbone(cfg, pipe, {}, [], 0, [], records, device, dtype, scheduler_cfg, backend="triton")
