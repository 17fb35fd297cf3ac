"""The `backend: diffusers` entry of guidance.yaml (and its ControlNet, identity adapter and LoRA lists), with
the checks a config can fail before any file is looked at."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from services.guidance.backbones.base import (ModelFilesError, check_depth_convention, check_normal_convention,
                                             check_output_kind)
from services.guidance.types import CONTROL_KINDS


class ControlNetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str = ""            # one of types.CONTROL_KINDS, or "" for a custom ControlNet addressed by name
    path: str                 # folder (relative to the YAML file, or absolute) or an HF repo id in the local cache
    subfolder: str = ""


class IdentityAdapterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    path: str
    weight_name: str = "ip-adapter-faceid_sd15.bin"
    subfolder: str = ""
    allow_pickle: bool = False


class ExpressionAdapterConfig(BaseModel):
    """An expression adapter file (format: backbones/expression_adapter.py); at most one per backbone (a request's
    conditions.expression has no adapter name)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: str
    weight_name: str = "expression_adapter.safetensors"
    subfolder: str = ""


class LoraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    path: str
    weight_name: str = "pytorch_lora_weights.safetensors"
    subfolder: str = ""
    output_kind: str = "rgb"  # one of types.OUTPUT_KINDS: what the backbone produces with this LoRA active
    normal_convention: str = "opencv"  # output_kind "normal": the frame it was trained in (base.NORMAL_CONVENTIONS)
    allow_pickle: bool = False


class DiffusersBackboneConfig(BaseModel):
    """One entry of guidance.yaml's `backbones` list with `backend: diffusers`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    backend: Literal["diffusers"] = "diffusers"
    family: str = "sd15"
    path: str                 # SD folder (relative to the YAML file, or absolute) or an HF repo id in the local cache
    vae: str = ""             # a separate AutoencoderKL folder replacing the SD folder's vae/ (which may then be absent)
    default: bool = False
    output_kind: str = "rgb"
    normal_convention: str = "opencv"     # output_kind "normal": the frame it was trained in (base.NORMAL_CONVENTIONS)
    depth_convention: str = "inverse_depth"   # output_kind "depth": what its maps are (base.DEPTH_CONVENTIONS)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    variant: str | None = None            # e.g. "fp16" for diffusion_pytorch_model.fp16.safetensors
    allow_pickle: bool = False            # accept .bin weights in the SD and ControlNet folders
    default_negative_prompt: str = ""
    controlnets: list[ControlNetConfig] = []
    identity_adapters: list[IdentityAdapterConfig] = []
    expression_adapters: list[ExpressionAdapterConfig] = []   # 0 or 1, loaded after the identity adapters
    loras: list[LoraConfig] = []


def check_config(cfg: DiffusersBackboneConfig) -> None:
    """ModelFilesError naming the entry for duplicate names, unknown control kinds, LoRA output kinds or normal
    conventions, more than one expression adapter, and LoRA names reserved for the identity adapters' own LoRAs."""
    for kind_list, what in ((cfg.controlnets, "controlnet"), (cfg.identity_adapters, "identity adapter"),
                            (cfg.expression_adapters, "expression adapter"), (cfg.loras, "LoRA")):
        names = [e.name for e in kind_list]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ModelFilesError(f"backbone {cfg.name!r}: duplicate {what} name(s) {dupes}")
    if len(cfg.expression_adapters) > 1:
        raise ModelFilesError(f"backbone {cfg.name!r}: {len(cfg.expression_adapters)} expression adapters; at most one "
                              f"(conditions.expression does not name an adapter)")
    for c in cfg.controlnets:
        if c.kind not in CONTROL_KINDS and c.kind != "":
            raise ModelFilesError(f"backbone {cfg.name!r}: controlnet {c.name!r} has kind {c.kind!r}; expected one "
                                  f"of {list(CONTROL_KINDS)} or \"\" (custom)")
    for lora in cfg.loras:
        check_output_kind(lora.output_kind, f"backbone {cfg.name!r}: LoRA {lora.name!r}")
        check_normal_convention(lora.normal_convention, f"backbone {cfg.name!r}: LoRA {lora.name!r}")
        if lora.name.startswith("faceid_"):
            raise ModelFilesError(f"backbone {cfg.name!r}: LoRA name {lora.name!r} is reserved (faceid_<i> are the "
                                  f"identity adapters' own LoRAs)")
    check_output_kind(cfg.output_kind, f"backbone {cfg.name!r}")
    check_normal_convention(cfg.normal_convention, f"backbone {cfg.name!r}")
    check_depth_convention(cfg.depth_convention, f"backbone {cfg.name!r}")
