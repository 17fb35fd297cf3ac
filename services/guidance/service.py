"""The guidance service: validates requests, encodes their conditions (cached per subject), and hands the
GPU work to one dynamic batcher that serves every caller with one copy of each model.

Every method takes and returns the plain types of services.guidance.types and raises HeadForgeError
subclasses (mapped to gRPC statuses by the servicer); guidance.proto documents fields and errors.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import numpy as np
import torch

from services.common.auth import current_tenant
from services.common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, require
from services.common.images import encode_png
from services.common.tensors import require_finite
from services.guidance.backbones.base import (Backbone, ControlSpec, convert_normal_gradients,
                                             convert_normal_pictures)
from services.guidance.backbones.registry import load_backbone
from services.guidance.batching import DynamicBatcher
from services.guidance.cache import ConditionsCache
from services.guidance.conditioning import PreparedConditions
from services.guidance.config import GuidanceConfig
from services.guidance.controls import draw_landmarks
from services.guidance.distill import DistillWork, run_distill
from services.guidance.sampling import SampleWork, run_sampling
from services.guidance.schedule import WEIGHTINGS, choose_steps
from services.guidance.types import (Conditions, DenoiseRequest, DenoiseResult, DistillRequest, DistillResult,
                                     GenerateRequest, GenerateResult, GuidanceDescription, ImageDiagnostics,
                                     InpaintRequest, InpaintResult, QueueOptions)

MIN_SIDE, MAX_SIDE = 16, 2048
TEXT_MEMO_SIZE = 512


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3) uint8 (one channel repeated)."""
    hwc = np.moveaxis(np.clip(image, 0, 1) * 255 + 0.5, 0, -1).astype(np.uint8)
    return np.repeat(hwc, 3, axis=-1) if hwc.shape[-1] == 1 else hwc


def view_suffix(camera) -> str:
    """", front view" / ", side view" / ", back view" / ", overhead view" from a camera's orbit position."""
    x, y, z = camera.position
    elevation = math.degrees(math.atan2(y, math.hypot(x, z)))
    azimuth = abs(math.degrees(math.atan2(x, z)))
    if elevation > 60:
        return ", overhead view"
    if azimuth <= 45:
        return ", front view"
    return ", back view" if azimuth >= 135 else ", side view"


