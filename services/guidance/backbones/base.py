"""What every diffusion backbone gives the guidance service.

A backbone is one loaded model family (a diffusers SD folder, a UNet served by Triton, the analytic prior)
with its noise schedule, a differentiable image -> latent encoder, a decoder, a text encoder and one batched
noise predictor. Everything method-specific (SDS, CFG, weighting, timestep choice, sampling loops, batching)
lives in the service and is written once against this interface, so swapping a backbone never touches an
optimiser or a recipe.

Conventions: images are float (B, 3, R, R) in [0, 1] at the working resolution R; latents are
(B, latent_channels, R / f, R / f) already multiplied by the VAE scaling factor; timesteps are integer
(B,) in [0, num_train_timesteps - 1].

A backbone that conditions on each image's camera may also have
    encode_cameras(cameras: list[PinholeCamera], image_size: (H, W), resolution: R, loras: list[str],
                   background: np.ndarray (n, 3) in [0, 1] | None (white), expression: str) -> torch.Tensor (n, ...)
called once per request (cameras: 0 or n, as the request gave them; loras: the active LoRA names;
background: the colour the request's images were composited over; expression: conditions.expression), whose
rows reach predict_noise as BatchConditions.cameras. The oracle test prior (backbones/oracle.py) is one.

A backbone with an expression adapter (info.expression_adapter) may also have
    encode_expression(texts: list[str]) -> torch.Tensor (n, D_text) float32
whose rows reach predict_noise as BatchConditions.expression (the diffusers backbone: the text encoder's pooled
output, backbones/expression_adapter.py); without it, conditions.expression is accepted and not encoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from services.common.errors import FailedPrecondition
from services.guidance.types import OUTPUT_KINDS, BackboneInfo, ControlSpec


class ModelFilesError(FailedPrecondition):
    """A configured model folder or file is missing or malformed. The message names the missing path and
    the expected layout; at server start this is fatal (the CLI prints it and exits non-zero)."""

    def __init__(self, message: str):
        super().__init__(message, reason="MODEL_FILES")


# Normal-map conventions a model can be trained in, as the sign of each axis relative to the API's OpenCV
# camera frame (x right, y down, z forward): "opencv" as is; "opengl" x right, y up, z toward the viewer;
# "bae" x left, y up, z toward the viewer (Bae et al. / ScanNet, lllyasviel's normalbae). Pictures are
# (n + 1) / 2 in every convention, so converting negates channels: x -> 1 - x, its own inverse.
NORMAL_CONVENTIONS = {"opencv": (1, 1, 1), "opengl": (1, -1, -1), "bae": (-1, -1, -1)}


# Depth-map conventions a model can be trained in. Generate's depth maps are always 1 = nearest, 0 = background
# (guidance.proto); "inverse_depth" maps (MiDaS / ControlNet-depth style) go out as they are, "depth" maps
# (normalised depth, 0 = nearest, 1 = far and background) as 1 - x, so each stays affine in what it was.
DEPTH_CONVENTIONS = ("inverse_depth", "depth")


def check_depth_convention(name: str, where: str) -> None:
    """ModelFilesError naming `where` when `name` is not one of DEPTH_CONVENTIONS."""
    if name not in DEPTH_CONVENTIONS:
        raise ModelFilesError(f"{where}: depth_convention {name!r}; expected one of {list(DEPTH_CONVENTIONS)}")


def depth_pictures(images: np.ndarray, convention: str) -> np.ndarray:
    """A depth backbone's decoded pictures (N, 3, H, W) in [0, 1] -> Generate's depth maps (N, 1, H, W):
    the channel mean, flipped (1 - x) for a "depth" model so that 1 = nearest in both conventions."""
    maps = images.mean(axis=1, keepdims=True)
    return 1.0 - maps if convention == "depth" else maps


def check_output_kind(kind: str, where: str) -> None:
    """ModelFilesError naming `where` when `kind` is not one of OUTPUT_KINDS."""
    if kind not in OUTPUT_KINDS:
        raise ModelFilesError(f"{where}: output_kind {kind!r}; expected one of {list(OUTPUT_KINDS)}")


def check_normal_convention(name: str, where: str) -> None:
    """ModelFilesError naming `where` when `name` is not one of NORMAL_CONVENTIONS."""
    if name not in NORMAL_CONVENTIONS:
        raise ModelFilesError(f"{where}: normal_convention {name!r}; expected one of {list(NORMAL_CONVENTIONS)}")


def output_kind(info: BackboneInfo, loras: list[str]) -> tuple[str, str]:
    """What a backbone produces with the LoRAs named in `loras` active (the first non-RGB LoRA's kind,
    else the backbone's) and the normal convention to convert pictures with ("opencv" = none)."""
    specs = {s.name: s for s in info.loras}
    kind, convention = info.output_kind, info.normal_convention
    for lora in loras:
        spec = specs.get(lora)
        if spec is not None and spec.output_kind != "rgb":
            kind, convention = spec.output_kind, spec.normal_convention
            break
    return kind, convention if kind == "normal" else "opencv"


def _map_channels(x: np.ndarray, convention: str, fn) -> np.ndarray:
    """x (N, 3, H, W) with fn applied to the channels `convention` negates (x itself when none)."""
    flipped = [c for c, sign in enumerate(NORMAL_CONVENTIONS[convention]) if sign < 0]
    if not flipped:
        return x
    out = x.copy()
    out[:, flipped] = fn(x[:, flipped])
    return out


def convert_normal_pictures(images: np.ndarray, convention: str) -> np.ndarray:
    """Normal-map pictures (N, 3, H, W) in [0, 1] between the OpenCV convention and `convention` (either
    direction: the map is an involution)."""
    return _map_channels(images, convention, lambda c: 1 - c)


def convert_normal_gradients(grad: np.ndarray, convention: str) -> np.ndarray:
    """dLoss/dPicture (N, 3, H, W) w.r.t. the model-convention picture -> w.r.t. the OpenCV picture."""
    return _map_channels(grad, convention, lambda c: -c)


@dataclass
class ControlBatch:
    """One ControlNet's input for the B rows of a noise-prediction call."""

    name: str
    image: torch.Tensor        # (B, C, R, R) in the ControlNet's own convention (prepare_control's output)
    scale: torch.Tensor        # (B,) conditioning scale per row; the ControlNet residuals are multiplied by it


@dataclass
class BatchConditions:
    """Encoded conditions for the B rows of one predict_noise call (classifier-free guidance puts the
    conditional and the unconditional rows in the same call)."""

    text: torch.Tensor                          # (B, L, D) text-encoder hidden states
    identity: torch.Tensor | None = None        # (B, D_id) L2-normalised face embeddings; zero rows = no identity
    identity_adapter: str = ""                  # "" = the backbone's default
    identity_scale: float = 1.0                 # lambda_id, same for the whole call
    expression: torch.Tensor | None = None      # (B, D_text) pooled text embeddings of the expression; zero rows = none
    expression_scale: float = 1.0               # lambda_exp, same for the whole call; 0 = the adapter off
    controls: list[ControlBatch] = field(default_factory=list)
    loras: tuple[tuple[str, float], ...] = ()   # (name, scale), same for the whole call
    cameras: torch.Tensor | None = None         # (B, ...) encode_cameras rows, for backbones that have it


class Backbone(Protocol):
    info: BackboneInfo
    device: torch.device

    def alphas_cumprod(self) -> torch.Tensor:
        """(T,) float64 on CPU: the cumulative product of (1 - beta) of the training schedule."""

    def scheduler_config(self) -> dict:
        """A diffusers scheduler config (the folder's scheduler/scheduler_config.json) for sampling loops."""

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """(B, L, D) text hidden states for B prompts (no grad)."""

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) in [0, 1] -> latents (B, C, R/f, R/f), scaled; differentiable w.r.t. images.
        Deterministic (the VAE posterior mean), so batched and unbatched calls agree."""

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) scaled latents -> (B, 3, h*f, w*f) in [0, 1] (no grad)."""

    def predict_noise(self, latents_t: torch.Tensor, timesteps: torch.Tensor, cond: BatchConditions) -> torch.Tensor:
        """eps prediction (B, C, h, w) for noisy latents at integer timesteps (B,); v-prediction models convert
        to eps. No grad. Rows are independent: batching rows never changes a row's result."""

    def prepare_control(self, spec: ControlSpec, picture: np.ndarray, resolution: int) -> torch.Tensor:
        """A control picture in the service's convention -> the ControlNet's input (1, C, R, R) on device.

        Service conventions (guidance.proto ControlInput): landmarks (3, H, W) in [0, 1], already drawn;
        canny (1, H, W) edges in [0, 1] or (3, H, W) RGB to detect edges on; normal (3, H, W) in [-1, 1] OpenCV
        camera frame; depth (1, H, W) world units, 0 = background."""
