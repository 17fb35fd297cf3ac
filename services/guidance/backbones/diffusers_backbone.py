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
- Expression (ID-to-3D's lambda_exp; file format: expression_adapter.py) is one more adapter in the same diffusers
  IP-Adapter list, after the identity adapters: `cond.expression` (B, D_text) pooled text-encoder embeddings
  (`encode_expression`; zero rows for the unconditional rows) with `cond.expression_scale` as its scale. Both
  adapters are active in one UNet call, each with its own scale; an adapter at scale 0 is skipped by diffusers'
  IP attention processor, so expression None or expression_scale 0 gives exactly the output without it.
- LoRAs: exactly `cond.loras` (plus the FaceID LoRA above) are active through peft `set_adapters` for the call;
  with none, peft's LoRA layers are disabled and return their base layer's output unchanged.
- v-prediction outputs are converted to eps with the training schedule.

Loading (offline, files checked first) is diffusers_loader.py's job; the entry's fields are diffusers_config.py.
"""

from __future__ import annotations

import threading

import numpy as np
import torch

from services.common.errors import FailedPrecondition, InvalidArgument
from services.core.models import ModelRecord
from services.guidance.backbones.base import BatchConditions
from services.guidance.backbones.control_pictures import controlnet_input
from services.guidance.backbones.diffusers_config import DiffusersBackboneConfig, LoraConfig
from services.guidance.schedule import alphas_cumprod
from services.guidance.types import BackboneInfo, ControlSpec, LoraSpec


class DiffusersBackbone:
    """Implements services.guidance.backbones.base.Backbone on a diffusers StableDiffusionPipeline."""

    def __init__(self, config: DiffusersBackboneConfig, pipe, controlnets: dict, adapters: list[str],
                 adapter_dim: int, loras: list[LoraConfig], records: list[ModelRecord], device: torch.device,
                 dtype: torch.dtype, scheduler_config: dict, *, backend: str = "diffusers",
                 expression_adapters: list[str] = ()):
        """`pipe` has .unet, .vae, .text_encoder and .tokenizer (a StableDiffusionPipeline, or their stand-ins:
        the Triton backbone's UNet is a TritonUNet); `adapters` are the identity adapter names in the order
        they were loaded into the UNet, `expression_adapters` (0 or 1) the expression adapter loaded after them;
        `backend` is what Describe reports."""
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
        self._expression = list(expression_adapters)   # after the identity adapters in diffusers' list
        self._faceid_loras = {name: f"faceid_{i}" for i, name in enumerate(adapters)
                              if f"faceid_{i}" in (getattr(self.unet, "peft_config", None) or {})}
        self._lora_names = {lora.name for lora in loras}
        self._scheduler_config = dict(scheduler_config)
        self._lock = threading.RLock()
        self._lora_state: tuple | None = None
        self._alphas_cumprod = alphas_cumprod(self._scheduler_config)
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
            name=config.name, backend=backend, family=config.family, output_kind=config.output_kind,
            normal_convention=config.normal_convention, depth_convention=config.depth_convention,
            native_resolution=int(sample) * self.latent_scale_factor,
            latent_scale_factor=self.latent_scale_factor, latent_channels=int(vae_cfg.latent_channels),
            num_train_timesteps=int(self._scheduler_config.get("num_train_timesteps", 1000)),
            prediction_type=str(self._scheduler_config.get("prediction_type") or "epsilon"),
            variants=("sds", "isd") if adapters else ("sds",),
            denoise=True, inpaint=True, generate=True,
            controls=tuple(ControlSpec(c.name, c.kind) for c in config.controlnets),
            identity_adapters=tuple(adapters), identity_embedding_dim=adapter_dim if adapters else 0,
            expression_adapter=bool(self._expression),
            loras=tuple(LoraSpec(lora.name, lora.output_kind, lora.normal_convention) for lora in loras),
            default_negative_prompt=config.default_negative_prompt, models=tuple(records))
        self._set_loras(())
        self._set_ip_scales(None, 0.0, 0.0)

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

    @torch.no_grad()
    def encode_expression(self, texts: list[str]) -> torch.Tensor:
        """(n, D_text) float32: the text encoder's pooled output (final-layer-normed EOS state) of each text, the
        expression adapter's input (expression_adapter.py)."""
        tokens = self.tokenizer(list(texts), padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        return self.text_encoder(tokens.input_ids.to(self.device))[1].float()

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

    def _set_ip_scales(self, adapter: str | None, scale: float, expression_scale: float):
        scales = [float(scale) if name == adapter else 0.0 for name in self._adapters]
        scales += [float(expression_scale)] * len(self._expression)
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
            if self._adapters or self._expression:
                adapter = None
                if self._adapters and cond.identity is not None and cond.identity_scale != 0:
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
                exp_scale = 0.0
                if self._expression:
                    d_text = int(self.text_encoder.config.hidden_size)
                    e = torch.zeros(b, d_text, device=self.device, dtype=self.dtype)
                    if cond.expression is not None and cond.expression_scale != 0:
                        if tuple(cond.expression.shape) != (b, d_text):
                            raise InvalidArgument("conditions.expression", f"embedding must be (B, D) = ({b}, "
                                                  f"{d_text}), got {tuple(cond.expression.shape)}")
                        e = cond.expression.to(device=self.device, dtype=self.dtype)
                        exp_scale = float(cond.expression_scale)
                    embeds.append(e[:, None, :])            # (B, 1, D_text)
                elif cond.expression is not None:
                    raise FailedPrecondition(f"backbone {self.info.name!r} has no expression adapter",
                                             reason="ADAPTER_UNSUPPORTED")
                added = {"image_embeds": embeds}
                self._set_ip_scales(adapter, cond.identity_scale if adapter else 0.0, exp_scale)
                if adapter in self._faceid_loras:
                    loras.insert(0, (self._faceid_loras[adapter], 1.0))
            elif cond.expression is not None:
                raise FailedPrecondition(f"backbone {self.info.name!r} has no expression adapter",
                                         reason="ADAPTER_UNSUPPORTED")
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
        """The service's control picture -> the ControlNet's input (1, 3, R, R) float32 in [0, 1] on device
        (control_pictures.controlnet_input: lllyasviel's conventions per kind)."""
        return controlnet_input(spec.kind, picture, resolution).to(self.device)
