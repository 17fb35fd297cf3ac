"""GAN inversion: latent optimisation (W or W+) then Pivotal Tuning, transport-free.

Latent optimisation follows the StyleGAN2 / EG3D projector:
  start   w_avg (the mean of mapping(z, c) over 2,000 z with the conditioning camera c) or a given latent;
  loss    l2_weight * MSE + lpips_weight * LPIPS at min(lpips_resolution, S) pixels (area
          down-sampling), both restricted to the mask when one is given (pixels outside are replaced
          by the target's), + noise_regularization * the StyleGAN2 noise regulariser (the sum over
          noise buffers and scales of the squared autocorrelation at a one-pixel shift, halving
          the resolution down to 8x8) when the generator has noise inputs;
  lr      Adam (betas 0.9, 0.999) at lr * ramp(t), t = step / steps: linear warm-up over lr_rampup,
          cosine decay over the last lr_rampdown;
  w noise Gaussian noise of scale w_std * w_noise * max(0, 1 - t / w_noise_ramp)^2 added to the
          latent each step (exploration early on, none at the end);
  noise   the generator's constant noise buffers are optimised too (and renormalised to mean 0,
          std 1 after each step) when noise_regularization > 0; kept fixed otherwise.
camera  with optimize_camera, the camera is optimised jointly with the latent, as Portrait3D's
          projector optimises its head pose: three rotation offsets (yaw about world +Y, pitch about
          the input camera's right axis, roll about the viewing axis; radians inside, degrees out)
          about the generator's camera target, the rays differentiable through them (offset_camera),
          Adam at camera_lr * the same ramp. The conditioning label (w_avg, w_std) is not recomputed
          for the new camera (the projector does not re-run the mapping either); PTI then renders
          from the optimised camera.
PTI (Roich et al.): a copy of the generator (all but the mapping network, which PTI does not use) is
fine-tuned with Adam at pti_lr on pti_l2_weight * MSE + pti_lpips_weight * LPIPS with the pivot latent
fixed. The PTI paper's locality regulariser is not implemented.

Images: target (1, 3, S, S) in [0, 1] at the generator's output resolution; mask (1, 1, S, S) in [0, 1].
"""

from __future__ import annotations

import copy
import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from services.core.camera_batch import CameraBatch
from services.inversion.generators.triplane_generator import TriplaneGenerator
from services.core.lpips import LPIPS
from services.inversion.types import CameraOffsets, Cancelled, InvertSettings, Metrics, ProgressEvent


