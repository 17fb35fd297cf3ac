"""The diffusers backbone: a Stable Diffusion 1.x/2.x folder with its ControlNets, IP-Adapter-FaceID identity
adapters and UNet LoRAs, loaded once at startup, offline, from local folders or the local Hugging Face cache.

One `predict_noise` call is one UNet call for all B rows:
- ControlNets run with conditioning_scale 1 and their down/mid residuals are multiplied by each row's scale
  before being summed over ControlNets (diffusers' conditioning_scale, per row); a ControlNet whose rows are all
  at scale 0 is skipped, so scale 0 equals no control exactly.
- Identity goes through diffusers' own IP-Adapter machinery (the UNet's `encoder_hid_proj` FaceID projection and
  the IP attention processors, `added_cond_kwargs={"image_embeds": ...}`) with `cond.identity_scale` as the
  adapter scale; a zero row is IP-Adapter's negative (unconditional) embedding. The FaceID file's own LoRA
  (diffusers loads it as the peft adapter `faceid_<i>`) is active, at weight 1 as in the FaceID reference code,
  exactly when that adapter is in use. With `cond.identity` None (or identity_scale 0) every adapter is at
  scale 0 (diffusers then skips the IP attention) and its LoRA is off: the output is the plain model's.
- LoRAs: exactly `cond.loras` (plus the FaceID LoRA above) are active through peft `set_adapters` for the call;
  with none, peft's LoRA layers are disabled and return their base layer's output unchanged.
- v-prediction outputs are converted to eps with the training schedule.

Pickled weights (.bin/.pt/.ckpt) are refused unless the entry sets `allow_pickle: true` (diffusers then reads
them with torch.load(weights_only=True)); the h94 FaceID adapters only exist in that format.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from services.common.errors import FailedPrecondition, InvalidArgument
from services.core.models import ModelRecord
from services.guidance.backbones.base import (
    CONTROL_KINDS,
    BackboneInfo,
    BatchConditions,
    ControlSpec,
    LoraSpec,
    ModelFilesError,
    check_normal_convention,
    check_output_kind,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")

log = logging.getLogger(__name__)

SD_LAYOUT = ("a diffusers Stable Diffusion folder: model_index.json, unet/, vae/, text_encoder/, tokenizer/, "
             "scheduler/ (unet, vae and text_encoder each with config.json and safetensors weights; tokenizer with "
             "vocab.json + merges.txt or tokenizer.json; scheduler/scheduler_config.json)")
CONTROLNET_LAYOUT = ("a diffusers ControlNet folder (ControlNetModel.save_pretrained): config.json and "
                     "diffusion_pytorch_model.safetensors")
ADAPTER_LAYOUT = ("an IP-Adapter-FaceID weights file (e.g. ip-adapter-faceid_sd15.bin from h94/IP-Adapter-FaceID): "
                  "a dict {'image_proj': {proj.0.*, proj.2.*, norm.*}, 'ip_adapter': {'<i>.to_k_ip.weight', "
                  "'<i>.to_v_ip.weight', ...}} (torch pickle, or safetensors with image_proj./ip_adapter. prefixes)")
LORA_LAYOUT = ("a UNet LoRA weights file that diffusers' load_lora_weights reads (diffusers or kohya format, e.g. "
               "pytorch_lora_weights.safetensors)")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class ControlNetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: str = ""            # one of base.CONTROL_KINDS, or "" for a custom ControlNet addressed by name
    path: str                 # folder (relative to the YAML file, or absolute) or an HF repo id in the local cache
    subfolder: str = ""


class IdentityAdapterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    path: str
    weight_name: str = "ip-adapter-faceid_sd15.bin"
    subfolder: str = ""
    allow_pickle: bool = False


class LoraConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    path: str
    weight_name: str = "pytorch_lora_weights.safetensors"
    subfolder: str = ""
    output_kind: str = "rgb"  # one of base.OUTPUT_KINDS: what the backbone produces with this LoRA active
    normal_convention: str = "opencv"  # output_kind "normal": the frame it was trained in (base.NORMAL_CONVENTIONS)
    allow_pickle: bool = False


class DiffusersBackboneConfig(BaseModel):
    """One entry of guidance.yaml's `backbones` list with `backend: diffusers`."""

    model_config = ConfigDict(extra="forbid")

    name: str
    backend: Literal["diffusers"] = "diffusers"
    family: str = "sd15"
    path: str                 # SD folder (relative to the YAML file, or absolute) or an HF repo id in the local cache
    default: bool = False
    output_kind: str = "rgb"
    normal_convention: str = "opencv"     # output_kind "normal": the frame it was trained in (base.NORMAL_CONVENTIONS)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    variant: str | None = None            # e.g. "fp16" for diffusion_pytorch_model.fp16.safetensors
    allow_pickle: bool = False            # accept .bin weights in the SD and ControlNet folders
    default_negative_prompt: str = ""
    controlnets: list[ControlNetConfig] = []
    identity_adapters: list[IdentityAdapterConfig] = []
    loras: list[LoraConfig] = []


