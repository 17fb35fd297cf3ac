"""Loading a `backend: diffusers` entry: every expected folder and file is checked first (model_files.py), then
the Stable Diffusion pipeline, its ControlNets, IP-Adapter-FaceID identity adapters and UNet LoRAs are loaded
once, offline, and wrapped in a DiffusersBackbone.

Pickled weights (.bin/.pt/.ckpt) are refused unless the entry sets `allow_pickle: true` (diffusers then reads
them with torch.load(weights_only=True)); the h94 FaceID adapters only exist in that format.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from services.core.models import ModelRecord, file_sha256
from services.guidance.backbones.base import ModelFilesError
from services.guidance.backbones.diffusers_backbone import DiffusersBackbone
from services.guidance.backbones.diffusers_config import DiffusersBackboneConfig, check_config
from services.guidance.backbones.expression_adapter import LAYOUT as EXPRESSION_LAYOUT, read_expression_adapter
from services.guidance.backbones.model_files import (ADAPTER_LAYOUT, CONTROLNET_LAYOUT, LORA_LAYOUT,
                                                    PICKLE_SUFFIXES, SD_LAYOUT, VAE_LAYOUT, check_sd_components,
                                                    component_records, read_scheduler_config, require,
                                                    resolve_root, weight_file, weights_files,
                                                    weights_provenance)

log = logging.getLogger(__name__)

TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_TEXT_ENCODER_PREFIXES = ("text_encoder", "te_", "lora_te")


@dataclass
class _Files:
    """Every file of one entry, found and checked before anything is loaded."""

    root: Path
    sd_weights: dict[str, list[Path]]
    vae_dir: Path | None = None             # a separate VAE folder (the entry's `vae`)
    control_dirs: dict[str, Path] = field(default_factory=dict)
    control_weights: dict[str, list[Path]] = field(default_factory=dict)
    adapter_files: dict[str, Path] = field(default_factory=dict)
    lora_files: dict[str, Path] = field(default_factory=dict)
    expression_files: dict[str, Path] = field(default_factory=dict)


def load_diffusers_backbone(config: DiffusersBackboneConfig | dict, base_dir: Path,
                            device: torch.device | str = "cpu") -> DiffusersBackbone:
    """Load one backbone entry offline. Paths are relative to base_dir (the YAML file's folder), absolute, or HF
    repo ids in the local cache. Every expected folder and file is checked first: a missing one raises
    ModelFilesError naming it and the expected layout; so do bad control kinds, LoRA output kinds and names."""
    cfg = config if isinstance(config, DiffusersBackboneConfig) else DiffusersBackboneConfig.model_validate(config)
    device = torch.device(device)
    dtype = TORCH_DTYPES[cfg.dtype]
    check_config(cfg)
    files = _find_files(cfg, Path(base_dir))

    from diffusers import AutoencoderKL, StableDiffusionPipeline

    safetensors = None if cfg.allow_pickle else True
    try:
        extra = {}
        if files.vae_dir is not None:
            extra["vae"] = AutoencoderKL.from_pretrained(str(files.vae_dir), dtype=dtype, local_files_only=True,
                                                         use_safetensors=safetensors, variant=cfg.variant)
        pipe = StableDiffusionPipeline.from_pretrained(
            str(files.root), dtype=dtype, local_files_only=True, use_safetensors=safetensors,
            variant=cfg.variant, safety_checker=None, feature_extractor=None, requires_safety_checker=False, **extra)
    except Exception as e:
        raise ModelFilesError(f"could not load {files.root} ({type(e).__name__}: {e}); expected {SD_LAYOUT}") from e
    pipe.set_progress_bar_config(disable=True)
    controlnets = _load_controlnets(cfg, files, dtype, device)
    adapter_dim = _load_ip_adapters(cfg, files, pipe)
    for lora in cfg.loras:
        _load_lora(pipe, lora.name, files.lora_files[lora.name])

    pipe.to(device)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval()
        m.requires_grad_(False)
    for net in controlnets.values():
        net.requires_grad_(False)
    return DiffusersBackbone(cfg, pipe, controlnets, [a.name for a in cfg.identity_adapters], adapter_dim,
                             list(cfg.loras), _records(cfg, files), device, dtype, read_scheduler_config(files.root),
                             expression_adapters=[e.name for e in cfg.expression_adapters])


def _find_files(cfg: DiffusersBackboneConfig, base_dir: Path) -> _Files:
    root = resolve_root(cfg.path, base_dir, SD_LAYOUT)
    require(root / "model_index.json", SD_LAYOUT)
    parts = ("unet", "text_encoder") if cfg.vae else ("unet", "vae", "text_encoder")
    files = _Files(root, check_sd_components(root, parts, cfg.variant, cfg.allow_pickle))
    if cfg.vae:
        vae = resolve_root(cfg.vae, base_dir, VAE_LAYOUT)
        require(vae / "config.json", VAE_LAYOUT)
        files.sd_weights["vae"] = weights_files(vae, "diffusion_pytorch_model", cfg.variant, cfg.allow_pickle,
                                                VAE_LAYOUT)
        files.vae_dir = vae
    for c in cfg.controlnets:
        folder = resolve_root(c.path, base_dir, CONTROLNET_LAYOUT)
        folder = folder / c.subfolder if c.subfolder else folder
        require(folder / "config.json", CONTROLNET_LAYOUT)
        files.control_weights[c.name] = weights_files(folder, "diffusion_pytorch_model", cfg.variant,
                                                      cfg.allow_pickle, CONTROLNET_LAYOUT)
        files.control_dirs[c.name] = folder
    for a in cfg.identity_adapters:
        folder = resolve_root(a.path, base_dir, ADAPTER_LAYOUT)
        files.adapter_files[a.name] = weight_file(folder, a.subfolder, a.weight_name,
                                                  a.allow_pickle or cfg.allow_pickle, ADAPTER_LAYOUT)
    for e in cfg.expression_adapters:
        folder = resolve_root(e.path, base_dir, EXPRESSION_LAYOUT)
        files.expression_files[e.name] = weight_file(folder, e.subfolder, e.weight_name, True,   # the format check
                                                     EXPRESSION_LAYOUT)                  # says "not safetensors"
    for lora in cfg.loras:
        folder = resolve_root(lora.path, base_dir, LORA_LAYOUT)
        files.lora_files[lora.name] = weight_file(folder, lora.subfolder, lora.weight_name,
                                                  lora.allow_pickle or cfg.allow_pickle, LORA_LAYOUT)
    return files


def _records(cfg: DiffusersBackboneConfig, files: _Files) -> list[ModelRecord]:
    own = {k: v for k, v in files.sd_weights.items() if not (k == "vae" and cfg.vae)}
    records = component_records(cfg.path, own)
    if cfg.vae:
        vae = files.sd_weights["vae"]
        records.append(ModelRecord("vae", "diffusers", cfg.vae, file_sha256(*vae), weights_provenance(vae)))
    records += [ModelRecord(f"controlnet:{c.name}", "diffusers", c.path, file_sha256(*files.control_weights[c.name]),
                            weights_provenance(files.control_weights[c.name])) for c in cfg.controlnets]
    records += [ModelRecord(f"identity_adapter:{a.name}", "diffusers", a.path, file_sha256(files.adapter_files[a.name]),
                            weights_provenance([files.adapter_files[a.name]])) for a in cfg.identity_adapters]
    records += [ModelRecord(f"expression_adapter:{e.name}", "diffusers", e.path,
                            file_sha256(files.expression_files[e.name]),
                            weights_provenance([files.expression_files[e.name]])) for e in cfg.expression_adapters]
    records += [ModelRecord(f"lora:{lora.name}", "diffusers", lora.path, file_sha256(files.lora_files[lora.name]),
                            weights_provenance([files.lora_files[lora.name]])) for lora in cfg.loras]
    return records


def _load_controlnets(cfg: DiffusersBackboneConfig, files: _Files, dtype: torch.dtype, device: torch.device) -> dict:
    from diffusers import ControlNetModel

    controlnets = {}
    for c in cfg.controlnets:
        folder = files.control_dirs[c.name]
        try:
            net = ControlNetModel.from_pretrained(str(folder), dtype=dtype, local_files_only=True,
                                                  use_safetensors=None if cfg.allow_pickle else True,
                                                  variant=cfg.variant)
        except Exception as e:
            raise ModelFilesError(f"could not load controlnet {c.name!r} from {folder} "
                                  f"({type(e).__name__}: {e}); expected {CONTROLNET_LAYOUT}") from e
        controlnets[c.name] = net.to(device).eval()
    return controlnets


def _load_adapter_state(path: Path) -> dict:
    """The {"image_proj": ..., "ip_adapter": ...} dict of an IP-Adapter file, read the way diffusers reads it."""
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        state = {"image_proj": {}, "ip_adapter": {}}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for key in f.keys():
                head, _, rest = key.partition(".")
                if head in state:
                    state[head][rest] = f.get_tensor(key)
        return state
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_ip_adapters(cfg: DiffusersBackboneConfig, files: _Files, pipe) -> int:
    """Load every identity adapter, then the expression adapter, into the pipeline's UNet in one call of
    diffusers' IP-Adapter loader (its adapter list, in that order: the identity adapters are adapters
    0..n-1 and their FaceID LoRAs `faceid_<i>`, the expression adapter is adapter n); returns the identity
    adapters' common embedding dimension (0 = none). Expression files are checked (expression_adapter.py)
    against this UNet and text encoder before anything is loaded."""
    if not cfg.identity_adapters and not cfg.expression_adapters:
        return 0
    adapter_dim = 0
    states = []
    for a in cfg.identity_adapters:
        path = files.adapter_files[a.name]
        try:
            state = _load_adapter_state(path)
        except Exception as e:
            raise ModelFilesError(f"could not read {path} ({type(e).__name__}: {e}); "
                                  f"expected {ADAPTER_LAYOUT}") from e
        proj = state.get("image_proj", {}) if isinstance(state, dict) else {}
        if not isinstance(state, dict) or "ip_adapter" not in state or "norm.weight" not in proj \
                or "proj.0.weight" not in proj or "perceiver_resampler.proj_in.weight" in proj:
            raise ModelFilesError(f"{path} is not an IP-Adapter-FaceID file; expected {ADAPTER_LAYOUT}")
        dim = int(proj["proj.0.weight"].shape[1])
        if adapter_dim and dim != adapter_dim:
            raise ModelFilesError(f"{path}: identity embedding dim {dim} differs from the other adapters' "
                                  f"{adapter_dim}")
        adapter_dim = dim
        states.append(state)
    text_dim = int(pipe.text_encoder.config.hidden_size)
    for e in cfg.expression_adapters:
        states.append(read_expression_adapter(files.expression_files[e.name], pipe.unet, text_dim)[0])
    try:
        pipe.load_ip_adapter(states, subfolder=[""] * len(states), weight_name=[""] * len(states),
                             image_encoder_folder=None, low_cpu_mem_usage=False)
    except Exception as e:
        raise ModelFilesError(f"could not load IP adapters {list(files.adapter_files.values())} "
                              f"{list(files.expression_files.values())} into the UNet ({type(e).__name__}: {e}); expected {ADAPTER_LAYOUT}") from e
    return adapter_dim


_ALPHA_KEY = re.compile(r"^(?P<module>.+?)(?:\.processor)?\.(?P<proj>to_q|to_k|to_v|to_out)(?:_lora|\.0)?"
                        r"(?:\.lora)?\.down\.weight\.alpha$")


def _module_alpha_keys(alphas: dict) -> dict:
    """Per-module alphas keyed by the UNet module they scale (`unet.<block>.attn2.to_k.alpha`). diffusers' kohya
    converter names them after the old attention processors (`...attn2.processor.to_k_lora.down.weight.alpha`),
    which peft's alpha_pattern never matches: modules whose alpha differs from the most common one (e.g. a LoRA
    of rank 16 on self- and 32 on cross-attention, alpha = rank) would silently get the wrong scale."""
    out = {}
    for key, value in alphas.items():
        m = _ALPHA_KEY.match(key)
        if m is None:
            out[key] = value
            continue
        proj = "to_out.0" if m["proj"] == "to_out" else m["proj"]
        out[f"{m['module']}.{proj}.alpha"] = value
    return out


def _load_lora(pipe, name: str, path: Path) -> None:
    """One UNet LoRA as the peft adapter `name` (its text-encoder tensors, if any, are dropped with a warning)."""
    try:
        state, alphas, metadata = pipe.lora_state_dict(
            str(path.parent), weight_name=path.name, local_files_only=True,
            use_safetensors=None if path.suffix in PICKLE_SUFFIXES else True, return_lora_metadata=True)
        unet_keys = [k for k in state if not k.startswith(_TEXT_ENCODER_PREFIXES)]
        if len(unet_keys) != len(state):
            log.warning("LoRA %s: dropping %d text-encoder tensors (only UNet LoRAs are applied per call)",
                        path, len(state) - len(unet_keys))
        state = {k: state[k] for k in unet_keys}
        if alphas:
            alphas = _module_alpha_keys({k: v for k, v in alphas.items() if not k.startswith(_TEXT_ENCODER_PREFIXES)})
        if not state:
            raise ValueError("no UNet LoRA tensors")
        pipe.load_lora_into_unet(state, network_alphas=alphas or None, unet=pipe.unet, adapter_name=name,
                                 metadata=metadata, _pipeline=pipe)
    except Exception as e:
        raise ModelFilesError(f"could not load LoRA {name!r} from {path} ({type(e).__name__}: {e}); "
                              f"expected {LORA_LAYOUT}") from e