class GuidanceService:
    def __init__(self, config: GuidanceConfig | None = None, backbones: dict[str, Backbone] | None = None):
        self.config = config or GuidanceConfig()
        self.device = torch.device(self.config.device) if self.config.device else _default_device()
        if backbones is None:
            backbones = {}
            for entry in self.config.backbones:
                backbones[entry["name"]] = load_backbone(entry, Path(self.config.base_dir), self.device)
        self.backbones = backbones
        defaults = [e["name"] for e in self.config.backbones if e.get("default")]
        self.default_backbone = defaults[0] if defaults else next(iter(self.backbones))
        b = self.config.batching
        self.batcher = DynamicBatcher(max_batch_images=b.max_batch_images, max_queue_delay_ms=b.max_queue_delay_ms,
                                      max_queue_depth=b.max_queue_depth)
        self.cache = ConditionsCache(self.config.cache_max_entries, self.config.cache_ttl_s)
        self._text_memo: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._text_lock = threading.Lock()   # tokenizers are not thread-safe

    def close(self) -> None:
        self.batcher.close()

    # -- RPCs ---------------------------------------------------------------------------------------------
    def describe(self) -> GuidanceDescription:
        b = self.config.batching
        return GuidanceDescription(
            backbones=[(bb.info, name == self.default_backbone) for name, bb in self.backbones.items()],
            max_batch_images=b.max_batch_images, max_queue_delay_ms=int(b.max_queue_delay_ms),
            max_queue_depth=b.max_queue_depth, queue_depth=self.batcher.depth(),
            max_image_pixels=self.config.max_image_pixels, max_message_bytes=self.config.max_message_bytes,
            cache_ttl_s=int(self.config.cache_ttl_s), device=self._device_name())

    def distill(self, req: DistillRequest) -> DistillResult:
        name, bb = self._backbone(req.conditions.backbone)
        info = bb.info
        images = self._images(req.images, "images")
        n = images.shape[0]
        cameras = self._cameras(req.cameras, n, "cameras")
        variant = req.variant or "sds"
        if variant not in info.variants:
            raise FailedPrecondition(f"backbone {name!r} does not support the {variant!r} variant "
                                     f"(it supports {list(info.variants)})", reason="VARIANT_UNSUPPORTED")
        if variant == "isd" and req.conditions.identity_embedding is None and not req.conditions.identity_cache_key:
            raise InvalidArgument("conditions.identity_embedding", "ISD needs an identity embedding")
        guidance = req.guidance_scale or 100.0
        require(guidance >= 1 and math.isfinite(guidance), "guidance_scale", f"must be >= 1, got {guidance}")
        require(req.weighting in WEIGHTINGS, "weighting", f"unknown weighting {req.weighting!r}; one of {WEIGHTINGS}")
        require(math.isfinite(req.grad_clip) and req.grad_clip >= 0, "grad_clip", "must be >= 0")
        require(req.grad_dtype in ("float32", "float16"), "grad_dtype", "FLOAT32 or FLOAT16")
        self._check_timesteps(req, n)
        r = self._resolution(req.resolution, info, "resolution")
        latent_shape = (n, info.latent_channels, r // info.latent_scale_factor, r // info.latent_scale_factor)
        seed = req.seed or secrets.randbits(63)
        steps = choose_steps(req.timesteps, n, np.random.default_rng(seed), info.num_train_timesteps)
        noise = self._noise(req.noise, latent_shape, seed, "noise")
        cond = self._conditions(name, bb, req.conditions, n, cameras, r, images.shape[-2:])
        _, convention = self._output_kind(bb, req.conditions)
        images = convert_normal_pictures(images, convention)
        work = DistillWork(images=torch.from_numpy(images).to(bb.device), resolution=r, cond=cond,
                           steps=torch.from_numpy(steps).to(bb.device), noise=noise.to(bb.device),
                           guidance_scale=guidance, weighting=req.weighting, grad_clip=req.grad_clip,
                           want_denoised=req.return_denoised)
        out = self._submit(bb, work, run_distill, n, req.queue)
        grad = convert_normal_gradients(out.grad.detach().cpu().numpy(), convention)
        grad = grad.astype(np.float16 if req.grad_dtype == "float16" else np.float32)
        t = steps.tolist()
        diagnostics = [ImageDiagnostics(timestep=int(t[i]), t=t[i] / info.num_train_timesteps,
                                        weight=float(out.weights[i]), loss=float(out.loss[i]),
                                        grad_norm=float(out.grad_norm[i]), latent_grad_norm=float(out.latent_grad_norm[i]))
                       for i in range(n)]
        return DistillResult(grad=grad, diagnostics=diagnostics, seed=seed, backbone=name,
                             noise=noise.numpy() if req.return_noise else None,
                             denoised=None if out.denoised is None else
                             convert_normal_pictures(out.denoised.cpu().numpy().astype(np.float32), convention))

    def denoise(self, req: DenoiseRequest) -> DenoiseResult:
        name, bb = self._backbone(req.conditions.backbone)
        self._capability(name, bb, "denoise")
        images = self._images(req.images, "images")
        n = images.shape[0]
        require(0 < req.strength <= 1, "strength", f"must be in (0, 1], got {req.strength}")
        num_steps = req.num_steps or 10
        require(1 <= num_steps <= 1000, "num_steps", f"must be 1..1000, got {req.num_steps}")
        work, seed, convention = self._sample_work("denoise", name, bb, req, images, num_steps, req.strength,
                                                   req.noise)
        out = self._submit(bb, work, run_sampling, n, req.queue)
        result = convert_normal_pictures(out.images.cpu().numpy(), convention)
        return DenoiseResult(images=result.astype(req.images.dtype if req.images.dtype == np.float16 else np.float32),
                             start_timestep=out.start_timestep, seed=seed)

    def inpaint(self, req: InpaintRequest) -> InpaintResult:
        name, bb = self._backbone(req.conditions.backbone)
        self._capability(name, bb, "inpaint")
        images = self._images(req.images, "images")
        n, _, h, w = images.shape
        mask = self._mask(req.mask, n, h, w)
        strength = req.strength or 1.0
        require(0 < strength <= 1, "strength", f"must be in (0, 1], got {req.strength}")
        num_steps = req.num_steps or 30
        require(1 <= num_steps <= 1000, "num_steps", f"must be 1..1000, got {req.num_steps}")
        work, seed, convention = self._sample_work("inpaint", name, bb, req, images, num_steps, strength, None)
        work.mask = torch.from_numpy(mask).to(bb.device)
        out = self._submit(bb, work, run_sampling, n, req.queue)
        result = convert_normal_pictures(out.images.cpu().numpy().astype(np.float32), convention)
        # unmasked pixels come back bit-identical (1 - (1 - x) need not be x in floating point)
        return InpaintResult(images=np.where(mask == 0, images, result), seed=seed)

    def generate(self, req: GenerateRequest) -> GenerateResult:
        name, bb = self._backbone(req.conditions.backbone)
        self._capability(name, bb, "generate")
        info = bb.info
        n = req.num_images or 1
        limit = self.config.batching.max_batch_images
        require(1 <= n <= limit, "num_images", f"must be 1..{limit}, got {req.num_images}")
        f = info.latent_scale_factor
        width, height = req.width or info.native_resolution, req.height or info.native_resolution
        for field, v in (("width", width), ("height", height)):
            require(MIN_SIDE <= v <= MAX_SIDE and v % f == 0, field,
                    f"must be a multiple of {f} in {MIN_SIDE}..{MAX_SIDE}, got {v}")
        require(width * height <= self.config.max_image_pixels, "width",
                f"{width}x{height} is above max_image_pixels {self.config.max_image_pixels}")
        num_steps = req.num_steps or 30
        require(1 <= num_steps <= 1000, "num_steps", f"must be 1..1000, got {req.num_steps}")
        guidance = self._guidance(req.guidance_scale)
        scheduler = self._scheduler(req.scheduler, info)
        seed = req.seed or secrets.randbits(62)
        noise = torch.cat([self._noise(None, (1, info.latent_channels, height // f, width // f), seed + i, "")
                           for i in range(n)])
        require(not req.conditions.controls or width == height, "conditions.controls",
                "controls need a square image (width == height)")
        cond = self._conditions(name, bb, req.conditions, n, [], width, (height, width))
        gens = [torch.Generator().manual_seed(seed + i) for i in range(n)] if bb.device.type == "cpu" else None
        work = SampleWork(mode="generate", cond=cond, noise=noise.to(bb.device), guidance_scale=guidance,
                          scheduler=scheduler, num_steps=num_steps, generators=gens)
        out = self._submit(bb, work, run_sampling, n, req.queue)
        kind, convention = self._output_kind(bb, req.conditions)
        images = convert_normal_pictures(out.images.cpu().numpy().astype(np.float32), convention)
        if kind == "depth":
            images = images.mean(axis=1, keepdims=True)
        png = [encode_png(_to_uint8(im)) for im in images] if req.encode_png else []
        return GenerateResult(images=images, output_kind=kind, seed=seed, png=png)

    # -- validation and preparation ---------------------------------------------------------------------
    def _device_name(self) -> str:
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return str(self.device)

    def _backbone(self, name: str) -> tuple[str, Backbone]:
        name = name or self.default_backbone
        if name not in self.backbones:
            raise InvalidArgument("conditions.backbone", f"unknown backbone {name!r}; loaded: {sorted(self.backbones)}",
                                  reason="UNKNOWN_BACKBONE")
        return name, self.backbones[name]

    def _capability(self, name: str, bb: Backbone, rpc: str) -> None:
        if not getattr(bb.info, rpc):
            raise FailedPrecondition(f"backbone {name!r} does not serve {rpc}", reason="RPC_UNSUPPORTED")

    def _images(self, images: np.ndarray, field: str) -> np.ndarray:
        require(isinstance(images, np.ndarray) and images.ndim == 4 and images.shape[1] == 3, field,
                f"must be (N, 3, H, W), got {getattr(images, 'shape', None)}")
        n, _, h, w = images.shape
        limit = self.config.batching.max_batch_images
        require(1 <= n <= limit, field, f"N must be 1..{limit} (max_batch_images), got {n}")
        require(MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE, field,
                f"H and W must be {MIN_SIDE}..{MAX_SIDE}, got {h}x{w}")
        require(h * w <= self.config.max_image_pixels, field, f"{h}x{w} is above max_image_pixels")
        require(images.dtype in (np.float32, np.float16, np.float64), field, f"must be float, got {images.dtype}")
        images = images.astype(np.float32)
        require_finite(images, field)
        require(images.min() >= -1e-3 and images.max() <= 1 + 1e-3, field,
                f"values must be in [0, 1], got [{images.min():.3g}, {images.max():.3g}]")
        return np.clip(images, 0, 1)

    def _cameras(self, cameras: list, n: int, field: str) -> list:
        require(len(cameras) in (0, n), field, f"give 0 or {n} cameras, got {len(cameras)}")
        return [c.validate(f"{field}[{i}]") for i, c in enumerate(cameras)]

    def _check_timesteps(self, req: DistillRequest, n: int) -> None:
        s = req.timesteps
        for f in ("t_min", "t_max", "t_min_end", "t_max_end", "training_fraction"):
            v = getattr(s, f)
            require(math.isfinite(v) and 0 <= v <= 1, f"timesteps.{f}", f"must be in [0, 1], got {v}")
        require(s.t_min <= s.t_max, "timesteps.t_min", f"t_min {s.t_min} > t_max {s.t_max}")
        require(s.t_min_end <= s.t_max_end, "timesteps.t_min_end", f"t_min_end {s.t_min_end} > t_max_end {s.t_max_end}")
        require(s.sampling in ("uniform", "linear_decay"), "timesteps.sampling", f"unknown {s.sampling!r}")
        if s.t:
            require(len(s.t) in (1, n), "timesteps.t", f"give 1 or {n} values, got {len(s.t)}")
            require(all(math.isfinite(v) and 0 <= v <= 1 for v in s.t), "timesteps.t", "fractions must be in [0, 1]")

    def _resolution(self, resolution: int, info, field: str) -> int:
        r = resolution or info.native_resolution
        f = info.latent_scale_factor
        require(MIN_SIDE <= r <= MAX_SIDE and r % f == 0, field,
                f"must be a multiple of the latent scale factor {f} in {MIN_SIDE}..{MAX_SIDE}, got {r}")
        return r

    def _guidance(self, scale: float, default: float = 7.5) -> float:
        g = scale or default
        require(math.isfinite(g) and g >= 1, "guidance_scale", f"must be >= 1, got {scale}")
        return g

    def _scheduler(self, name: str, info) -> str:
        name = name or "ddim"
        require(name in info.schedulers, "scheduler", f"unknown scheduler {name!r}; one of {list(info.schedulers)}")
        return name

    def _noise(self, given: np.ndarray | None, shape: tuple, seed: int, field: str) -> torch.Tensor:
        if given is not None:
            require(tuple(given.shape) == tuple(shape), field, f"must have shape {tuple(shape)}, got {tuple(given.shape)}")
            given = given.astype(np.float32)
            require_finite(given, field)
            return torch.from_numpy(given)
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed % (2 ** 63)))

    def _mask(self, mask: np.ndarray, n: int, h: int, w: int) -> np.ndarray:
        require(isinstance(mask, np.ndarray) and mask.shape in ((1, h, w), (n, 1, h, w)), "mask",
                f"must be (1, {h}, {w}) or ({n}, 1, {h}, {w}), got {getattr(mask, 'shape', None)}")
        m = mask.astype(np.float32) / (255.0 if mask.dtype == np.uint8 else 1.0)
        require_finite(m, "mask")
        require(m.min() >= 0 and m.max() <= 1, "mask", "values must be in [0, 1] (UINT8: 0 or 255)")
        return np.broadcast_to(m.reshape(-1, 1, h, w), (n, 1, h, w)).copy()

    def _sample_work(self, mode, name, bb, req, images, num_steps, strength, noise_given):
        info = bb.info
        n = images.shape[0]
        cameras = self._cameras(req.cameras, n, "cameras")
        r = self._resolution(req.resolution, info, "resolution")
        seed = req.seed or secrets.randbits(62)
        latent = (n, info.latent_channels, r // info.latent_scale_factor, r // info.latent_scale_factor)
        noise = self._noise(noise_given, latent, seed, "noise")
        cond = self._conditions(name, bb, req.conditions, n, cameras, r, images.shape[-2:])
        _, convention = self._output_kind(bb, req.conditions)
        images = convert_normal_pictures(images, convention)
        gens = [torch.Generator().manual_seed(seed + i) for i in range(n)] if bb.device.type == "cpu" else None
        work = SampleWork(mode=mode, cond=cond, noise=noise.to(bb.device), guidance_scale=self._guidance(req.guidance_scale),
                          scheduler=self._scheduler(req.scheduler, info), num_steps=num_steps, strength=strength,
                          images=torch.from_numpy(images).to(bb.device), generators=gens)
        return work, seed, convention

    def _output_kind(self, bb: Backbone, c: Conditions) -> tuple[str, str]:
        """What the backbone produces under these conditions (the first non-RGB LoRA's kind, else the
        backbone's) and the normal convention to convert pictures with ("opencv" = none)."""
        specs = {s.name: s for s in bb.info.loras}
        kind, convention = bb.info.output_kind, bb.info.normal_convention
        for lora, _ in c.loras:
            spec = specs.get(lora)
            if spec is not None and spec.output_kind != "rgb":
                kind, convention = spec.output_kind, spec.normal_convention
                break
        return kind, convention if kind == "normal" else "opencv"

    # -- conditions ---------------------------------------------------------------------------------------
    def _encode_text(self, name: str, bb: Backbone, prompts: list[str]) -> torch.Tensor:
        out = []
        with self._text_lock:
            for p in prompts:
                key = (name, p)
                if key not in self._text_memo:
                    self._text_memo[key] = bb.encode_text([p])[0]
                    while len(self._text_memo) > TEXT_MEMO_SIZE:
                        self._text_memo.popitem(last=False)
                self._text_memo.move_to_end(key)
                out.append(self._text_memo[key])
        return torch.stack(out)

    def _conditions(self, name: str, bb: Backbone, c: Conditions, n: int, cameras: list,
                    resolution: int, image_size: tuple[int, int]) -> PreparedConditions:
        """Encode a request's conditions for n images; control pictures are prepared at the working
        resolution, landmark points are drawn at image_size (H, W) of the request's images."""
        info = bb.info
        tenant = current_tenant()
        prompt, negative, expression = c.prompt, c.negative_prompt, c.expression
        if c.text_cache_key:
            scope = (tenant, name, "text")
            if prompt or negative or expression:
                self.cache.put(scope, c.text_cache_key, (prompt, negative, expression))
            else:
                prompt, negative, expression = self.cache.get(scope, c.text_cache_key, "conditions.text_cache_key")
        if expression and not info.expression_adapter:
            raise FailedPrecondition(f"backbone {name!r} has no expression adapter", reason="ADAPTER_UNSUPPORTED")
        if c.view_dependent_prompt:
            require(len(cameras) == n, "cameras", "view_dependent_prompt needs one camera per image")
            prompts = [prompt + view_suffix(cam) for cam in cameras]
        else:
            prompts = [prompt] * n
        text = self._encode_text(name, bb, prompts)
        uncond = self._encode_text(name, bb, [negative or info.default_negative_prompt]).expand(n, *text.shape[1:])

        identity = self._identity(name, bb, c, tenant)
        if identity is not None:
            identity = identity.to(bb.device).expand(n, -1)
        id_scale = c.identity_scale or 1.0
        require(0 <= id_scale <= 2, "conditions.identity_scale", f"must be 0..2, got {c.identity_scale}")

        loras = []
        known = {s.name for s in info.loras}
        for i, (lora, scale) in enumerate(c.loras):
            require(lora in known, f"conditions.loras[{i}].name", f"unknown LoRA {lora!r}; loaded: {sorted(known)}")
            scale = scale or 1.0
            require(-2 <= scale <= 2, f"conditions.loras[{i}].scale", f"must be -2..2, got {scale}")
            loras.append((lora, float(scale)))

        controls = []
        for i, ctrl in enumerate(c.controls):
            controls.append(self._control(name, bb, ctrl, n, resolution, image_size, f"conditions.controls[{i}]"))
        return PreparedConditions(text=text.to(bb.device), uncond=uncond.to(bb.device), identity=identity,
                                  identity_adapter=c.identity_adapter, identity_scale=float(id_scale),
                                  controls=controls, loras=tuple(loras))

    def _identity(self, name: str, bb: Backbone, c: Conditions, tenant: str) -> torch.Tensor | None:
        emb = c.identity_embedding
        scope = (tenant, name, "identity")
        if emb is None:
            if not c.identity_cache_key:
                return None
            return self.cache.get(scope, c.identity_cache_key, "conditions.identity_cache_key")
        info = bb.info
        if not info.identity_embedding_dim:
            raise FailedPrecondition(f"backbone {name!r} has no identity adapter", reason="ADAPTER_UNSUPPORTED")
        if c.identity_adapter and c.identity_adapter not in info.identity_adapters:
            raise InvalidArgument("conditions.identity_adapter",
                                  f"unknown adapter {c.identity_adapter!r}; loaded: {list(info.identity_adapters)}")
        d = info.identity_embedding_dim
        emb = np.asarray(emb, dtype=np.float32)
        require(emb.ndim in (1, 2) and emb.shape[-1] == d, "conditions.identity_embedding",
                f"must be ({d},) or (K, {d}), got {emb.shape}")
        require_finite(emb, "conditions.identity_embedding")
        mean = emb.reshape(-1, d).mean(0)
        norm = float(np.linalg.norm(mean))
        require(norm > 1e-6, "conditions.identity_embedding", "is zero")
        value = torch.from_numpy(mean / norm)[None]
        if c.identity_cache_key:
            self.cache.put(scope, c.identity_cache_key, value)
        return value

    def _control(self, name: str, bb: Backbone, ctrl, n: int, resolution: int, image_size: tuple[int, int],
                 field: str):
        info = bb.info
        if ctrl.kind:
            spec = info.control_for_kind(ctrl.kind)
            if ctrl.kind not in ("landmarks", "canny", "normal", "depth"):
                raise InvalidArgument(f"{field}.kind", f"unknown control kind {ctrl.kind!r}")
            if spec is None:
                raise FailedPrecondition(f"backbone {name!r} has no {ctrl.kind} ControlNet "
                                         f"(loaded: {[c.name for c in info.controls]})", reason="CONTROL_UNSUPPORTED")
        else:
            spec = info.control(ctrl.name)
            if spec is None:
                raise InvalidArgument(f"{field}.name", f"unknown ControlNet {ctrl.name!r}; loaded: "
                                      f"{[c.name for c in info.controls]}")
        scale = ctrl.scale or 1.0
        require(0 <= scale <= 2, f"{field}.scale", f"must be 0..2, got {ctrl.scale}")
        pictures = self._control_pictures(spec, ctrl, n, image_size, field)
        prepared = torch.cat([bb.prepare_control(spec, p, resolution) for p in pictures])
        return spec.name, prepared.expand(n, -1, -1, -1) if len(pictures) == 1 else prepared, float(scale)

    def _control_pictures(self, spec: ControlSpec, ctrl, n: int, image_size: tuple[int, int],
                          field: str) -> list[np.ndarray]:
        if ctrl.landmarks is not None:
            require(spec.kind == "landmarks", f"{field}.landmarks", "points are only for a LANDMARKS control")
            pts = np.asarray(ctrl.landmarks, dtype=np.float32)
            require(pts.ndim in (2, 3) and pts.shape[-2:] == (68, 2), f"{field}.landmarks",
                    f"must be (68, 2) or (N, 68, 2) pixel points, got {pts.shape}")
            require(pts.ndim == 2 or pts.shape[0] == n, f"{field}.landmarks", f"give 1 or {n} point sets")
            require_finite(pts, f"{field}.landmarks")
            h, w = image_size
            return [draw_landmarks(p, h, w) for p in pts.reshape(-1, 68, 2)]
        pic = ctrl.image
        require(pic is not None, f"{field}.image", "a control needs an image (or landmarks)")
        require(pic.ndim in (3, 4), f"{field}.image", f"must be (C, H, W) or (N, C, H, W), got {pic.shape}")
        require(pic.ndim == 3 or pic.shape[0] == n, f"{field}.image", f"give 1 or {n} pictures, got {pic.shape[0]}")
        channels = {"landmarks": (3,), "canny": (1, 3), "normal": (3,), "depth": (1,)}.get(spec.kind, (1, 3))
        require(pic.shape[-3] in channels, f"{field}.image", f"a {spec.kind or spec.name} control takes "
                f"{' or '.join(map(str, channels))} channels, got {pic.shape[-3]}")
        require(MIN_SIDE <= min(pic.shape[-2:]) and max(pic.shape[-2:]) <= MAX_SIDE, f"{field}.image",
                f"H and W must be {MIN_SIDE}..{MAX_SIDE}")
        pic = pic.astype(np.float32) / (255.0 if pic.dtype == np.uint8 else 1.0)
        require_finite(pic, f"{field}.image")
        if spec.kind == "normal":
            require(pic.min() >= -1.001 and pic.max() <= 1.001, f"{field}.image", "normals must be in [-1, 1]")
        elif spec.kind != "depth":
            require(pic.min() >= -1e-3 and pic.max() <= 1.001, f"{field}.image", "values must be in [0, 1]")
        return list(pic.reshape(-1, *pic.shape[-3:]))

    # -- queueing -----------------------------------------------------------------------------------------
    def _submit(self, bb: Backbone, work, run, n: int, queue: QueueOptions):
        require(-10 <= queue.priority <= 10, "queue.priority", f"must be -10..10, got {queue.priority}")
        deadline = None
        if queue.deadline is not None:
            remaining = queue.deadline - time.time()
            if remaining <= 0:
                raise DeadlineExceeded("queue.deadline has already passed", reason="DEADLINE_PASSED")
            deadline = time.monotonic() + remaining
        key = (id(bb), work.group_key())
        future = self.batcher.submit(key, n, work, lambda works: run(bb, works), priority=queue.priority,
                                     deadline=deadline)
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            self.batcher.withdraw(future)
            raise DeadlineExceeded("deadline passed before the guidance result was ready; its work is dropped",
                                   reason="DEADLINE_EXCEEDED") from None
