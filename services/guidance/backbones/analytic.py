"""The analytic prior: a diffusion "model" whose denoiser is exact and closed-form.

The data distribution is a mixture of K isotropic Gaussians around exemplar images mu_k (in [-1, 1]) with
standard deviation `sigma`. The "VAE" is the identity (latent = 2 * image - 1, f = 1, 3 channels), so for
z_t = sqrt(a) x0 + sqrt(1 - a) eps (a = alpha_bar_t):
    p(z_t | k) = N(sqrt(a) mu_k, v I),  v = a sigma^2 + 1 - a
    E[x0 | z_t, k] = mu_k + (sqrt(a) sigma^2 / v) (z_t - sqrt(a) mu_k)
    E[x0 | z_t] = sum_k r_k E[x0 | z_t, k],  r = softmax_k(-||z_t - sqrt(a) mu_k||^2 / (2 v)) over active k
    eps_hat = (z_t - sqrt(a) E[x0 | z_t]) / sqrt(1 - a)
which is exactly the minimum-MSE noise predictor a perfect network would learn. Text conditioning selects
the components: a prompt containing an exemplar's label activates the exemplars with that label; any other
prompt (and the empty negative prompt) activates all, so classifier-free guidance pushes towards the
prompted exemplars. Used to prove that SDS signs and scales are right (an image driven by repeated Distill
calls reaches the prompted exemplar) and to run the pipeline end to end on a CPU without weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from services.core.models import TEST_PRIOR, ModelRecord
from services.guidance.backbones.base import (BatchConditions, ModelFilesError, check_normal_convention,
                                             check_output_kind)
from services.guidance.schedule import SD_SCHEDULE, alphas_cumprod
from services.guidance.types import BackboneInfo, ControlSpec

# Stable Diffusion's schedule, so SDS weights and timestep fractions mean what they mean for SD.
SCHEDULER_CONFIG = {"_class_name": "DDIMScheduler", **SD_SCHEDULE, "prediction_type": "epsilon",
                    "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading"}


def builtin_exemplars(resolution: int = 32) -> tuple[np.ndarray, list[str]]:
    """Two exemplar pictures, (2, 3, R, R) in [0, 1]: a red disc on grey and a blue square on white."""
    yy, xx = np.mgrid[0:resolution, 0:resolution] / (resolution - 1) * 2 - 1
    disc = np.full((3, resolution, resolution), 0.5)
    inside = xx ** 2 + yy ** 2 < 0.5
    disc[:, inside] = np.array([0.85, 0.15, 0.1])[:, None]
    square = np.ones((3, resolution, resolution))
    inside = (np.abs(xx) < 0.55) & (np.abs(yy) < 0.55)
    square[:, inside] = np.array([0.1, 0.2, 0.8])[:, None]
    return np.stack([disc, square]).astype(np.float32), ["red disc", "blue square"]


def mixture_noise(latents_t: torch.Tensor, alphas: torch.Tensor, means: torch.Tensor, sigma: float,
                  active: torch.Tensor | None = None) -> torch.Tensor:
    """The exact eps prediction for a mixture of isotropic Gaussians (std `sigma`) around `means` (module
    docstring). latents_t (B, C, h, w); alphas (B,) alpha_bar at each row's timestep; means (K, C, h, w)
    shared by every row, or (B, K, C, h, w) per row; active (B, K) bool, the components each row may use
    (None = all). Returns eps (B, C, h, w)."""
    a = alphas[:, None]                                                          # (B, 1)
    v = a * sigma ** 2 + 1 - a
    z = latents_t.flatten(1)                                                     # (B, P)
    m = means.flatten(-3)                                                        # (K, P) or (B, K, P)
    m = m[None] if m.dim() == 2 else m
    sq = (z[:, None, :] - a.sqrt()[:, :, None] * m).pow(2).sum(-1)               # (B, K)
    logits = -sq / (2 * v)
    if active is not None:
        logits = logits.masked_fill(~active, float("-inf"))
    r = torch.softmax(logits, dim=1)                                             # (B, K)
    x0_k = m + (a.sqrt() * sigma ** 2 / v)[:, :, None] * (z[:, None, :] - a.sqrt()[:, :, None] * m)
    x0 = (r[:, :, None] * x0_k).sum(1)
    eps = (z - a.sqrt() * x0) / (1 - a).sqrt()
    return eps.view_as(latents_t)


class AnalyticBackboneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "analytic"
    backend: str = "analytic"
    default: bool = False
    # NPZ with `images` (K, 3, R, R) in [0, 1] and `labels` (K,) strings; empty = builtin_exemplars()
    exemplars: str = ""
    sigma: float = 0.05
    native_resolution: int = 32
    # what the exemplars are: "normal" exemplars are normal-map pictures in `normal_convention`
    output_kind: str = "rgb"
    normal_convention: str = "opencv"


class AnalyticBackbone:
    """Implements services.guidance.backbones.base.Backbone in closed form (see module docstring)."""

    def __init__(self, config: AnalyticBackboneConfig, base_dir: Path | None = None, device="cpu"):
        self.device = torch.device(device)
        check_output_kind(config.output_kind, f"analytic backbone {config.name!r}")
        check_normal_convention(config.normal_convention, f"analytic backbone {config.name!r}")
        if config.exemplars:
            path = Path(config.exemplars)
            path = path if path.is_absolute() or base_dir is None else base_dir / path
            if not path.is_file():
                raise ModelFilesError(f"analytic backbone {config.name!r}: missing {path}; expected an NPZ with "
                                      "`images` (K, 3, R, R) in [0, 1] and `labels` (K,)")
            data = np.load(path)
            images, labels = data["images"].astype(np.float32), [str(x) for x in data["labels"]]
        else:
            images, labels = builtin_exemplars(config.native_resolution)
        self.exemplars = torch.from_numpy(images).to(self.device) * 2 - 1    # (K, 3, R, R) in [-1, 1]
        self.labels = labels
        self.sigma = float(config.sigma)
        self._alphas = alphas_cumprod(SCHEDULER_CONFIG)
        self.info = BackboneInfo(
            name=config.name, backend="analytic", family="analytic", native_resolution=images.shape[-1],
            output_kind=config.output_kind, normal_convention=config.normal_convention,
            latent_scale_factor=1, latent_channels=3, num_train_timesteps=int(SCHEDULER_CONFIG["num_train_timesteps"]),
            variants=("sds",), controls=(), schedulers=("ddim", "ddpm", "euler"),
            models=(ModelRecord("exemplars", "analytic", config.exemplars or "builtin", provenance=TEST_PRIOR),))

    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas

    def scheduler_config(self) -> dict:
        return dict(SCHEDULER_CONFIG)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """(B, 1, K): 1 for the exemplars a prompt activates."""
        rows = []
        for p in prompts:
            hit = [1.0 if label and label in p.lower() else 0.0 for label in self.labels]
            rows.append(hit if any(hit) else [1.0] * len(self.labels))
        return torch.tensor(rows, dtype=torch.float32, device=self.device)[:, None, :]

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2 - 1

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents + 1) / 2).clamp(0, 1)

    def _means(self, size: tuple[int, int]) -> torch.Tensor:
        if tuple(self.exemplars.shape[-2:]) == tuple(size):
            return self.exemplars
        return F.interpolate(self.exemplars, size=size, mode="bilinear", align_corners=False)

    def predict_noise(self, latents_t: torch.Tensor, timesteps: torch.Tensor, cond: BatchConditions) -> torch.Tensor:
        mu = self._means(tuple(latents_t.shape[-2:])).to(latents_t.dtype)                  # (K, 3, R, R)
        a = self._alphas[timesteps.cpu()].to(latents_t)
        return mixture_noise(latents_t, a, mu, self.sigma, cond.text[:, 0, :].to(latents_t) > 0.5)

    def prepare_control(self, spec: ControlSpec, picture: np.ndarray, resolution: int) -> torch.Tensor:
        raise ModelFilesError("the analytic backbone has no ControlNets")


def load_analytic_backbone(config: AnalyticBackboneConfig | dict, base_dir: Path, device="cpu") -> AnalyticBackbone:
    """One `backend: analytic` entry of guidance.yaml (pydantic ValidationError on a bad field)."""
    cfg = config if isinstance(config, AnalyticBackboneConfig) else AnalyticBackboneConfig.model_validate(config)
    return AnalyticBackbone(cfg, base_dir, device)
