"""The oracle prior: a TEST prior whose "data distribution" at each camera is the known ground truth.

For every image of a request, the exemplar is the procedural head (services/core/procedural_head.py, with
its +X-only marking by default) rendered at that image's camera, at the request image's size, then resized
to the working resolution exactly as the service resizes the image. The denoiser is the analytic prior's
closed form (analytic.mixture_noise) for one Gaussian of std `sigma` around that exemplar, so Distill pulls
each view towards the ground truth seen from its camera, Denoise / Inpaint return it, and a recipe that
starts from one frontal render can be checked on the views it never saw. It proves that a recipe's cameras
(a mirrored or flipped convention shows on the marking), signs and schedules are right without weights;
its output is never a result.

What it renders: rgb (and albedo: the head is unlit) over the request's background (DistillRequest.background
and the same field of Denoise / Inpaint; the config's `background`, white, when a request has none), or,
when the backbone's or an active LoRA's output kind is "normal",
the normal picture of guidance.proto, (n + 1) / 2 of the render service's "normal_camera" (0.5 grey off the
head), in the LoRA's normal convention, or, for output kind "depth", the head's normalised inverse depth
(d_near / d, 0 off the head: Generate's depth maps with depth_convention "inverse_depth") in all three
channels. The "VAE" is the identity (latent = 2 * image - 1, f = 1).

Requests need one camera per image (InvalidArgument naming `cameras` otherwise), Generate included
(GenerateRequest.cameras): it samples from the Gaussian around each camera's exemplar, so an oracle with
output_kind normal / depth stands in for a text-to-normal / text-to-depth model. Everything else a recipe sends is ACCEPTED AND IGNORED so every term runs on a CPU: the prompt,
every variant (ISD, image-conditioned and its reference view, video), identity embeddings / adapters /
scales, controls and LoRA scales (a LoRA only selects the output kind). Classifier-free guidance is a
no-op (the conditional and unconditional rows see the same exemplar). Expressions are ignored too, unless the
config maps expression texts to the head's known expression variants (`expressions`, procedural_head.EXPRESSIONS):
then a request's conditions.expression selects which variant its exemplars show (an unmapped text is
InvalidArgument), so a recipe with per-expression shape codes can be checked against E known shapes.

With `exemplar_field` (a field NPZ, render.proto's layout: e.g. a 3D-GAN sample written by the inversion
service's ExportField) the known head is that field instead, rendered by services/core/field_render.py as the
render service would (rgb over the background; normals from its density), so a GAN-initialised recipe can be
checked against a second GAN sample. Renders are cached per (camera, image size, working resolution, kind) in
a small LRU.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from services.common.errors import InvalidArgument
from services.core.camera_batch import CameraBatch
from services.core.cameras import PinholeCamera
from services.core.models import ModelRecord
from services.core.procedural_head import EXPRESSIONS, head_normals, render_head
from services.guidance.backbones.analytic import SCHEDULER_CONFIG, mixture_noise
from services.guidance.backbones.base import (BatchConditions, ModelFilesError, check_normal_convention,
                                             convert_normal_pictures, output_kind)
from services.guidance.backbones.control_pictures import depth_to_inverse
from services.guidance.distill import resize
from services.guidance.schedule import alphas_cumprod
from services.guidance.types import CONTROL_KINDS, VARIANTS, BackboneInfo, ControlSpec, LoraSpec

RENDERED_KINDS = ("rgb", "albedo", "normal", "depth")
NEEDS_CAMERAS = ("the oracle prior (a test prior) renders its exemplar at each image's camera: give one camera "
                 "per image")


class OracleLoraConfig(BaseModel):
    """A LoRA name the oracle accepts; it only selects what the exemplar is (output_kind)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    output_kind: str = "rgb"
    normal_convention: str = "opencv"


class OracleBackboneConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "oracle"
    backend: str = "oracle"
    default: bool = False
    sigma: float = Field(0.05, gt=0)         # std of the Gaussian around each exemplar, in latent units [-1, 1]
    native_resolution: int = Field(64, ge=16, le=2048)
    output_kind: str = "rgb"                 # rgb | albedo | normal | depth
    normal_convention: str = "opencv"
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)   # rgb exemplars' background, sRGB in [0, 1]
    markings: bool = True                    # the procedural head's +X-only marking
    exemplar_field: str = ""                 # a field NPZ (relative to the config's folder) instead of the head
    supersample: int = Field(2, ge=1, le=4)  # rays per pixel side when rendering an exemplar
    cache_size: int = Field(64, ge=1)        # exemplars kept (LRU)
    # expression text (conditions.expression) -> procedural_head.EXPRESSIONS variant; {} = expressions ignored
    expressions: dict[str, str] = Field(default_factory=dict)
    # accepted (and ignored) so that recipes' identity, control and LoRA terms run
    identity_adapters: list[str] = Field(default_factory=lambda: ["faceid"])
    identity_embedding_dim: int = 512
    controls: list[str] = Field(default_factory=lambda: list(CONTROL_KINDS))   # one per kind, named by kind
    loras: list[OracleLoraConfig] = Field(default_factory=lambda: [
        OracleLoraConfig(name="normal", output_kind="normal"), OracleLoraConfig(name="albedo", output_kind="albedo")])


def _check_kind(kind: str, where: str) -> None:
    if kind not in RENDERED_KINDS:
        raise ModelFilesError(f"{where}: output_kind {kind!r}; the oracle prior renders {list(RENDERED_KINDS)}")


