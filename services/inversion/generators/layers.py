"""StyleGAN2 building blocks in plain PyTorch (the layers EG3D, PanoHead and 3DPortraitGAN share).

Parameters are stored as the official implementation stores them (equalised learning rate: weights
drawn N(0, 1) / lr_multiplier and multiplied at run time by a gain lr_multiplier / sqrt(fan_in)), and
the modules carry the official names (`affine`, `weight`, `bias`, `noise_const`, `noise_strength`,
`const`, `torgb`, `conv0`, `conv1`, `resample_filter`), so a converted official state dict loads by
name (see convert_pickle.py).

Deviations from the official code, stated once: no custom CUDA kernels (bias_act / upfirdn2d are
written with plain torch ops, same maths); the 2x up-sampling convolution is computed as FIR
up-sampling (with a one-pixel margin) followed by an unpadded 3x3 convolution with the flipped kernel,
the same linear operator as the official transposed convolution + FIR blur (tests/inversion checks it
against that construction; not checked against the official code or weights, none being available
here); no fp16 paths.

Tensor shapes: images / feature maps (N, C, H, W); latents w (N, w_dim); ws (N, num_ws, w_dim).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2.0)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def bias_act(x: torch.Tensor, b: torch.Tensor | None, act: str = "linear", gain: float | None = None,
             clamp: float | None = None, dim: int = 1) -> torch.Tensor:
    """x + b (broadcast along `dim`), activation ("linear" | "lrelu" with slope 0.2), times gain
    (default: sqrt(2) for lrelu, 1 for linear), clamped to [-clamp, clamp] when clamp is set."""
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape)
    if act == "lrelu":
        x = F.leaky_relu(x, 0.2)
        gain = LRELU_GAIN if gain is None else gain
    elif act != "linear":
        raise ValueError(f"unknown activation {act!r}")
    if gain is not None and gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def fir_filter(taps=(1.0, 3.0, 3.0, 1.0)) -> torch.Tensor:
    """Separable FIR filter (k, k), normalised to sum 1 (StyleGAN2's resample filter)."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = f[:, None] * f[None, :]
    return f / f.sum()


def upsample2d(x: torch.Tensor, f: torch.Tensor, margin: int = 0) -> torch.Tensor:
    """2x up-sampling: zero insertion, then the FIR filter f (k, k) with gain 4 (upfirdn2d.upsample2d's
    padding: (k + 1) // 2 before, (k - 2) // 2 after, plus `margin` more on each side).
    x (N, C, H, W) -> (N, C, 2H + 2 margin, 2W + 2 margin)."""
    N, C, H, W = x.shape
    z = x.new_zeros((N, C, H, 2, W, 2))
    z[:, :, :, 0, :, 0] = x
    z = z.reshape(N, C, 2 * H, 2 * W)
    k = f.shape[-1]
    p0, p1 = (k + 1) // 2 + margin, (k - 2) // 2 + margin
    z = F.pad(z, (p0, p1, p0, p1))
    w = (f.to(x) * 4).flip([0, 1])[None, None].expand(C, 1, k, k)
    return F.conv2d(z, w, groups=C)


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer: y = act(x @ (weight * lr_multiplier / sqrt(in)).T
    + bias * lr_multiplier)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.lr_multiplier = lr_multiplier
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def effective(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The plain (out, in) weight and (out,) bias this layer applies (gains folded in)."""
        w = self.weight * self.weight_gain
        b = None if self.bias is None else self.bias * self.bias_gain
        return w, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w, b = self.effective()
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, self.activation)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, *, demodulate: bool = True,
                     padding: int = 0, up: bool = False, resample_filter: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """StyleGAN2 modulated convolution, one kernel per sample (grouped conv).
    x (N, I, H, W); weight (O, I, k, k); styles (N, I). up: FIR 2x up-sampling first and the flipped
    kernel (see the module docstring)."""
    N, I, H, W = x.shape
    O, _, kh, kw = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(N, 1, I, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(N, O, 1, 1, 1)
    if up:  # the filtered image continues past the border: the kernel then runs without zero padding
        x = upsample2d(x, resample_filter, margin=padding)
        w = w.flip([3, 4])
        padding = 0
    x = x.reshape(1, N * I, *x.shape[2:])
    out = F.conv2d(x, w.reshape(N * O, I, kh, kw), padding=padding, groups=N)
    return out.reshape(N, O, *out.shape[2:])


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv + noise + bias + lrelu (StyleGAN2). Noise: `noise_const` (res, res) buffer
    times the learned `noise_strength`; noise_mode "const" (default; inversion optimises these
    buffers), "random" or "none"; a caller-given noise tensor (res, res) replaces the buffer."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: bool = False,
                 use_noise: bool = True, conv_clamp: float | None = 256.0, kernel_size: int = 3):
        super().__init__()
        self.resolution, self.up, self.use_noise, self.conv_clamp = resolution, up, use_noise, conv_clamp
        self.padding = kernel_size // 2
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        if up:
            self.register_buffer("resample_filter", fir_filter())

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const",
                noise: torch.Tensor | None = None) -> torch.Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, padding=self.padding, up=self.up,
                             resample_filter=getattr(self, "resample_filter", None))
        if self.use_noise and noise_mode != "none":
            if noise is None:
                noise = (torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device, dtype=x.dtype)
                         if noise_mode == "random" else self.noise_const)
            x = x + noise * self.noise_strength
        return bias_act(x, self.bias, "lrelu", clamp=self.conv_clamp)  # the clamp applies after the lrelu gain


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation (StyleGAN2's toRGB): the image / feature-plane output."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = 256.0):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the 'skip' StyleGAN2 synthesis network: (const at 4x4 | up-conv0) -> conv1 ->
    torgb; the output image is the up-sampled previous image plus this block's torgb output.
    forward(x, img, ws (N, num_conv + num_torgb, w_dim)) -> (x, img, y) with y = this block's torgb
    output alone (the pyramid tri-grid uses it per level)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int, *,
                 use_noise: bool = True, conv_clamp: float | None = 256.0):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.register_buffer("resample_filter", fir_filter())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, use_noise=use_noise,
                                        conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, use_noise=use_noise,
                                    conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def noise_layers(self) -> dict[str, SynthesisLayer]:
        layers = {"conv1": self.conv1} if self.in_channels == 0 else {"conv0": self.conv0, "conv1": self.conv1}
        return {k: v for k, v in layers.items() if v.use_noise}

    def forward(self, x, img, ws, noise_mode: str = "const", noise: dict | None = None):
        noise = noise or {}
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
            x = self.conv1(x, next(w_iter), noise_mode, noise.get("conv1"))
        else:
            x = self.conv0(x, next(w_iter), noise_mode, noise.get("conv0"))
            x = self.conv1(x, next(w_iter), noise_mode, noise.get("conv1"))
        y = self.torgb(x, next(w_iter))
        if img is not None:
            img = upsample2d(img, self.resample_filter) if img.shape[-1] != x.shape[-1] else img
            img = img + y
        else:
            img = y
        return x, img, y
