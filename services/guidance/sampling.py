"""Sampling loops for Denoise (SDEdit), Inpaint and Generate, batched across requests and written once for
every backbone on top of diffusers' schedulers (DDIM, DDPM, Euler). The backbone always predicts eps, so
the scheduler is configured for epsilon prediction whatever the model was trained with."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler, DDPMScheduler, EulerDiscreteScheduler

from services.guidance.backbones.base import Backbone
from services.guidance.conditioning import PreparedConditions, guided_noise
from services.guidance.distill import resize
from services.guidance.schedule import to_step

SCHEDULER_CLASSES = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "euler": EulerDiscreteScheduler}


def make_scheduler(name: str, config: dict):
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config["prediction_type"] = "epsilon"
    return SCHEDULER_CLASSES[name].from_config(config)


@dataclass
class SampleWork:
    """One request's share of a sampling batch.

    mode "denoise": start from images noised to `strength`; "inpaint": the same, but after every step the
    unmasked latents are reset to the input's (noised to the next level) and the decoded output keeps the
    input exactly where mask == 0; "generate": start from pure noise."""

    mode: str
    cond: PreparedConditions
    noise: torch.Tensor                 # (n, C, h, w) standard normal
    guidance_scale: float
    scheduler: str
    num_steps: int
    strength: float = 1.0               # timestep fraction to start from (denoise / inpaint)
    images: torch.Tensor | None = None  # (n, 3, H, W) in [0, 1] (denoise / inpaint)
    mask: torch.Tensor | None = None    # (n, 1, H, W) in [0, 1], 1 = fill (inpaint)
    generators: list[torch.Generator] | None = None  # one per image, for stochastic schedulers (ddpm)

    def group_key(self) -> tuple:
        return (self.mode, self.scheduler, self.num_steps, round(self.strength, 6), tuple(self.noise.shape[1:]),
                self.cond.group_key())


@dataclass
class SampleOutput:
    images: torch.Tensor     # (n, 3, H, W) in [0, 1] (input size for denoise / inpaint, latent size * f else)
    start_timestep: int


def _timesteps(sched, work: SampleWork, num_train_timesteps: int) -> torch.Tensor:
    """The timesteps to run. Denoise/inpaint run the last num_steps of a schedule of S steps, with S chosen
    so that the first of them is the grid point closest to strength * T (diffusers' img2img takes
    S = num_steps / strength, which can start well below the requested noise level on coarse grids)."""
    if work.mode == "generate":
        sched.set_timesteps(work.num_steps)
        return sched.timesteps
    target = work.strength * num_train_timesteps
    best = None
    for total in range(work.num_steps, min(num_train_timesteps, 4 * round(work.num_steps / work.strength)) + 1):
        sched.set_timesteps(total)
        start = float(sched.timesteps[len(sched.timesteps) - work.num_steps * sched.order])
        if best is None or abs(start - target) < best[0]:
            best = (abs(start - target), total)
    sched.set_timesteps(best[1])
    begin = len(sched.timesteps) - work.num_steps * sched.order
    if hasattr(sched, "set_begin_index"):
        sched.set_begin_index(begin)
    return sched.timesteps[begin:]


def run_sampling(backbone: Backbone, works: list[SampleWork]) -> list[SampleOutput]:
    """All works must share group_key()."""
    first = works[0]
    device = first.noise.device
    noise = torch.cat([w.noise for w in works])
    h, w_ = noise.shape[-2:]
    f = backbone.info.latent_scale_factor
    conds = [w.cond for w in works]
    guidance = torch.cat([torch.full((len(w.noise),), float(w.guidance_scale)) for w in works]).to(device)
    generators = [g for w in works for g in (w.generators or [])] or None
    with torch.no_grad():
        z0 = None
        if first.mode != "generate":
            z0 = backbone.encode_images(torch.cat([resize(w.images, (h * f, w_ * f)) for w in works]))
        if first.mode == "denoise" and first.num_steps == 1:
            # a single x0 prediction from exactly t = strength
            t = int(to_step(first.strength, backbone.info.num_train_timesteps))
            a = backbone.alphas_cumprod()[t].to(z0)
            steps = torch.full((len(z0),), t, dtype=torch.long, device=device)
            z_t = a.sqrt() * z0 + (1 - a).sqrt() * noise
            eps = guided_noise(backbone, z_t, steps, conds, guidance)
            latents, start = (z_t - (1 - a).sqrt() * eps) / a.sqrt(), t
        else:
            sched = make_scheduler(first.scheduler, backbone.scheduler_config())
            timesteps = _timesteps(sched, first, backbone.info.num_train_timesteps)
            start = int(timesteps[0])
            if first.mode == "generate":
                latents = noise * sched.init_noise_sigma
            else:
                latents = sched.add_noise(z0, noise, timesteps[:1].repeat(len(z0)))
            latent_mask = None
            if first.mode == "inpaint":
                latent_mask = resize(torch.cat([w.mask for w in works]), (h, w_)).clamp(0, 1)
            for i, t in enumerate(timesteps):
                model_in = sched.scale_model_input(latents, t)
                steps = torch.full((len(latents),), int(t), dtype=torch.long, device=device)
                eps = guided_noise(backbone, model_in, steps, conds, guidance)
                latents = sched.step(eps, t, latents, generator=generators).prev_sample \
                    if isinstance(sched, DDPMScheduler) else sched.step(eps, t, latents).prev_sample
                if latent_mask is not None:
                    known = z0 if i + 1 == len(timesteps) else sched.add_noise(
                        z0, noise, timesteps[i + 1:i + 2].repeat(len(z0)))
                    latents = latent_mask * latents + (1 - latent_mask) * known
        decoded = backbone.decode_latents(latents)
    outputs, row = [], 0
    for w in works:
        n = len(w.noise)
        out = decoded[row:row + n]
        if w.images is not None:
            out = resize(out, tuple(w.images.shape[-2:])).clamp(0, 1)
            if w.mode == "inpaint":
                out = w.mask * out + (1 - w.mask) * w.images
        outputs.append(SampleOutput(out, start))
        row += n
    return outputs