class OracleBackbone:
    """Implements services.guidance.backbones.base.Backbone, plus encode_cameras (module docstring)."""

    def __init__(self, config: OracleBackboneConfig, device="cpu", base_dir: Path | None = None):
        where = f"oracle backbone {config.name!r}"
        _check_kind(config.output_kind, where)
        check_normal_convention(config.normal_convention, where)
        for lora in config.loras:
            _check_kind(lora.output_kind, f"{where}: LoRA {lora.name!r}")
            check_normal_convention(lora.normal_convention, f"{where}: LoRA {lora.name!r}")
        bad = {text: v for text, v in config.expressions.items() if v not in EXPRESSIONS}
        if bad:
            raise ModelFilesError(f"{where}: expressions {bad}: the head's variants are {sorted(EXPRESSIONS)}")
        if config.expressions and config.exemplar_field:
            raise ModelFilesError(f"{where}: expressions need the procedural head (no exemplar_field)")
        unknown = [k for k in config.controls if k not in CONTROL_KINDS]
        if unknown:
            raise ModelFilesError(f"{where}: controls {unknown}; expected kinds from {list(CONTROL_KINDS)}")
        self.config = config
        self.device = torch.device(device)
        self.sigma = float(config.sigma)
        self._alphas = alphas_cumprod(SCHEDULER_CONFIG)
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self._field, exemplar = None, "oracle-procedural-head"
        if config.exemplar_field:
            self._field, exemplar = _load_field(config.exemplar_field, base_dir, where)
        self.info = BackboneInfo(
            name=config.name, backend="oracle", family="test_prior", output_kind=config.output_kind,
            normal_convention=config.normal_convention, native_resolution=config.native_resolution,
            latent_scale_factor=1, latent_channels=3, num_train_timesteps=int(SCHEDULER_CONFIG["num_train_timesteps"]),
            variants=VARIANTS, denoise=True, inpaint=True, generate=True,
            controls=tuple(ControlSpec(k, k) for k in config.controls),
            identity_adapters=tuple(config.identity_adapters), identity_embedding_dim=config.identity_embedding_dim,
            expression_adapter=True,
            loras=tuple(LoraSpec(x.name, x.output_kind, x.normal_convention) for x in config.loras),
            schedulers=("ddim", "ddpm", "euler"),
            models=(ModelRecord("test_prior", "oracle", exemplar, provenance="test_prior"),))

    def alphas_cumprod(self) -> torch.Tensor:
        return self._alphas

    def scheduler_config(self) -> dict:
        return dict(SCHEDULER_CONFIG)

    def encode_text(self, prompts: list[str]) -> torch.Tensor:
        """(B, 1, 1) zeros: the oracle ignores text."""
        return torch.zeros((len(prompts), 1, 1), device=self.device)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2 - 1

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents + 1) / 2).clamp(0, 1)

    def encode_cameras(self, cameras: list[PinholeCamera], image_size: tuple[int, int], resolution: int,
                       loras: list[str], background: np.ndarray | None = None, expression: str = "") -> torch.Tensor:
        """The exemplars (n, 3, R, R) in latent units [-1, 1]: the head rendered at each camera (its
        intrinsics scaled to the image size (H, W)) over background (n, 3) in [0, 1] (None: the config's),
        resized to R x R, as the output kind of `loras` says, in the variant the config maps `expression`
        to (module docstring). InvalidArgument naming `cameras` when there are none."""
        if not cameras:
            raise InvalidArgument("cameras", NEEDS_CAMERAS)
        variant = self._variant(expression)
        kind, convention = output_kind(self.info, loras)
        h, w = int(image_size[0]), int(image_size[1])
        if background is None:
            background = np.broadcast_to(np.asarray(self.config.background, np.float32), (len(cameras), 3))
        background = np.asarray(background, np.float32)
        keys = [(np.asarray(c.K, np.float64).tobytes(), np.asarray(c.world_to_camera, np.float64).tobytes(),
                 c.width, c.height, h, w, resolution, kind, convention, variant,
                 b.tobytes() if kind != "normal" else b"") for c, b in zip(cameras, background)]
        with self._lock:
            found = {k: self._cache[k] for k in keys if k in self._cache}
            for k in found:
                self._cache.move_to_end(k)
        missing = list(dict.fromkeys(k for k in keys if k not in found))
        if missing:
            index = {k: i for i, k in enumerate(keys)}
            rendered = self._render([cameras[index[k]] for k in missing], background[[index[k] for k in missing]],
                                    h, w, resolution, kind, convention, variant)
            found.update(zip(missing, rendered))
            with self._lock:
                self._cache.update(zip(missing, rendered))
                while len(self._cache) > self.config.cache_size:
                    self._cache.popitem(last=False)
        return torch.stack([found[k] for k in keys])

    def _variant(self, expression: str) -> str:
        """The head variant a request's expression text selects ("neutral" when the config maps none)."""
        if not self.config.expressions:
            return "neutral"
        if expression not in self.config.expressions:
            raise InvalidArgument("conditions.expression", f"the oracle prior maps expressions "
                                  f"{sorted(self.config.expressions)}; got {expression!r}")
        return self.config.expressions[expression]

    def _render(self, cameras: list[PinholeCamera], background: np.ndarray, h: int, w: int, resolution: int,
                kind: str, convention: str, variant: str = "neutral") -> torch.Tensor:
        """(m, 3, R, R) exemplars in [-1, 1] on the device for m cameras over background (m, 3)."""
        scaled = []
        for c in cameras:
            K = np.asarray(c.K, np.float64).copy()
            K[0] *= w / c.width
            K[1] *= h / c.height
            scaled.append(PinholeCamera(K, np.asarray(c.world_to_camera, np.float64), w, h))
        batch = CameraBatch.from_pinholes(scaled, field="cameras")
        s = self.config.supersample
        if self._field is not None:
            pictures = self._render_field(batch, background, kind, convention, s)
        elif kind == "normal":
            pictures = (head_normals(batch, "camera", supersample=s, expression=variant) + 1) / 2
            pictures = torch.from_numpy(convert_normal_pictures(pictures.numpy(), convention))
        elif kind == "depth":
            pictures = _inverse_depth_pictures(render_head(batch, supersample=s, expression=variant)["depth"])
        else:
            pictures = render_head(batch, torch.from_numpy(np.ascontiguousarray(background)), supersample=s,
                                   markings=self.config.markings, expression=variant)["rgb"]
        return resize(pictures.float(), (resolution, resolution)).to(self.device) * 2 - 1

    def _render_field(self, batch: CameraBatch, background: np.ndarray, kind: str, convention: str, s: int):
        """(m, 3, h, w) pictures in [0, 1] of the exemplar field, rendered at s x s rays per pixel."""
        fine = CameraBatch(batch.K.clone(), batch.world_to_camera, batch.width * s, batch.height * s)
        fine.K[:, :2] *= s
        if kind == "normal":
            out = self._field.render(fine, ["normal_camera"])["normal_camera"]
            pictures = torch.from_numpy(convert_normal_pictures(((out + 1) / 2).numpy(), convention))
        elif kind == "depth":
            out = self._field.render(fine, ["depth", "alpha"])
            pictures = _inverse_depth_pictures(out["depth"] * (out["alpha"] > 0.5))
        else:
            pictures = self._field.render(fine, ["rgb"], torch.from_numpy(np.ascontiguousarray(background)))["rgb"]
        return torch.nn.functional.avg_pool2d(pictures.float(), s) if s > 1 else pictures

    def predict_noise(self, latents_t: torch.Tensor, timesteps: torch.Tensor, cond: BatchConditions) -> torch.Tensor:
        """The exact eps for one Gaussian around each row's exemplar (cond.cameras, from encode_cameras)."""
        if cond.cameras is None:
            raise InvalidArgument("cameras", NEEDS_CAMERAS)
        mu = resize(cond.cameras.to(latents_t), tuple(latents_t.shape[-2:]))                # (B, 3, h, w)
        a = self._alphas[timesteps.cpu()].to(latents_t)
        return mixture_noise(latents_t, a, mu[:, None], self.sigma)

    def prepare_control(self, spec: ControlSpec, picture: np.ndarray, resolution: int) -> torch.Tensor:
        """(1, 1, R, R) zeros: controls are accepted and ignored."""
        return torch.zeros((1, 1, resolution, resolution), device=self.device)