@dataclass
class InversionOutcome:
    ws: torch.Tensor                            # (1, num_ws, w_dim) pivot
    noise: dict[str, torch.Tensor]              # optimised noise buffers (res, res)
    tuned: TriplaneGenerator | None             # PTI copy (shares the mapping network)
    latent_metrics: Metrics
    pti_metrics: Metrics | None
    reconstruction: np.ndarray                  # (S, S, 3) uint8
    steps_per_s: float = 0.0
    pti_steps_per_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    camera: CameraBatch | None = None           # with optimize_camera: the optimised camera (world units)
    camera_offsets: CameraOffsets | None = None  # ... and its rotation from the input camera, degrees


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so step timings measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _axis_rotation(axis: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues: the (3, 3) rotation by `angle` radians (0-d tensor, differentiable) about the unit
    `axis` (3,), right-handed."""
    x, y, z = axis.unbind()
    zero = torch.zeros((), dtype=axis.dtype, device=axis.device)
    k = torch.stack([torch.stack([zero, -z, y]), torch.stack([z, zero, -x]), torch.stack([-y, x, zero])])
    eye = torch.eye(3, dtype=axis.dtype, device=axis.device)
    return eye + torch.sin(angle) * k + (1 - torch.cos(angle)) * (k @ k)


def offset_camera(camera: CameraBatch, offsets: torch.Tensor, pivot: torch.Tensor) -> CameraBatch:
    """The cameras rotated about `pivot` (3,) (world units) by offsets (3,) = (yaw, pitch, roll) in
    radians: yaw about world +Y (the orbit azimuth grows), pitch about each camera's right axis (+x; the
    elevation grows), roll about its viewing axis (+z, right-handed). Built
    from torch ops, so rays (CameraBatch.pixel_rays) are differentiable w.r.t. the offsets; the
    intrinsics are kept. Zero offsets give the input extrinsics."""
    dtype, dev = offsets.dtype, offsets.device
    w2c = camera.world_to_camera.to(dtype=dtype, device=dev)
    rot_b, t_b = w2c[:, :3, :3], w2c[:, :3, 3]
    rot_c2w = rot_b.transpose(1, 2)                               # camera axes as world columns
    centre = -(rot_c2w @ t_b[..., None])[..., 0]                  # (N, 3)
    yaw, pitch, roll = offsets.unbind()
    up = torch.tensor([0.0, 1.0, 0.0], dtype=dtype, device=dev)
    z_cam = torch.tensor([0.0, 0.0, 1.0], dtype=dtype, device=dev)
    out = []
    for i in range(w2c.shape[0]):
        right = rot_c2w[i, :, 0] / rot_c2w[i, :, 0].norm()
        world = _axis_rotation(up, yaw) @ _axis_rotation(right, -pitch)   # +x right: -pitch raises it
        new_c2w = world @ rot_c2w[i] @ _axis_rotation(z_cam, roll)
        new_centre = pivot + world @ (centre[i] - pivot)
        rot = new_c2w.T
        top = torch.cat([rot, -(rot @ new_centre)[:, None]], 1)
        bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=dtype, device=dev)
        out.append(torch.cat([top, bottom], 0))
    return CameraBatch(camera.K.to(dtype=dtype, device=dev), torch.stack(out), camera.width, camera.height)


def lr_schedule(t: float, base: float, rampup: float, rampdown: float) -> float:
    """StyleGAN's projector ramp at progress t in [0, 1]."""
    ramp = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if rampup > 0:
        ramp *= min(1.0, t / rampup)
    return base * ramp


def camera_offsets(offsets: torch.Tensor) -> CameraOffsets:
    """(yaw, pitch, roll) radians -> CameraOffsets in degrees."""
    yaw, pitch, roll = (math.degrees(float(v)) for v in offsets.detach().cpu())
    return CameraOffsets(yaw, pitch, roll)


def noise_regularizer(noise: dict[str, torch.Tensor]) -> torch.Tensor:
    """StyleGAN2's: squared autocorrelation at a one-pixel shift per scale (down to 8x8)."""
    reg = None
    for v in noise.values():
        v = v[None, None]
        while True:
            term = (v * torch.roll(v, 1, dims=3)).mean().square() + (v * torch.roll(v, 1, dims=2)).mean().square()
            reg = term if reg is None else reg + term
            if v.shape[2] <= 8:
                break
            v = F.avg_pool2d(v, 2)
    return reg if reg is not None else torch.zeros(())


