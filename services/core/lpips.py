"""LPIPS (Zhang et al. 2018, the VGG16 variant the EG3D / PanoHead projectors use), written here so it
loads weight files without torchvision. Shared: the inversion service's projector loss and the recipes'
`perceptual` term (orchestrator/stages/terms.py) both use it.

    d(x, y) = sum_l mean_hw( w_l . (n(f_l(x)) - n(f_l(y)))^2 )

f_l: VGG16 activations relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of images in [-1, 1] after LPIPS's
scaling layer (shift (-0.030, -0.088, -0.188), scale (0.458, 0.448, 0.450)); n: unit norm over channels;
w_l: the learned non-negative 1x1 "lin" weights.

Weights (the user provides them; nothing is downloaded):
  backbone  torchvision's VGG16 ImageNet state dict (e.g. vgg16-397923af.pth) or the same keys as
            safetensors: features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.{weight,bias}. Only the
            `features` part is read. Layer widths are taken from the file, so smaller VGG-shaped
            networks (tests) load the same way.
  lin       the `lpips` package's lpips/weights/v0.1/vgg.pth: lin{0..4}.model.1.weight (1, C_l, 1, 1)
            (lin{l}.weight is accepted too). Read with torch.load(weights_only=True): no code runs.

Fallbacks, stated: backbone without lin weights -> every channel weighted 1 / C_l (the uncalibrated
"baseline" VGG distance; Describe reports "lpips-vgg16-uncalibrated"); no backbone -> no LPIPS at all:
the inversion loss is the L2 term only, lpips_weight is ignored, and reported LPIPS values are NaN
(Describe reports the LPIPS model as unavailable). A recipe's perceptual term without weights is refused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from services.common.errors import FailedPrecondition

log = logging.getLogger("headforge.lpips")

VGG_CONV_INDICES = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
# conv indices (into VGG_CONV_INDICES) after which an LPIPS tap is taken, and pools between stages
_STAGES = ((0, 1), (2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12))
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise FailedPrecondition(f"{path}: cannot read LPIPS weights ({type(e).__name__}: {e})",
                                 reason="LPIPS_WEIGHTS_INVALID") from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise FailedPrecondition(f"{path}: expected a state dict", reason="LPIPS_WEIGHTS_INVALID")
    return {k: v for k, v in data.items() if isinstance(v, torch.Tensor)}


class LPIPS(nn.Module):
    """forward(x, y): images (N, 3, H, W) in [0, 1] -> distances (N,). Frozen (no parameter gradients);
    differentiable w.r.t. the images."""

    def __init__(self, convs: list[tuple[torch.Tensor, torch.Tensor]], lins: list[torch.Tensor] | None,
                 name: str = "lpips-vgg16"):
        super().__init__()
        if len(convs) != len(VGG_CONV_INDICES):
            raise ValueError(f"VGG16 has {len(VGG_CONV_INDICES)} convolutions, got {len(convs)}")
        self.name = name
        self.convs = nn.ModuleList()
        for w, b in convs:
            conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], padding=w.shape[2] // 2)
            with torch.no_grad():
                conv.weight.copy_(w)
                conv.bias.copy_(b)
            self.convs.append(conv)
        widths = [convs[stage[-1]][0].shape[0] for stage in _STAGES]
        if lins is None:
            lins = [torch.full((1, c, 1, 1), 1.0 / c) for c in widths]
        for i, (lin, c) in enumerate(zip(lins, widths)):
            if tuple(lin.shape) != (1, c, 1, 1):
                raise ValueError(f"lin{i} has shape {list(lin.shape)}, the backbone's layer has {c} channels")
            self.register_buffer(f"lin{i}", lin.float().clone())
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_files(cls, vgg_path: str | Path, lin_path: str | Path | None = None) -> "LPIPS":
        """Load the backbone (+ lin) weights; FailedPrecondition naming what was expected."""
        vgg = _read_tensors(Path(vgg_path))
        keys = [(f"features.{i}.weight", f"features.{i}.bias") for i in VGG_CONV_INDICES]
        missing = [k for pair in keys for k in pair if k not in vgg]
        if missing:
            raise FailedPrecondition(f"{vgg_path}: not a VGG16 state dict: missing {missing[:4]} (expected "
                                     "torchvision's vgg16 keys features.<i>.weight/bias)", reason="LPIPS_WEIGHTS_INVALID")
        convs = [(vgg[w].float(), vgg[b].float()) for w, b in keys]
        lins = None
        name = "lpips-vgg16-uncalibrated"
        if lin_path is not None:
            raw = _read_tensors(Path(lin_path))
            lins = []
            for i in range(5):
                t = raw.get(f"lin{i}.model.1.weight", raw.get(f"lin{i}.weight"))
                if t is None:
                    raise FailedPrecondition(f"{lin_path}: missing lin{i}.model.1.weight (expected the lpips "
                                             "package's weights/v0.1/vgg.pth)", reason="LPIPS_WEIGHTS_INVALID")
                lins.append(t)
            name = "lpips-vgg16"
        try:
            return cls(convs, lins, name)
        except ValueError as e:
            raise FailedPrecondition(f"LPIPS weights do not fit together: {e}", reason="LPIPS_WEIGHTS_INVALID") from None

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x * 2 - 1) - self.shift) / self.scale
        taps = []
        for s, stage in enumerate(_STAGES):
            if s:
                x = F.max_pool2d(x, 2, 2)
            for i in stage:
                x = F.relu(self.convs[i](x))
            taps.append(x)
        return taps

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        y = y.expand_as(x) if y.shape[0] == 1 and n > 1 else y
        total = 0.0
        for i, f in enumerate(self.features(torch.cat([x, y]))):  # one batch for both
            a, b = f[:n], f[n:]
            a = a / (a.square().sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + F.conv2d((a - b).square(), getattr(self, f"lin{i}")).mean(dim=(1, 2, 3))
        return total


@dataclass
class LpipsStatus:
    model: LPIPS | None
    name: str          # "lpips-vgg16", "lpips-vgg16-uncalibrated" or "none"
    reason: str = ""   # why there is no model


def load_lpips(vgg_path: str | None, lin_path: str | None) -> LpipsStatus:
    """The configured LPIPS, or the stated fallback (no LPIPS) with the reason, logged once."""
    if not vgg_path:
        reason = "no VGG16 backbone weights configured (--lpips-vgg); the inversion loss is L2 only"
        log.warning("LPIPS disabled", extra={"reason": reason})
        return LpipsStatus(None, "none", reason)
    model = LPIPS.from_files(vgg_path, lin_path)
    if lin_path is None:
        log.warning("LPIPS lin weights not configured (--lpips-lin): uncalibrated VGG distance")
    return LpipsStatus(model, model.name)


def random_vgg_state(widths=(8, 16, 32, 32, 32), seed: int = 0) -> dict[str, torch.Tensor]:
    """A VGG16-shaped `features.*` state dict with small widths and random weights (tests, benchmarks
    without real weights)."""
    gen = torch.Generator().manual_seed(seed)
    out, cin = {}, 3
    for s, stage in enumerate(_STAGES):
        for i in stage:
            c = widths[s]
            idx = VGG_CONV_INDICES[i]
            out[f"features.{idx}.weight"] = torch.randn((c, cin, 3, 3), generator=gen) * (2.0 / (cin * 9)) ** 0.5
            out[f"features.{idx}.bias"] = torch.zeros(c)
            cin = c
    return out
