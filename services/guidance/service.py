"""The guidance service: validates requests, encodes their conditions (cached per subject), and hands the
GPU work to one dynamic batcher that serves every caller with one copy of each model.

Every method takes and returns the plain types of services.guidance.types and raises HeadForgeError
subclasses (mapped to gRPC statuses by the servicer); guidance.proto documents fields and errors.
InProcessGuidanceClient, at the end, is the GuidanceClient (services.guidance.client) of a service in this
process.
"""

from __future__ import annotations

import math
import secrets
import time
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import numpy as np
import torch

from services.common.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, require
from services.common.images import array_to_rgb8, decode_image, encode_png
from services.guidance import validate
from services.guidance.backbones.base import (Backbone, convert_normal_gradients, convert_normal_pictures,
                                             depth_pictures, output_kind)
from services.guidance.backbones.registry import load_backbone
from services.guidance.batching import DynamicBatcher
from services.guidance.cache import ConditionsCache
from services.guidance.captioners import load_captioners
from services.guidance.config import GuidanceConfig
from services.guidance.distill import DistillWork, run_distill
from services.guidance.prepare import ConditionsEncoder
from services.guidance.sampling import SampleWork, run_sampling
from services.guidance.schedule import WEIGHTINGS, choose_steps
from services.guidance.types import (DEFAULT_CAPTION_TOKENS, MAX_CAPTION_TOKENS, CaptionRequest, CaptionResult,
                                     Conditions, DenoiseRequest, DenoiseResult, DistillRequest, DistillResult,
                                     GenerateRequest, GenerateResult, GuidanceDescription, ImageDiagnostics,
                                     InpaintRequest, InpaintResult, QueueOptions)