class Objective:
    """Masked L2 + LPIPS against one target image."""

    def __init__(self, target: torch.Tensor, mask: torch.Tensor | None, lpips: LPIPS | None, lpips_resolution: int):
        self.target, self.mask, self.lpips = target, mask, lpips
        self.size = min(lpips_resolution, target.shape[-1])
        self.target_small = self._small(target)

    def _small(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.shape[-1] == self.size else F.interpolate(x, size=(self.size, self.size), mode="area")

    def mse(self, img: torch.Tensor) -> torch.Tensor:
        d = (img - self.target).square()
        if self.mask is None:
            return d.mean()
        return (d * self.mask).sum() / (self.mask.sum() * 3).clamp_min(1.0)

    def perceptual(self, img: torch.Tensor) -> torch.Tensor | None:
        if self.lpips is None:
            return None
        if self.mask is not None:
            img = img * self.mask + self.target * (1 - self.mask)
        return self.lpips(self._small(img), self.target_small).mean()

    @torch.no_grad()
    def metrics(self, img: torch.Tensor) -> Metrics:
        mse = float(self.mse(img.clamp(0, 1)))
        p = self.perceptual(img.clamp(0, 1))
        return Metrics(mse, 10 * math.log10(1.0 / max(mse, 1e-10)), float(p) if p is not None else float("nan"))


def to_uint8(img: torch.Tensor, size: int | None = None) -> np.ndarray:
    """(1, 3, H, W) in [0, 1] -> (size, size, 3) uint8 (area / bilinear resize when size differs)."""
    img = img.detach().float().clamp(0, 1)
    if size and size != img.shape[-1]:
        mode = "area" if size < img.shape[-1] else "bilinear"
        img = F.interpolate(img, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return (img[0].permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def invert(generator: TriplaneGenerator, target: torch.Tensor, camera: CameraBatch, label: np.ndarray | None,
           settings: InvertSettings, *, mask: torch.Tensor | None = None, lpips: LPIPS | None = None,
           cancelled: Callable[[], bool] = lambda: False, w_stats: tuple[torch.Tensor, float] | None = None
           ) -> Iterator[ProgressEvent | InversionOutcome]:
    """Run the inversion; yields ProgressEvents and finally the InversionOutcome. camera: one
    world-unit camera at the neural resolution; label: the 25-float conditioning label (None = frontal).
    Raises Cancelled when cancelled() turns true (checked every step). w_stats: a cached
    generator.w_stats(label) result."""
    s = settings
    gen = generator
    dev = next(gen.parameters()).device
    target = target.to(dev)
    mask = None if mask is None else mask.to(dev)
    cam = camera.to(device=dev)
    objective = Objective(target, mask, lpips, s.lpips_resolution)
    rng = torch.Generator(device="cpu").manual_seed(int(s.seed) if s.seed else secrets.randbits(63))
    num_ws, w_dim = gen.num_ws, gen.cfg.w_dim
    start = time.perf_counter()

    w_avg, w_std = w_stats if w_stats is not None else gen.w_stats(label)
    if s.init_latent is not None:
        init = torch.as_tensor(np.asarray(s.init_latent, np.float32), device=dev)
        init = init.expand(num_ws, w_dim) if init.ndim == 1 else init
    else:
        init = w_avg.to(dev).expand(num_ws, w_dim)
    if s.latent_space == "w":
        w_opt = init.mean(0, keepdim=True)[None].clone()          # (1, 1, w_dim), broadcast
    else:
        w_opt = init[None].clone()                                  # (1, num_ws, w_dim)
    w_opt.requires_grad_(True)
    optimise_noise = s.noise_regularization > 0 and bool(gen.noise_buffers())
    noise = {k: v.detach().clone().requires_grad_(optimise_noise) for k, v in gen.noise_buffers().items()}
    params = [w_opt] + (list(noise.values()) if optimise_noise else [])
    opt = torch.optim.Adam(params, betas=(0.9, 0.999), lr=s.lr)
    cam_opt = None
    if s.optimize_camera:
        pivot = torch.as_tensor(np.asarray(gen.cfg.camera_target, np.float64) * gen.cfg.world_scale,
                                dtype=cam.K.dtype, device=dev)
        cam_opt = torch.zeros(3, dtype=cam.K.dtype, device=dev, requires_grad=True)   # yaw, pitch, roll, rad
        opt.add_param_group({"params": [cam_opt], "lr": s.camera_lr})

    def view() -> CameraBatch:
        return cam if cam_opt is None else offset_camera(cam, cam_opt, pivot)

    def full(w):
        return w.expand(1, num_ws, w_dim)

    def preview(img):
        return to_uint8(img, s.preview_size) if s.preview_size else None

    def scalars(loss, mse, perc, lr):  # at this step's latent (with its w noise)
        loss, mse = float(loss.detach()), float(mse.detach())
        out = {"loss": loss, "mse": mse, "lr": lr,
               "psnr": 10 * math.log10(1.0 / max(mse, 1e-10))}
        if perc is not None:
            out["lpips"] = float(perc.detach())
        if cam_opt is not None:
            out.update(camera_offsets(cam_opt).as_dict())
        return out

    t0 = time.perf_counter()
    for step in range(s.steps):
        if cancelled():
            raise Cancelled("inversion cancelled", reason="CANCELLED")
        t = step / s.steps
        lr = lr_schedule(t, s.lr, s.lr_rampup, s.lr_rampdown)
        for g in opt.param_groups:
            g["lr"] = lr
        if cam_opt is not None:   # the camera group: its own base lr, the same ramp
            opt.param_groups[-1]["lr"] = lr_schedule(t, s.camera_lr, s.lr_rampup, s.lr_rampdown)
        scale = w_std * s.w_noise * max(0.0, 1.0 - t / s.w_noise_ramp) ** 2 if s.w_noise_ramp > 0 else 0.0
        w_noise = torch.randn(w_opt.shape, generator=rng).to(dev) * scale
        img = gen.render(full(w_opt + w_noise), view(), ("rgb",), noise=noise)["rgb"]
        mse = objective.mse(img)
        perc = objective.perceptual(img) if s.lpips_weight > 0 else None
        loss = s.l2_weight * mse + (s.lpips_weight * perc if perc is not None else 0.0)
        if optimise_noise:
            loss = loss + s.noise_regularization * noise_regularizer(noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if optimise_noise:
            with torch.no_grad():
                for v in noise.values():
                    v -= v.mean()
                    v /= v.square().mean().sqrt().clamp_min(1e-8)
        if (step + 1) % s.progress_every == 0 or step + 1 == s.steps:
            yield ProgressEvent("invert", step + 1, s.steps, scalars(loss, mse, perc, lr),
                                time.perf_counter() - start, preview(img))
    _sync(dev)
    latent_time = time.perf_counter() - t0
    ws = full(w_opt.detach()).clone()
    noise = {k: v.detach() for k, v in noise.items()}
    offsets = None
    if cam_opt is not None:
        with torch.no_grad():
            cam = view()
        offsets = camera_offsets(cam_opt)
    with torch.no_grad():
        img = gen.render(ws, cam, ("rgb",), noise=noise)["rgb"]
    latent_metrics = objective.metrics(img)

    tuned, pti_metrics, pti_time = None, None, 0.0
    if s.pti:
        tuned = copy.deepcopy(gen, memo={id(gen.backbone.mapping): gen.backbone.mapping})
        tuned.requires_grad_(False)
        tparams = tuned.tunable_parameters()
        for p in tparams:
            p.requires_grad_(True)
        popt = torch.optim.Adam(tparams, lr=s.pti_lr)
        t0 = time.perf_counter()
        for step in range(s.pti_steps):
            if cancelled():
                raise Cancelled("inversion cancelled", reason="CANCELLED")
            img = tuned.render(ws, cam, ("rgb",), noise=noise)["rgb"]
            mse = objective.mse(img)
            perc = objective.perceptual(img) if s.pti_lpips_weight > 0 else None
            loss = s.pti_l2_weight * mse + (s.pti_lpips_weight * perc if perc is not None else 0.0)
            popt.zero_grad(set_to_none=True)
            loss.backward()
            popt.step()
            if (step + 1) % s.progress_every == 0 or step + 1 == s.pti_steps:
                yield ProgressEvent("pti", step + 1, s.pti_steps, scalars(loss, mse, perc, s.pti_lr),
                                    time.perf_counter() - start, preview(img))
        _sync(dev)
        pti_time = time.perf_counter() - t0
        tuned.requires_grad_(False)
        tuned.eval()
        with torch.no_grad():
            img = tuned.render(ws, cam, ("rgb",), noise=noise)["rgb"]
        pti_metrics = objective.metrics(img)
    yield InversionOutcome(ws, noise, tuned, latent_metrics, pti_metrics, to_uint8(img),
                           s.steps / latent_time if s.steps and latent_time > 0 else 0.0,
                           s.pti_steps / pti_time if s.pti and s.pti_steps and pti_time > 0 else 0.0,
                           {"latent_s": latent_time, "pti_s": pti_time, "total_s": time.perf_counter() - start},
                           cam if offsets is not None else None, offsets)
