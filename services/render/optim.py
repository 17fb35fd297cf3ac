"""Optimisers for scene sessions: one torch param group per named parameter group, learning rates as
threestudio-style schedules [start_step, start_value, end_value, end_step], Adam or Adan."""

from __future__ import annotations

import math


import torch
from torch import nn

from services.render.types import LrSchedule, OptimizerSpec

class Adan(torch.optim.Optimizer):
    """Adan (Xie et al. 2022): Nesterov-style adaptive momentum with gradient differences.
    betas = (beta1, beta2, beta3) in the paper's "1 - beta" form used by its reference code:
    m <- (1-b1) m + b1 g; v <- (1-b2) v + b2 (g - g_prev); n <- (1-b3) n + b3 (g + (1-b2)(g - g_prev))^2.
    Defaults (0.02, 0.08, 0.01) correspond to the paper's (0.98, 0.92, 0.99)."""

    def __init__(self, params, lr=1e-3, betas=(0.02, 0.08, 0.01), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2, b3 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_diff"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                    state["prev_grad"] = g.clone()
                state["step"] += 1
                t = state["step"]
                diff = g - state["prev_grad"]
                state["exp_avg"].mul_(1 - b1).add_(g, alpha=b1)
                state["exp_avg_diff"].mul_(1 - b2).add_(diff, alpha=b2)
                update = g + (1 - b2) * diff
                state["exp_avg_sq"].mul_(1 - b3).addcmul_(update, update, value=b3)
                c1, c2, c3 = 1 - (1 - b1) ** t, 1 - (1 - b2) ** t, 1 - (1 - b3) ** t
                denom = (state["exp_avg_sq"] / c3).sqrt().add_(group["eps"])
                direction = (state["exp_avg"] / c1 + (1 - b2) * state["exp_avg_diff"] / c2) / denom
                p.mul_(1 / (1 + group["lr"] * group["weight_decay"]))
                p.add_(direction, alpha=-group["lr"])
                state["prev_grad"].copy_(g)


class SceneOptimizer:
    """Wraps a torch optimizer over a representation's named groups and applies the schedules."""

    def __init__(self, groups: dict[str, list[nn.Parameter]], defaults: dict[str, float], spec: OptimizerSpec):
        unknown = (set(spec.lrs) | spec.frozen) - set(groups)
        if unknown:
            raise KeyError(f"unknown parameter group(s) {sorted(unknown)}; this kind has {sorted(groups)}")
        self.spec = spec
        self.schedules = {name: spec.lrs.get(name, LrSchedule.constant(defaults.get(name, 1e-3)))
                          for name in groups if name not in spec.frozen}
        for name in spec.frozen:
            for p in groups[name]:
                p.requires_grad_(False)
        param_groups = [{"params": groups[name], "name": name, "lr": self.schedules[name](0)}
                        for name in self.schedules]
        if spec.kind == "adan":
            betas = tuple(1 - b for b in spec.betas) if spec.betas else (0.02, 0.08, 0.01)
            self.torch = Adan(param_groups, betas=betas, eps=spec.eps, weight_decay=spec.weight_decay)
        else:
            betas = tuple(spec.betas) if spec.betas else (0.9, 0.999)
            self.torch = torch.optim.AdamW(param_groups, betas=betas, eps=spec.eps, weight_decay=spec.weight_decay) \
                if spec.weight_decay else torch.optim.Adam(param_groups, betas=betas, eps=spec.eps)
        self.step_count = 0

    def group_params(self) -> dict[str, list[nn.Parameter]]:
        return {g["name"]: g["params"] for g in self.torch.param_groups}

    def grad_norms(self) -> dict[str, float]:
        out = {}
        for name, params in self.group_params().items():
            sq = sum(float(p.grad.detach().pow(2).sum()) for p in params if p.grad is not None)
            out[name] = math.sqrt(sq)
        return out

    def grads_finite(self) -> bool:
        return all(bool(torch.isfinite(p.grad).all()) for ps in self.group_params().values() for p in ps
                   if p.grad is not None)

    def step(self) -> dict[str, float]:
        """Clip, set this step's learning rates, step, zero the gradients. Returns the rates used."""
        params = [p for ps in self.group_params().values() for p in ps]
        if self.spec.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(params, self.spec.max_grad_norm)
        rates = {}
        for g in self.torch.param_groups:
            g["lr"] = rates[g["name"]] = self.schedules[g["name"]](self.step_count)
        self.torch.step()
        self.torch.zero_grad(set_to_none=True)
        self.step_count += 1
        return rates

    def zero_grad(self) -> None:
        self.torch.zero_grad(set_to_none=True)