# ---------------------------------------------------------------------------------------------------------------
# Files


@lru_cache(maxsize=None)
def _sha256_cached(paths: tuple[str, ...], stamps: tuple[tuple[int, int], ...]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def sha256_files(paths: list[Path]) -> str:
    """First 16 hex of the sha256 of the files' bytes, concatenated in the given order."""
    stats = [p.stat() for p in paths]
    return _sha256_cached(tuple(str(p) for p in paths), tuple((s.st_size, s.st_mtime_ns) for s in stats))


def _resolve_root(path: str, base_dir: Path, layout: str) -> Path:
    """A configured location -> a local folder: an existing directory (relative to base_dir or absolute), else an
    HF repo id resolved from the local cache only."""
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


def _weights(folder: Path, stem: str, variant: str | None, allow_pickle: bool, layout: str) -> list[Path]:
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


def _require(path: Path, layout: str) -> Path:
    if not path.exists():
        raise ModelFilesError(f"missing {path}; expected {layout}")
    return path


def _check_sd_folder(root: Path, cfg: DiffusersBackboneConfig) -> dict[str, list[Path]]:
    _require(root / "model_index.json", SD_LAYOUT)
    weights = {}
    for sub, stem in (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"),
                      ("text_encoder", "model")):
        _require(root / sub, SD_LAYOUT)
        _require(root / sub / "config.json", SD_LAYOUT)
        weights[sub] = _weights(root / sub, stem, cfg.variant, cfg.allow_pickle, SD_LAYOUT)
    tok = _require(root / "tokenizer", SD_LAYOUT)
    if not (tok / "tokenizer.json").is_file():
        _require(tok / "vocab.json", SD_LAYOUT)
        _require(tok / "merges.txt", SD_LAYOUT)
    _require(root / "scheduler" / "scheduler_config.json", SD_LAYOUT)
    return weights


def _weight_file(root: Path, subfolder: str, weight_name: str, allow_pickle: bool, layout: str) -> Path:
    path = _require(root / subfolder / weight_name if subfolder else root / weight_name, layout)
    if path.suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise ModelFilesError(f"{path} is a pickle; set allow_pickle: true on its entry to load it (read with "
                              f"torch.load(weights_only=True)); expected {layout}")
    return path


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


# ---------------------------------------------------------------------------------------------------------------
# Control pictures


def _as_float(picture: np.ndarray) -> np.ndarray:
    picture = np.asarray(picture)
    if picture.dtype == np.uint8:
        return picture.astype(np.float32) / 255.0
    return picture.astype(np.float32)


def _resize(chw: np.ndarray, resolution: int) -> torch.Tensor:
    """(C, H, W) float -> (1, C, R, R) bilinear (antialiased when shrinking)."""
    t = torch.from_numpy(np.ascontiguousarray(chw, dtype=np.float32))[None]
    if t.shape[-2:] == (resolution, resolution):
        return t
    shrink = t.shape[-1] > resolution or t.shape[-2] > resolution
    return F.interpolate(t, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=shrink)


def normal_to_bae(normals: np.ndarray) -> np.ndarray:
    """OpenCV camera-frame unit normals (3, H, W) in [-1, 1] (x right, y down, z forward: a surface facing the
    camera has z < 0) -> the picture lllyasviel's control_v11p_sd15_normalbae was trained on.

    That ControlNet saw normal maps from Bae et al.'s estimator saved as (n + 1) / 2, which follow the ScanNet
    protocol: red = x pointing to the image's left, green = y up, blue = z toward the viewer (a surface facing
    the camera is (0.5, 0.5, 1), the familiar lavender). Each of those axes is the negated OpenCV axis
    (left = -right, up = -down, toward the viewer = -forward), so the colour is (1 - n) / 2 per channel.
    Zero vectors (background in a render) come out mid grey (0.5, 0.5, 0.5)."""
    n = np.clip(normals.astype(np.float32), -1.0, 1.0)
    return (1.0 - n) * 0.5


def depth_to_inverse(depth: np.ndarray) -> np.ndarray:
    """World depth (1, H, W), 0 = background -> normalised inverse depth in [0, 1]: d_near / d on the foreground
    (1 at the nearest point, the true ratio of inverse depths elsewhere, as a MiDaS-style relative inverse depth
    whose far end is at infinity), 0 on the background."""
    d = depth.astype(np.float32)
    fg = np.isfinite(d) & (d > 0)
    out = np.zeros_like(d)
    if fg.any():
        out[fg] = d[fg].min() / d[fg]
    return out


# ---------------------------------------------------------------------------------------------------------------
# The backbone


class DiffusersBackbone:
    """Implements services.guidance.backbones.base.Backbone on a diffusers StableDiffusionPipeline."""

    def __init__(self, config: DiffusersBackboneConfig, pipe, controlnets: dict, adapters: list[str],
                 adapter_dim: int, loras: list[LoraConfig], records: list[ModelRecord], device: torch.device,
                 dtype: torch.dtype, scheduler_config: dict):
        self.config = config
        self.device = device
        self.dtype = dtype
        self.pipe = pipe
        self.unet = pipe.unet
        self.vae = pipe.vae
        self.text_encoder = pipe.text_encoder
        self.tokenizer = pipe.tokenizer
        self.controlnets = controlnets
        self._adapters = adapters                      # identity adapter names, in diffusers' adapter order
        self._faceid_loras = {name: f"faceid_{i}" for i, name in enumerate(adapters)
                              if f"faceid_{i}" in (getattr(self.unet, "peft_config", None) or {})}
        self._lora_names = {lora.name for lora in loras}
        self._scheduler_config = dict(scheduler_config)
        self._lock = threading.RLock()
        self._lora_state: tuple | None = None
        self._alphas_cumprod = _alphas_cumprod(self._scheduler_config)
        self._ac_device = self._alphas_cumprod.to(device=device, dtype=torch.float32)

        from diffusers.models.attention_processor import (
            IPAdapterAttnProcessor,
            IPAdapterAttnProcessor2_0,
            IPAdapterXFormersAttnProcessor,
        )

        ip_types = (IPAdapterAttnProcessor, IPAdapterAttnProcessor2_0, IPAdapterXFormersAttnProcessor)
        self._ip_processors = [p for p in self.unet.attn_processors.values() if isinstance(p, ip_types)]
        vae_cfg = self.vae.config
        self.latent_scale_factor = 2 ** (len(vae_cfg.block_out_channels) - 1)
        self.scaling_factor = float(vae_cfg.scaling_factor)
        self.shift_factor = float(getattr(vae_cfg, "shift_factor", None) or 0.0)
        sample = self.unet.config.sample_size
        sample = sample[0] if isinstance(sample, (list, tuple)) else sample
        self.info = BackboneInfo(
            name=config.name, backend="diffusers", family=config.family, output_kind=config.output_kind,
            normal_convention=config.normal_convention,
            native_resolution=int(sample) * self.latent_scale_factor,
            latent_scale_factor=self.latent_scale_factor, latent_channels=int(vae_cfg.latent_channels),
            num_train_timesteps=int(self._scheduler_config.get("num_train_timesteps", 1000)),
            prediction_type=str(self._scheduler_config.get("prediction_type") or "epsilon"),
            variants=("sds", "isd") if adapters else ("sds",),
            denoise=True, inpaint=True, generate=True,
            controls=tuple(ControlSpec(c.name, c.kind) for c in config.controlnets),
            identity_adapters=tuple(adapters), identity_embedding_dim=adapter_dim if adapters else 0,
            loras=tuple(LoraSpec(lora.name, lora.output_kind, lora.normal_convention) for lora in loras),
            default_negative_prompt=config.default_negative_prompt, models=tuple(records))
        self._set_loras(())
        self._set_ip_scales(None, 0.0)

    # -- schedule ------------------------------------------------------------------------------------------------

    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas_cumprod.clone()

    def scheduler_config(self) -> dict:
        return dict(self._scheduler_config)

    # -- text and images -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        ids = tokens.input_ids.to(self.device)
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = tokens.attention_mask.to(self.device)
        return self.text_encoder(ids, attention_mask=mask)[0].float()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(device=self.device, dtype=self.dtype) * 2.0 - 1.0
        mean = self.vae.encode(x).latent_dist.mean
        return ((mean - self.shift_factor) * self.scaling_factor).float()

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(device=self.device, dtype=self.dtype) / self.scaling_factor + self.shift_factor
        x = self.vae.decode(z).sample
        return ((x.float() + 1.0) * 0.5).clamp(0.0, 1.0)

    # -- noise prediction ----------------------------------------------------------------------------------------

    def _set_loras(self, active: tuple[tuple[str, float], ...]):
        if active == self._lora_state:
            return
        if not getattr(self.unet, "peft_config", None):
            self._lora_state = active
            return
        if active:
            self.unet.enable_lora()
            self.unet.set_adapters([n for n, _ in active], weights=[float(w) for _, w in active])
        else:
            self.unet.disable_lora()
        self._lora_state = active

    def _set_ip_scales(self, adapter: str | None, scale: float):
        scales = [float(scale) if name == adapter else 0.0 for name in self._adapters]
        for proc in self._ip_processors:
            proc.scale = list(scales)

    def _control_residuals(self, latents, timesteps, text, controls):
        down, mid = None, None
        for control in controls:
            scale = control.scale.to(device=self.device, dtype=self.dtype).reshape(-1)
            if not bool((scale != 0).any()):
                continue
            if control.name not in self.controlnets:
                raise InvalidArgument("conditions.controls", f"backbone {self.info.name!r} has no control "
                                      f"{control.name!r}; it has {sorted(self.controlnets)}")
            net = self.controlnets[control.name]
            image = control.image.to(device=self.device, dtype=self.dtype)
            d, m = net(latents, timesteps, encoder_hidden_states=text, controlnet_cond=image,
                       conditioning_scale=1.0, return_dict=False)
            s = scale.view(-1, 1, 1, 1)
            d = [r * s for r in d]
            m = m * s
            if down is None:
                down, mid = d, m
            else:
                down = [a + b for a, b in zip(down, d)]
                mid = mid + m
        return down, mid

    @torch.no_grad()
    def predict_noise(self, latents_t: torch.Tensor, timesteps: torch.Tensor, cond: BatchConditions) -> torch.Tensor:
        with self._lock:
            latents = latents_t.to(device=self.device, dtype=self.dtype)
            b = latents.shape[0]
            t = timesteps.to(device=self.device).reshape(-1).long()
            if t.numel() == 1 and b > 1:
                t = t.expand(b)
            text = cond.text.to(device=self.device, dtype=self.dtype)

            loras = list(cond.loras)
            for name, _ in loras:
                if name not in self._lora_names:
                    raise InvalidArgument("conditions.loras", f"backbone {self.info.name!r} has no LoRA {name!r}; "
                                          f"it has {sorted(self._lora_names)}")
            if cond.identity is not None and not self._adapters:
                raise FailedPrecondition(f"backbone {self.info.name!r} has no identity adapter",
                                         reason="NO_IDENTITY_ADAPTER")
            added = None
            if self._adapters:
                adapter = None
                if cond.identity is not None and cond.identity_scale != 0:
                    adapter = cond.identity_adapter or self._adapters[0]
                    if adapter not in self._adapters:
                        raise InvalidArgument("conditions.identity_adapter", f"backbone {self.info.name!r} has no "
                                              f"identity adapter {adapter!r}; it has {list(self._adapters)}")
                    if tuple(cond.identity.shape) != (b, self.info.identity_embedding_dim):
                        raise InvalidArgument("conditions.identity", f"must be (B, D) = "
                                              f"({b}, {self.info.identity_embedding_dim}), got "
                                              f"{tuple(cond.identity.shape)}")
                embeds = []
                for name in self._adapters:
                    if name == adapter:
                        e = cond.identity.to(device=self.device, dtype=self.dtype)
                    else:
                        e = torch.zeros(b, self.info.identity_embedding_dim, device=self.device, dtype=self.dtype)
                    embeds.append(e[:, None, :])            # (B, num_images=1, D)
                added = {"image_embeds": embeds}
                self._set_ip_scales(adapter, cond.identity_scale if adapter else 0.0)
                if adapter in self._faceid_loras:
                    loras.insert(0, (self._faceid_loras[adapter], 1.0))
            self._set_loras(tuple((n, float(s)) for n, s in loras))

            down, mid = self._control_residuals(latents, t, text, cond.controls)
            out = self.unet(latents, t, encoder_hidden_states=text, added_cond_kwargs=added,
                            down_block_additional_residuals=down, mid_block_additional_residual=mid,
                            return_dict=False)[0].float()
            if self.info.prediction_type == "v_prediction":
                ac = self._ac_device[t].view(-1, 1, 1, 1)
                out = ac.sqrt() * out + (1.0 - ac).sqrt() * latents.float()
            elif self.info.prediction_type == "sample":
                ac = self._ac_device[t].view(-1, 1, 1, 1)
                out = (latents.float() - ac.sqrt() * out) / (1.0 - ac).sqrt()
            return out

    # -- controls ------------------------------------------------------------------------------------------------

    def prepare_control(self, spec: ControlSpec, picture: np.ndarray, resolution: int) -> torch.Tensor:
        """The service's control picture -> the ControlNet's input (1, 3, R, R) float32 in [0, 1] on device.

        landmarks: the drawn picture (3, H, W) in [0, 1] (uint8 in [0, 255] accepted), resized.
        canny: (1, H, W) edges in [0, 1], resized and replicated to 3 channels; or (3, H, W) RGB in [0, 1],
            resized to R, then cv2.Canny(100, 200) edges (as lllyasviel's annotator: resize, then detect).
        normal: (3, H, W) OpenCV camera-frame normals in [-1, 1] -> (1 - n) / 2, the normalbae convention (see
            normal_to_bae), then resized.
        depth: (1, H, W) world depth, 0 = background -> d_near / d on the foreground, 0 on the background (see
            depth_to_inverse), resized, replicated to 3 channels.
        A custom kind ("") is treated like landmarks: a ready (C, H, W) picture in [0, 1]."""
        raw = np.asarray(picture)
        if raw.ndim != 3:
            raise ValueError(f"control picture must be (C, H, W), got shape {raw.shape}")
        kind = spec.kind
        if kind == "normal":
            n = raw.astype(np.float32) / 127.5 - 1.0 if raw.dtype == np.uint8 else raw.astype(np.float32)
            out = _resize(normal_to_bae(n[:3]), resolution)
        elif kind == "depth":
            out = _resize(depth_to_inverse(raw[:1].astype(np.float32)), resolution)
        elif kind == "canny" and raw.shape[0] == 3:
            import cv2

            rgb = (np.clip(_as_float(raw), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)
            h, w = rgb.shape[:2]
            interp = cv2.INTER_AREA if max(h, w) > resolution else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (resolution, resolution), interpolation=interp)
            edges = cv2.Canny(rgb, 100, 200).astype(np.float32) / 255.0
            out = torch.from_numpy(edges)[None, None]
        else:
            out = _resize(_as_float(raw), resolution)
        if out.shape[1] == 1:
            out = out.expand(-1, 3, -1, -1)
        return out.clamp(0.0, 1.0).contiguous().to(self.device)


def _alphas_cumprod(cfg: dict) -> torch.Tensor:
    """(T,) float64 cumulative product of (1 - beta) for the scheduler config's training schedule."""
    T = int(cfg.get("num_train_timesteps", 1000))
    trained = cfg.get("trained_betas")
    schedule = cfg.get("beta_schedule", "linear")
    b0, b1 = float(cfg.get("beta_start", 0.0001)), float(cfg.get("beta_end", 0.02))
    if cfg.get("rescale_betas_zero_snr") or (trained is None and schedule not in ("linear", "scaled_linear")):
        from diffusers import DDPMScheduler   # squaredcos_cap_v2, zero-SNR rescaling: diffusers' own (float32)

        return DDPMScheduler.from_config(cfg).alphas_cumprod.to(torch.float64)
    if trained is not None:
        betas = torch.tensor(trained, dtype=torch.float64)
    elif schedule == "linear":
        betas = torch.linspace(b0, b1, T, dtype=torch.float64)
    else:
        betas = torch.linspace(b0 ** 0.5, b1 ** 0.5, T, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


# ---------------------------------------------------------------------------------------------------------------
# Loading

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _check_config(cfg: DiffusersBackboneConfig):
    for kind_list, what in ((cfg.controlnets, "controlnet"), (cfg.identity_adapters, "identity adapter"),
                            (cfg.loras, "LoRA")):
        names = [e.name for e in kind_list]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ModelFilesError(f"backbone {cfg.name!r}: duplicate {what} name(s) {dupes}")
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


def load_diffusers_backbone(config: DiffusersBackboneConfig | dict, base_dir: Path,
                            device: torch.device | str = "cpu") -> DiffusersBackbone:
    """Load one backbone entry offline. Paths are relative to base_dir (the YAML file's folder), absolute, or HF
    repo ids in the local cache. Every expected folder and file is checked first: a missing one raises
    ModelFilesError naming it and the expected layout; so do bad control kinds, LoRA output kinds and names."""
    cfg = config if isinstance(config, DiffusersBackboneConfig) else DiffusersBackboneConfig.model_validate(config)
    base_dir = Path(base_dir)
    device = torch.device(device)
    dtype = _DTYPES[cfg.dtype]
    _check_config(cfg)

    # 1. Find and check every file before loading anything.
    root = _resolve_root(cfg.path, base_dir, SD_LAYOUT)
    sd_weights = _check_sd_folder(root, cfg)
    control_dirs = {}
    control_weights = {}
    for c in cfg.controlnets:
        folder = _resolve_root(c.path, base_dir, CONTROLNET_LAYOUT)
        folder = folder / c.subfolder if c.subfolder else folder
        _require(folder / "config.json", CONTROLNET_LAYOUT)
        control_weights[c.name] = _weights(folder, "diffusion_pytorch_model", cfg.variant, cfg.allow_pickle,
                                           CONTROLNET_LAYOUT)
        control_dirs[c.name] = folder
    adapter_files = {}
    for a in cfg.identity_adapters:
        folder = _resolve_root(a.path, base_dir, ADAPTER_LAYOUT)
        adapter_files[a.name] = _weight_file(folder, a.subfolder, a.weight_name, a.allow_pickle or cfg.allow_pickle,
                                             ADAPTER_LAYOUT)
    lora_files = {}
    for lora in cfg.loras:
        folder = _resolve_root(lora.path, base_dir, LORA_LAYOUT)
        lora_files[lora.name] = _weight_file(folder, lora.subfolder, lora.weight_name,
                                             lora.allow_pickle or cfg.allow_pickle, LORA_LAYOUT)

    # 2. Load.
    from diffusers import ControlNetModel, StableDiffusionPipeline

    use_st = None if cfg.allow_pickle else True
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(root), dtype=dtype, local_files_only=True, use_safetensors=use_st, variant=cfg.variant,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    except Exception as e:
        raise ModelFilesError(f"could not load {root} ({type(e).__name__}: {e}); expected {SD_LAYOUT}") from e
    pipe.set_progress_bar_config(disable=True)

    controlnets = {}
    for c in cfg.controlnets:
        try:
            net = ControlNetModel.from_pretrained(str(control_dirs[c.name]), dtype=dtype, local_files_only=True,
                                                  use_safetensors=use_st, variant=cfg.variant)
        except Exception as e:
            raise ModelFilesError(f"could not load controlnet {c.name!r} from {control_dirs[c.name]} "
                                  f"({type(e).__name__}: {e}); expected {CONTROLNET_LAYOUT}") from e
        controlnets[c.name] = net.to(device).eval()

    adapter_dim = 0
    if cfg.identity_adapters:
        states = []
        for a in cfg.identity_adapters:
            path = adapter_files[a.name]
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
        try:
            pipe.load_ip_adapter(states, subfolder=[""] * len(states), weight_name=[""] * len(states),
                                 image_encoder_folder=None, low_cpu_mem_usage=False)
        except Exception as e:
            raise ModelFilesError(f"could not load identity adapters {list(adapter_files.values())} into the UNet "
                                  f"({type(e).__name__}: {e}); expected {ADAPTER_LAYOUT}") from e

    for lora in cfg.loras:
        path = lora_files[lora.name]
        try:
            state, alphas, metadata = pipe.lora_state_dict(
                str(path.parent), weight_name=path.name, local_files_only=True,
                use_safetensors=None if path.suffix in PICKLE_SUFFIXES else True, return_lora_metadata=True)
            unet_keys = [k for k in state if not k.startswith(("text_encoder", "te_", "lora_te"))]
            if len(unet_keys) != len(state):
                log.warning("LoRA %s: dropping %d text-encoder tensors (only UNet LoRAs are applied per call)",
                            path, len(state) - len(unet_keys))
            state = {k: state[k] for k in unet_keys}
            if alphas:
                alphas = {k: v for k, v in alphas.items() if not k.startswith(("text_encoder", "te_", "lora_te"))}
            if not state:
                raise ValueError("no UNet LoRA tensors")
            pipe.load_lora_into_unet(state, network_alphas=alphas or None, unet=pipe.unet, adapter_name=lora.name,
                                     metadata=metadata, _pipeline=pipe)
        except ModelFilesError:
            raise
        except Exception as e:
            raise ModelFilesError(f"could not load LoRA {lora.name!r} from {path} ({type(e).__name__}: {e}); "
                                  f"expected {LORA_LAYOUT}") from e

    pipe.to(device)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval()
        m.requires_grad_(False)
    for net in controlnets.values():
        net.requires_grad_(False)

    records = [ModelRecord(role, "diffusers", f"{cfg.path}/{role}", sha256_files(sd_weights[role]))
               for role in ("unet", "vae", "text_encoder")]
    records += [ModelRecord(f"controlnet:{name}", "diffusers", c.path, sha256_files(control_weights[name]))
                for name, c in ((c.name, c) for c in cfg.controlnets)]
    records += [ModelRecord(f"identity_adapter:{a.name}", "diffusers", a.path, sha256_files([adapter_files[a.name]]))
                for a in cfg.identity_adapters]
    records += [ModelRecord(f"lora:{lora.name}", "diffusers", lora.path, sha256_files([lora_files[lora.name]]))
                for lora in cfg.loras]
    scheduler_cfg = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
    return DiffusersBackbone(cfg, pipe, controlnets, [a.name for a in cfg.identity_adapters], adapter_dim,
                             list(cfg.loras), records, device, dtype, scheduler_cfg)
