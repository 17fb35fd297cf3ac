"""Score distillation for a batch of requests (written once for every backbone).

For each image x: z = E(resize(x, R)), z_t = sqrt(a_t) z + sqrt(1 - a_t) eps, eps_hat from the guided noise
predictor, g = w(t) (eps_hat - eps) (clamped to +-grad_clip when set), and the returned image gradient is
dL/dx for L = 0.5 ||z - stopgrad(z - g)||^2, i.e. the vector-Jacobian product g^T dz/dx through the encoder
and the resize. One encoder pass and one backward pass serve the whole batch; rows are independent, so a
request's result does not depend on its batch partners.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from services.guidance.backbones.base import Backbone
from services.guidance.conditioning import PreparedConditions, guided_noise
from services.guidance.schedule import sds_weight


@dataclass
class DistillWork:
    images: torch.Tensor          # (n, 3, H, W) float32 in [0, 1], on the backbone's device
    resolution: int               # working resolution R
    cond: PreparedConditions
    steps: torch.Tensor           # (n,) long
    noise: torch.Tensor           # (n, C, R/f, R/f)
    guidance_scale: float
    weighting: str
    grad_clip: float = 0.0
    want_denoised: bool = False

    def group_key(self) -> tuple:
        return ("distill", self.resolution, self.cond.group_key())


@dataclass
class DistillOutput:
    grad: torch.Tensor            # (n, 3, H, W)
    weights: torch.Tensor         # (n,) w(t)
    loss: torch.Tensor            # (n,) 0.5 ||g||^2
    grad_norm: torch.Tensor       # (n,) ||dL/dx||
    latent_grad_norm: torch.Tensor  # (n,) ||g||
    denoised: torch.Tensor | None = None  # (n, 3, H, W) decoded one-step x0 prediction


def resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Differentiable bilinear resize (identity when already that size)."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=False)


def run_distill(backbone: Backbone, works: list[DistillWork]) -> list[DistillOutput]:
    """All works must share group_key()."""
    leaves = [w.images.detach().clone().requires_grad_(True) for w in works]
    r = works[0].resolution
    with torch.enable_grad():
        z = backbone.encode_images(torch.cat([resize(x, (r, r)) for x in leaves]))
    steps = torch.cat([w.steps for w in works])
    noise = torch.cat([w.noise for w in works]).to(z)
    schedule = backbone.alphas_cumprod()
    alphas = schedule[steps.cpu()].to(z).view(-1, 1, 1, 1)
    weights = torch.cat([sds_weight(w.weighting, schedule[w.steps.cpu()]) for w in works]).to(z)
    guidance = torch.cat([torch.full((len(w.steps),), float(w.guidance_scale)) for w in works])
    with torch.no_grad():
        z_t = alphas.sqrt() * z.detach() + (1 - alphas).sqrt() * noise
        eps_hat = guided_noise(backbone, z_t, steps.to(z.device), [w.cond for w in works], guidance.to(z.device))
        g = weights.view(-1, 1, 1, 1) * (eps_hat - noise)
        clips = torch.cat([torch.full((len(w.steps),), float(w.grad_clip)) for w in works]).to(g).view(-1, 1, 1, 1)
        g = torch.where(clips > 0, torch.maximum(torch.minimum(g, clips), -clips), g)
    z.backward(g)
    denoised = None
    if any(w.want_denoised for w in works):
        with torch.no_grad():
            x0 = (z_t - (1 - alphas).sqrt() * eps_hat) / alphas.sqrt()
            denoised = backbone.decode_latents(x0)
    outputs, start = [], 0
    for w, leaf in zip(works, leaves):
        n = len(w.steps)
        rows = slice(start, start + n)
        grad = leaf.grad
        d = None
        if w.want_denoised:
            d = resize(denoised[rows], tuple(w.images.shape[-2:])).clamp(0, 1)
        outputs.append(DistillOutput(grad=grad, weights=weights[rows], loss=0.5 * g[rows].pow(2).flatten(1).sum(1),
                                     grad_norm=grad.flatten(1).norm(dim=1), latent_grad_norm=g[rows].flatten(1).norm(dim=1),
                                     denoised=d))
        start += n
    return outputs
