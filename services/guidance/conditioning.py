"""Encoded conditions of one request, and how requests' conditions are stacked into one noise-prediction
call with classifier-free guidance (conditional rows first, then unconditional rows)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from services.guidance.backbones.base import Backbone, BatchConditions, ControlBatch


@dataclass
class PreparedConditions:
    """Conditions of one request's n images, encoded and on the backbone's device."""

    text: torch.Tensor                               # (n, L, D) conditional text states (per image: view prompts)
    uncond: torch.Tensor                             # (n, L, D) negative-prompt states
    identity: torch.Tensor | None = None             # (n, D_id) L2-normalised
    identity_adapter: str = ""
    identity_scale: float = 1.0
    expression: torch.Tensor | None = None           # (n, D_text) pooled text embedding of conditions.expression
    expression_scale: float = 1.0
    controls: list[tuple[str, torch.Tensor, float]] = field(default_factory=list)  # (name, (n, C, R, R), scale)
    loras: tuple[tuple[str, float], ...] = ()
    cameras: torch.Tensor | None = None              # (n, ...) the backbone's encode_cameras, when it has one

    def group_key(self) -> tuple:
        """Requests can share a noise-prediction call when these agree (module-level state of the model:
        adapter scales (identity and expression: one scale per adapter per UNet call), active LoRAs, which
        ControlNets run)."""
        return (self.identity is not None, self.identity_adapter, round(self.identity_scale, 6),
                self.expression is not None, round(self.expression_scale, 6),
                tuple(name for name, _, _ in self.controls), self.loras, tuple(self.text.shape[1:]),
                None if self.cameras is None else tuple(self.cameras.shape[1:]))


def stack_for_cfg(conds: list[PreparedConditions], with_uncond: bool) -> BatchConditions:
    """One BatchConditions for all rows of `conds` (in order), followed by the same rows unconditioned when
    with_uncond. Unconditional rows keep the controls and the encoded cameras (as diffusers keeps controls)
    and get zero identity and zero expression embeddings."""
    text = torch.cat([c.text for c in conds])
    identity = torch.cat([c.identity for c in conds]) if conds[0].identity is not None else None
    expression = torch.cat([c.expression for c in conds]) if conds[0].expression is not None else None
    controls = []
    for j, (name, _, _) in enumerate(conds[0].controls):
        image = torch.cat([c.controls[j][1] for c in conds])
        scale = torch.cat([torch.full((c.text.shape[0],), float(c.controls[j][2])) for c in conds]).to(image.device)
        controls.append(ControlBatch(name, torch.cat([image, image]) if with_uncond else image,
                                     torch.cat([scale, scale]) if with_uncond else scale))
    cameras = torch.cat([c.cameras for c in conds]) if conds[0].cameras is not None else None
    if with_uncond:
        text = torch.cat([text, torch.cat([c.uncond for c in conds])])
        if cameras is not None:
            cameras = torch.cat([cameras, cameras])
        if identity is not None:
            identity = torch.cat([identity, torch.zeros_like(identity)])
        if expression is not None:
            expression = torch.cat([expression, torch.zeros_like(expression)])
    first = conds[0]
    return BatchConditions(text=text, identity=identity, identity_adapter=first.identity_adapter,
                           identity_scale=first.identity_scale, expression=expression,
                           expression_scale=first.expression_scale, controls=controls, loras=first.loras,
                           cameras=cameras)


def guided_noise(backbone: Backbone, latents_t: torch.Tensor, steps: torch.Tensor, conds: list[PreparedConditions],
                 guidance: torch.Tensor) -> torch.Tensor:
    """Classifier-free-guided eps for B rows: eps_u + s (eps_c - eps_u), exactly eps_c where s == 1.
    latents_t (B, C, h, w), steps (B,) long, guidance (B,) float; `conds` cover the B rows in order."""
    with_uncond = bool((guidance != 1).any())
    batch = stack_for_cfg(conds, with_uncond)
    if not with_uncond:
        return backbone.predict_noise(latents_t, steps, batch)
    eps = backbone.predict_noise(torch.cat([latents_t, latents_t]), torch.cat([steps, steps]), batch)
    eps_c, eps_u = eps.chunk(2)
    s = guidance.to(eps).view(-1, 1, 1, 1)
    return torch.where(s == 1, eps_c, eps_u + s * (eps_c - eps_u))
