"""Adaptive density control of 3DGS (clone / split / prune / opacity reset) for a GaussianScene.

The scene accumulates, per Gaussian, the norm of its screen-space mean gradient in NDC units and the
number of renders that saw it (buffers grad2d_sum, grad2d_count; see gaussians.py). Every
`densify_every` optimiser steps between densify_from and densify_until the strategy:
  - clones Gaussians whose mean gradient >= grad_threshold and whose largest scale <= percent_dense x
    extent (an exact copy is appended);
  - splits the other high-gradient Gaussians into 2 samples drawn from the Gaussian itself, with scales
    divided by 1.6 (the original is removed);
  - prunes Gaussians with opacity < prune_opacity, and, once past the first opacity reset, those whose
    largest scale exceeds prune_scale x extent;
  - resets the statistics.
Every opacity_reset_every steps (before densify_until) opacities are clamped to at most 0.01.

Every change rebuilds the parameters as new nn.Parameters and carries the optimiser over: in each
param group whose "name" is a Gaussian group (or that holds the old parameter), the parameter is
swapped and every per-parameter state tensor whose first dimension is the number of Gaussians (Adam's
exp_avg, exp_avg_sq, or any other optimiser's) is sliced for kept Gaussians and zero-extended for new
ones; other state (e.g. Adam's scalar "step") is kept as is.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

import torch
from torch import nn

from services.render.representations.gaussians_projection import quat_to_rotmat

if TYPE_CHECKING:  # pragma: no cover
    from services.render.representations.gaussians import GaussianScene

GROUPS = ("means", "scales", "quats", "opacities", "sh0", "shN")
STAT_BUFFERS = ("grad2d_sum", "grad2d_count")


@dataclass
class GaussianStrategyConfig:
    """headforge.v1.GaussianStrategy with its 3DGS defaults filled in (the proto's zeros mean these).

    max_gaussians 0 = no cap here (the service passes its own cap). prune_scale and reset_value are not
    in the proto: the 3DGS/gsplat values."""

    disabled: bool = False
    densify_every: int = 100
    densify_from: int = 500
    densify_until: int = 15000
    grad_threshold: float = 0.0002
    percent_dense: float = 0.01
    prune_opacity: float = 0.005
    opacity_reset_every: int = 3000
    max_gaussians: int = 0
    prune_scale: float = 0.1
    reset_value: float = 0.01

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "GaussianStrategyConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d or {}) - names
        if unknown:
            raise ValueError(f"unknown strategy fields {sorted(unknown)}")
        return cls(**(d or {}))


# ----------------------------------------------------------------------------------------------------
# Row operations on a scene and its optimiser
# ----------------------------------------------------------------------------------------------------

def _find_group(optimizer: torch.optim.Optimizer | None, name: str, param: nn.Parameter):
    """(param group, index in its params) holding `param`, else the group named `name` with one
    parameter; None when the optimiser does not optimise it."""
    if optimizer is None:
        return None
    for group in optimizer.param_groups:
        for i, p in enumerate(group["params"]):
            if p is param:
                return group, i
    for group in optimizer.param_groups:
        if group.get("name") == name and len(group["params"]) == 1:
            return group, 0
    return None


def _edit_state(state: dict, num_old: int, fn) -> dict:
    """Apply fn to every state tensor whose first dimension is num_old (per-Gaussian state)."""
    return {k: fn(v) if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == num_old else v
            for k, v in state.items()}


def replace_rows(scene: "GaussianScene", optimizer: torch.optim.Optimizer | None, keep: torch.Tensor | None,
                 new_rows: dict[str, torch.Tensor] | None = None) -> None:
    """Rebuild the Gaussians as old[keep] followed by new_rows (a tensor per group, same count each);
    keep None keeps all. Optimiser state rows follow (zeros for new rows); statistics likewise."""
    num_old = scene.num_gaussians
    num_new = 0 if not new_rows else int(new_rows["means"].shape[0])

    def rows(v: torch.Tensor, extra: torch.Tensor | None) -> torch.Tensor:
        v = v if keep is None else v[keep]
        if num_new:
            extra = v.new_zeros((num_new, *v.shape[1:])) if extra is None else extra.to(v)
            v = torch.cat([v, extra])
        return v.contiguous()

    for name in GROUPS:
        old = getattr(scene, name)
        param = nn.Parameter(rows(old.detach(), new_rows[name] if num_new else None),
                             requires_grad=old.requires_grad)
        found = _find_group(optimizer, name, old)
        if found is not None:
            group, i = found
            state = optimizer.state.pop(group["params"][i], None)
            group["params"][i] = param
            if state:
                optimizer.state[param] = _edit_state(state, num_old, lambda v: rows(v, None))
        setattr(scene, name, param)
    for name in STAT_BUFFERS:
        setattr(scene, name, rows(getattr(scene, name), None))


def prune(scene: "GaussianScene", optimizer, mask: torch.Tensor) -> int:
    """Remove the Gaussians where mask (P,) is True; returns how many were removed."""
    n = int(mask.sum())
    if n:
        replace_rows(scene, optimizer, (~mask).nonzero()[:, 0])
    return n


def reset_opacity(scene: "GaussianScene", optimizer, value: float) -> None:
    """Clamp opacities to at most `value` in (0, 1) and zero their optimiser state rows."""
    with torch.no_grad():
        scene.opacities.clamp_(max=math.log(value / (1 - value)))
    found = _find_group(optimizer, "opacities", scene.opacities)
    if found is not None:
        state = optimizer.state.get(found[0]["params"][found[1]])
        if state:
            _edit_state(state, scene.num_gaussians, lambda v: v.zero_())


def mean_screen_grads(scene: "GaussianScene") -> torch.Tensor:
    """(P,) average NDC-space mean-gradient norm over the renders that saw each Gaussian (0 if none)."""
    return scene.grad2d_sum / scene.grad2d_count.clamp_min(1)


def densify(scene: "GaussianScene", optimizer, grad_threshold: float, percent_dense: float, extent: float,
            max_gaussians: int = 0, generator: torch.Generator | None = None) -> int:
    """Clone small and split large Gaussians whose mean screen gradient >= grad_threshold. With
    max_gaussians > 0 only the highest-gradient candidates that fit are grown. Returns the number of
    Gaussians added (clones + net splits)."""
    grads = mean_screen_grads(scene)
    candidates = (grads >= grad_threshold) & (scene.grad2d_count > 0)
    if max_gaussians > 0:
        budget = max(0, max_gaussians - scene.num_gaussians)
        if int(candidates.sum()) > budget:
            order = torch.where(candidates, grads, torch.full_like(grads, -1.0)).argsort(descending=True)
            candidates = torch.zeros_like(candidates)
            candidates[order[:budget]] = True
    with torch.no_grad():
        scales = scene.scales.exp()
        small = scales.amax(1) <= percent_dense * extent
        clone_idx = (candidates & small).nonzero()[:, 0]
        split_idx = (candidates & ~small).nonzero()[:, 0]
        if len(clone_idx) + len(split_idx) == 0:
            return 0
        new = {name: getattr(scene, name).detach()[clone_idx] for name in GROUPS}
        split = _split_rows(scene, split_idx, generator)
        new = {name: torch.cat([new[name], split[name]]) for name in GROUPS}
        keep = torch.ones(scene.num_gaussians, dtype=torch.bool, device=scene.means.device)
        keep[split_idx] = False
    replace_rows(scene, optimizer, keep.nonzero()[:, 0], new)
    return len(clone_idx) + len(split_idx)


def _split_rows(scene: "GaussianScene", idx: torch.Tensor, generator: torch.Generator | None,
                samples: int = 2) -> dict[str, torch.Tensor]:
    """New rows for splitting Gaussians idx: `samples` each, means drawn from the Gaussian, scales / 1.6
    (= 0.8 x samples, as 3DGS), the other parameters copied."""
    means, log_s = scene.means.detach()[idx], scene.scales.detach()[idx]
    rot = quat_to_rotmat(scene.quats.detach()[idx])
    noise = torch.randn((samples, len(idx), 3), generator=generator).to(means)
    offsets = torch.einsum("pij,spj->spi", rot, noise * log_s.exp()[None])
    out = {name: getattr(scene, name).detach()[idx].repeat(samples, *([1] * (getattr(scene, name).dim() - 1)))
           for name in GROUPS}
    out["means"] = (means[None] + offsets).reshape(-1, 3)
    out["scales"] = (log_s - math.log(0.8 * samples)).repeat(samples, 1)
    return out


# ----------------------------------------------------------------------------------------------------
# The schedule
# ----------------------------------------------------------------------------------------------------

class GaussianStrategy:
    """The 3DGS schedule for one scene. extent: scene size in world units (clone/split and huge-prune
    thresholds are fractions of it); seed: for the split samples (drawn from (seed, step), so a resumed
    scene splits the same way)."""

    def __init__(self, config: GaussianStrategyConfig | None = None, extent: float = 1.0, seed: int = 0):
        self.config = config or GaussianStrategyConfig()
        self.extent = float(extent)
        self.seed = int(seed)
        self.last_densified = 0
        self.last_pruned = 0

    def _generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + step) % (2 ** 63))

    def step(self, scene: "GaussianScene", step: int, optimizer) -> bool:
        """Run what the schedule asks for after optimiser step `step` (steps counted from 1). Returns True
        when the Gaussians changed (parameters and optimiser state rebuilt or opacities reset)."""
        cfg = self.config
        self.last_densified = self.last_pruned = 0
        if cfg.disabled or step >= cfg.densify_until:
            return False
        changed = False
        if step > cfg.densify_from and cfg.densify_every > 0 and step % cfg.densify_every == 0:
            past_reset = cfg.opacity_reset_every > 0 and step > cfg.opacity_reset_every
            self.last_densified, self.last_pruned = self.refine(
                scene, optimizer, step, cfg.grad_threshold, cfg.prune_opacity,
                cfg.prune_scale * self.extent if past_reset else 0.0)
            changed = True
        if cfg.opacity_reset_every > 0 and step % cfg.opacity_reset_every == 0:
            reset_opacity(scene, optimizer, cfg.reset_value)
            changed = True
        return changed

    def refine(self, scene: "GaussianScene", optimizer, step: int, grad_threshold: float, prune_opacity: float,
               prune_max_scale: float) -> tuple[int, int]:
        """Densify (if grad_threshold > 0), then prune by opacity (if > 0) and largest scale (if > 0, world
        units), then reset the statistics. Returns (added, removed)."""
        added = 0
        if grad_threshold > 0:
            added = densify(scene, optimizer, grad_threshold, self.config.percent_dense, self.extent,
                            self.config.max_gaussians, self._generator(step))
        with torch.no_grad():
            mask = torch.zeros(scene.num_gaussians, dtype=torch.bool, device=scene.means.device)
            if prune_opacity > 0:
                mask |= torch.sigmoid(scene.opacities) < prune_opacity
            if prune_max_scale > 0:
                mask |= scene.scales.exp().amax(1) > prune_max_scale
        removed = prune(scene, optimizer, mask)
        scene.grad2d_sum.zero_()
        scene.grad2d_count.zero_()
        return added, removed