def _inverse_depth_pictures(depth: torch.Tensor) -> torch.Tensor:
    """World depth (m, 1, h, w), 0 = background -> (m, 3, h, w) normalised inverse depth (control_pictures)."""
    inv = np.stack([depth_to_inverse(d) for d in depth.numpy()])
    return torch.from_numpy(inv).repeat(1, 3, 1, 1)


def _load_field(path: str, base_dir: Path | None, where: str):
    """(FieldRenderer, file name) of an exemplar field; ModelFilesError naming the file when it is missing
    or malformed."""
    from services.common.errors import HeadForgeError
    from services.core.field_render import FieldRenderer

    file = Path(path) if Path(path).is_absolute() or base_dir is None else Path(base_dir) / path
    if not file.is_file():
        raise ModelFilesError(f"{where}: exemplar_field {str(file)!r} does not exist")
    try:
        return FieldRenderer.from_npz(file.read_bytes()), f"oracle-field-{file.name}"
    except HeadForgeError as e:
        raise ModelFilesError(f"{where}: exemplar_field {str(file)!r} is not a field file: {e.message}") from None


def load_oracle_backbone(config: OracleBackboneConfig | dict, base_dir: Path, device="cpu") -> OracleBackbone:
    """One `backend: oracle` entry of guidance.yaml (pydantic ValidationError on a bad field); base_dir: the
    folder a relative exemplar_field is read from."""
    cfg = config if isinstance(config, OracleBackboneConfig) else OracleBackboneConfig.model_validate(config)
    return OracleBackbone(cfg, device, base_dir)