def resolve_device(name: str | None) -> torch.device:
    """The torch device for the config's `device` (None or "" = cuda when available, else cpu).
    InvalidArgument for a name torch does not know; FailedPrecondition (reason DEVICE_UNAVAILABLE) for one
    this machine or this torch build cannot use, e.g. "cuda" with a CPU-only torch."""
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise InvalidArgument("device", f"{name!r} is not a torch device ({e})") from None
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            why = f"this torch build ({torch.__version__}) has no CUDA support; use device cpu, or a CUDA build of torch"
        elif not torch.cuda.is_available():
            why = f"no CUDA GPU is visible to this process (torch {torch.__version__}, CUDA {torch.version.cuda})"
        elif device.index is not None and device.index >= torch.cuda.device_count():
            why = f"only {torch.cuda.device_count()} CUDA device(s) are visible"
        else:
            why = ""
        if why:
            raise FailedPrecondition(f"guidance device {name!r}: {why}", reason="DEVICE_UNAVAILABLE")
    elif device.type != "cpu":
        try:
            torch.empty(0, device=device)
        except (RuntimeError, AssertionError) as e:
            raise FailedPrecondition(f"guidance device {name!r} is not usable here: {e}",
                                     reason="DEVICE_UNAVAILABLE") from None
    return device


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W, 3) uint8 (one channel repeated)."""
    hwc = np.moveaxis(np.clip(image, 0, 1) * 255 + 0.5, 0, -1).astype(np.uint8)
    return np.repeat(hwc, 3, axis=-1) if hwc.shape[-1] == 1 else hwc



def image_seed(seed: int, i: int) -> int:
    """The seed of image i of a request: seed + i, wrapped into the uint64 range a request's seed has
    (torch generators refuse 2**64)."""
    return (seed + i) % (1 << 64)

class GuidanceService:
    def __init__(self, config: GuidanceConfig | None = None, backbones: dict[str, Backbone] | None = None):
        """Loads every backbone of `config` (GuidanceConfig() = the analytic prior) unless `backbones` are given
        ready-made ({name: backbone}); FailedPrecondition (ModelFilesError) when a model cannot be loaded or
        the device is not there, before anything is loaded."""
        self.config = config or GuidanceConfig()
        self.device = resolve_device(self.config.device)
        if backbones is None:
            backbones = {}
            for entry in self.config.backbones:
                backbones[entry["name"]] = load_backbone(entry, Path(self.config.base_dir), self.device)
        self.backbones = backbones
        self.captioners = load_captioners(self.config.captioners, Path(self.config.base_dir), self.device)
        defaults = [e["name"] for e in self.config.backbones if e.get("default")]
        self.default_backbone = defaults[0] if defaults else next(iter(self.backbones))
        b = self.config.batching
        self.batcher = DynamicBatcher(max_batch_images=b.max_batch_images, max_queue_delay_ms=b.max_queue_delay_ms,
                                      max_queue_depth=b.max_queue_depth)
        self.cache = ConditionsCache(self.config.cache_max_entries, self.config.cache_ttl_s)
        self.conditions = ConditionsEncoder(self.cache)

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
            cache_ttl_s=int(self.config.cache_ttl_s), device=self._device_name(),
            captioners=[c.info for c in self.captioners.values()])

    def caption(self, req: CaptionRequest) -> CaptionResult:
        """The captioner's caption of req.image (services.guidance.captioners). InvalidArgument for a missing,
        undecodable or oversized image, max_new_tokens outside 0..MAX_CAPTION_TOKENS or an unknown captioner
        (UNKNOWN_CAPTIONER); FailedPrecondition NO_CAPTIONER when none is configured."""
        if not self.captioners:
            raise FailedPrecondition("no captioner is configured in the guidance service's model repository: add a "
                                     "`captioners:` entry (README: guidance service)", reason="NO_CAPTIONER")
        name = req.captioner or next(n for n, c in self.captioners.items() if c.is_default)
        if name not in self.captioners:
            raise InvalidArgument("captioner", f"unknown captioner {name!r}; configured: {sorted(self.captioners)}",
                                  reason="UNKNOWN_CAPTIONER")
        tokens = req.max_new_tokens or DEFAULT_CAPTION_TOKENS
        require(isinstance(req.max_new_tokens, int) and 1 <= tokens <= MAX_CAPTION_TOKENS, "max_new_tokens",
                f"must be 1..{MAX_CAPTION_TOKENS} (0 = {DEFAULT_CAPTION_TOKENS}), got {req.max_new_tokens}")
        prompt = validate.text(req.prompt, "prompt")
        image = req.image
        if isinstance(image, (bytes, bytearray, memoryview)):
            image = decode_image(bytes(image), max_pixels=self.config.max_image_pixels, field="image")
        elif image is None or np.asarray(image).size == 0:
            raise InvalidArgument("image", "no image given", reason="IMAGE_EMPTY")
        else:
            image = array_to_rgb8(image, max_pixels=self.config.max_image_pixels, field="image")
        captioner = self.captioners[name]
        text = captioner.caption(image, prompt, tokens)
        return CaptionResult(caption=text, captioner=name, model=captioner.record)

    def distill(self, req: DistillRequest) -> DistillResult:
        name, bb = self._backbone(req.conditions.backbone)
        info = bb.info
        images = self._images(req.images)
        n = images.shape[0]
        cameras = validate.cameras(req.cameras, n, "cameras")
        variant = req.variant or "sds"
        if variant not in info.variants:
            raise FailedPrecondition(f"backbone {name!r} does not support the {variant!r} variant "
                                     f"(it supports {list(info.variants)})", reason="VARIANT_UNSUPPORTED")
        if variant == "isd" and req.conditions.identity_embedding is None and not req.conditions.identity_cache_key:
            raise InvalidArgument("conditions.identity_embedding", "ISD needs an identity embedding")
        if variant == "image_conditioned" and req.reference is None:
            raise InvalidArgument("reference", "the image_conditioned variant needs the reference view")
        if req.reference is not None:
            validate.cameras([req.reference.camera], 1, "reference.camera")
        guidance = req.guidance_scale or 100.0
        require(guidance >= 1 and math.isfinite(guidance), "guidance_scale", f"must be >= 1, got {guidance}")
        require(req.weighting in WEIGHTINGS, "weighting", f"unknown weighting {req.weighting!r}; one of {WEIGHTINGS}")
        require(math.isfinite(req.grad_clip) and req.grad_clip >= 0, "grad_clip", "must be >= 0")
        require(req.grad_dtype in ("float32", "float16"), "grad_dtype", "FLOAT32 or FLOAT16")
        validate.timesteps(req.timesteps, n)
        r = validate.resolution(req.resolution, info, "resolution")
        latent_shape = (n, info.latent_channels, r // info.latent_scale_factor, r // info.latent_scale_factor)
        seed = req.seed or secrets.randbits(63)
        steps = choose_steps(req.timesteps, n, np.random.default_rng(seed), info.num_train_timesteps)
        noise = validate.noise(req.noise, latent_shape, seed, "noise")
        background = validate.background(req.background, n, "background")
        cond = self.conditions.encode(name, bb, req.conditions, n, cameras, r, images.shape[-2:], background)
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
        images = self._images(req.images)
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
        images = self._images(req.images)
        n, _, h, w = images.shape
        mask = validate.mask(req.mask, n, h, w)
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
            require(validate.MIN_SIDE <= v <= validate.MAX_SIDE and v % f == 0, field,
                    f"must be a multiple of {f} in {validate.MIN_SIDE}..{validate.MAX_SIDE}, got {v}")
        require(width * height <= self.config.max_image_pixels, "width",
                f"{width}x{height} is above max_image_pixels {self.config.max_image_pixels}")
        num_steps = req.num_steps or 30
        require(1 <= num_steps <= 1000, "num_steps", f"must be 1..1000, got {req.num_steps}")
        guidance = validate.guidance_scale(req.guidance_scale)
        scheduler = validate.scheduler(req.scheduler, info)
        seed = req.seed or secrets.randbits(62)
        noise = torch.cat([validate.noise(None, (1, info.latent_channels, height // f, width // f), image_seed(seed, i), "")
                           for i in range(n)])
        require(not req.conditions.controls or width == height, "conditions.controls",
                "controls need a square image (width == height)")
        cameras = validate.cameras(req.cameras, n, "cameras")
        cond = self.conditions.encode(name, bb, req.conditions, n, cameras, width, (height, width))
        gens = [torch.Generator().manual_seed(image_seed(seed, i)) for i in range(n)] if bb.device.type == "cpu" else None
        work = SampleWork(mode="generate", cond=cond, noise=noise.to(bb.device), guidance_scale=guidance,
                          scheduler=scheduler, num_steps=num_steps, generators=gens)
        out = self._submit(bb, work, run_sampling, n, req.queue)
        kind, convention = self._output_kind(bb, req.conditions)
        images = convert_normal_pictures(out.images.cpu().numpy().astype(np.float32), convention)
        depth_convention = ""
        if kind == "depth":
            depth_convention = info.depth_convention
            images = depth_pictures(images, depth_convention)
        png = [encode_png(_to_uint8(im)) for im in images] if req.encode_png else []
        return GenerateResult(images=images, output_kind=kind, seed=seed, png=png, depth_convention=depth_convention)

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

    def _images(self, images: np.ndarray) -> np.ndarray:
        return validate.images(images, "images", max_images=self.config.batching.max_batch_images,
                               max_pixels=self.config.max_image_pixels)

    def _sample_work(self, mode, name, bb, req, images, num_steps, strength, noise_given):
        info = bb.info
        n = images.shape[0]
        cameras = validate.cameras(req.cameras, n, "cameras")
        r = validate.resolution(req.resolution, info, "resolution")
        seed = req.seed or secrets.randbits(62)
        latent = (n, info.latent_channels, r // info.latent_scale_factor, r // info.latent_scale_factor)
        noise = validate.noise(noise_given, latent, seed, "noise")
        background = validate.background(req.background, n, "background")
        cond = self.conditions.encode(name, bb, req.conditions, n, cameras, r, images.shape[-2:], background)
        _, convention = self._output_kind(bb, req.conditions)
        images = convert_normal_pictures(images, convention)
        gens = [torch.Generator().manual_seed(image_seed(seed, i)) for i in range(n)] if bb.device.type == "cpu" else None
        work = SampleWork(mode=mode, cond=cond, noise=noise.to(bb.device),
                          guidance_scale=validate.guidance_scale(req.guidance_scale),
                          scheduler=validate.scheduler(req.scheduler, info), num_steps=num_steps, strength=strength,
                          images=torch.from_numpy(images).to(bb.device), generators=gens)
        return work, seed, convention

    def _output_kind(self, bb: Backbone, c: Conditions) -> tuple[str, str]:
        """(kind, normal convention) of the backbone under these conditions (backbones.base.output_kind)."""
        return output_kind(bb.info, [lora for lora, _ in c.loras])

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


class InProcessGuidanceClient:
    """services.guidance.client.GuidanceClient as plain calls on a GuidanceService in this process (no
    serialisation); services.guidance.client.connect(INPROCESS, ...) builds one."""

    def __init__(self, service: GuidanceService | None = None):
        self.service = service or GuidanceService()

    def distill(self, req: DistillRequest) -> DistillResult:
        return self.service.distill(req)

    def denoise(self, req: DenoiseRequest) -> DenoiseResult:
        return self.service.denoise(req)

    def inpaint(self, req: InpaintRequest) -> InpaintResult:
        return self.service.inpaint(req)

    def generate(self, req: GenerateRequest) -> GenerateResult:
        return self.service.generate(req)

    def describe(self) -> GuidanceDescription:
        return self.service.describe()

    def caption(self, req: CaptionRequest) -> CaptionResult:
        return self.service.caption(req)

    def close(self) -> None:
        pass
