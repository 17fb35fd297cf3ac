"""The render service's plain data types: what its clients send and receive (numpy arrays, no torch),
shared by the service, its in-process and gRPC clients and the orchestrator."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, Field

if TYPE_CHECKING:
    import torch

class RenderLimits(BaseModel):
    """Limits a render server enforces (Describe reports them)."""

    scene_idle_ttl_s: float = Field(1800, gt=0)
    step_handle_ttl_s: float = Field(60, gt=0)
    max_pending_steps_per_scene: int = Field(8, ge=1)
    max_scenes_per_tenant: int = Field(16, ge=1)
    max_scene_bytes: int = Field(4 << 30, ge=1)
    max_tenant_bytes: int = Field(8 << 30, ge=1)
    max_render_pixels: int = Field(16 << 20, ge=1, description="N x H x W per Render call")
    max_gaussians: int = Field(2_000_000, ge=1)
    max_triangles: int = Field(2_000_000, ge=1)
    max_asset_bytes: int = Field(512 << 20, ge=1)
    asset_ttl_s: float = Field(600, gt=0)


Interpolation = Literal["linear", "exponential", "cosine"]


@dataclass
class LrSchedule:
    """start_value before start_step, end_value after end_step, interpolated in between;
    end_step <= start_step means the constant start_value."""

    start_step: int = 0
    start_value: float = 1e-3
    end_value: float = 1e-3
    end_step: int = 0
    interpolation: Interpolation = "linear"

    def __call__(self, step: int) -> float:
        if self.end_step <= self.start_step or step <= self.start_step:
            return self.start_value
        if step >= self.end_step:
            return self.end_value
        f = (step - self.start_step) / (self.end_step - self.start_step)
        a, b = self.start_value, self.end_value
        if self.interpolation == "exponential" and a > 0 and b > 0:
            return math.exp(math.log(a) * (1 - f) + math.log(b) * f)
        if self.interpolation == "cosine":
            return b + (a - b) * 0.5 * (1 + math.cos(math.pi * f))
        return a + (b - a) * f

    @classmethod
    def constant(cls, value: float) -> "LrSchedule":
        return cls(0, value, value, 0)


@dataclass
class OptimizerSpec:
    kind: Literal["adam", "adan"] = "adam"
    lrs: dict[str, LrSchedule] = field(default_factory=dict)  # groups not listed: the kind's defaults
    frozen: set[str] = field(default_factory=set)
    betas: tuple[float, ...] = ()
    eps: float = 1e-8
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0


@dataclass
class SceneInfo:
    scene_id: str
    kind: str
    backend: str
    param_counts: dict[str, int]
    step: int
    memory_bytes: int
    expires_in_s: float


@dataclass
class RenderResult:
    outputs: dict[str, np.ndarray]
    step_handle: str
    step: int
    handle_expires_in_s: float = 0.0


@dataclass
class GradientTerm:
    step_handle: str
    output: str
    grad: "np.ndarray | torch.Tensor"   # a tensor only in process
    weight: float = 1.0
    name: str = ""


@dataclass
class RegularizerTerm:
    name: str
    weight: float
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class StepResult:
    step: int
    skipped: bool
    learning_rates: dict[str, float]
    grad_norms: dict[str, float]
    term_grad_norms: dict[str, float]
    regularizer_values: dict[str, float]
    num_gaussians: int = 0
    densified: int = 0   # Gaussians added / removed by the automatic strategy in this call
    pruned: int = 0


@dataclass
class GradientCosineResult:
    """RenderService.gradient_cosine: cosines[k] between candidate k's parameter gradient and the
    reference's (flattened over the trainable parameters), their L2 norms, the scene's step."""
    cosines: list[float]
    reference_norm: float
    candidate_norms: list[float]
    step: int


@dataclass
class DensifyResult:
    """Gaussians after a densification pass, how many were added (clones + net splits) and removed."""

    num_gaussians: int
    densified: int
    pruned: int


@dataclass
class BackProjection:
    texture: np.ndarray       # (3, T, T) float32 in [0, 1]
    visibility: np.ndarray    # (1, T, T) float32 in [0, 1]
    texels_written: int


@dataclass
class KindDescription:
    kind: str
    backends: list[str]
    default_lrs: dict[str, float]
    outputs: list[str]
    regularizers: list[str]
    export_formats: list[str]
    options: dict[str, str]


@dataclass
class RenderDescription:
    kinds: list[KindDescription]
    dmtet_resolutions: list[int]
    device: str
    limits: RenderLimits
    max_message_bytes: int


MAX_ENV_HEIGHT = 1024   # EnvironmentMap limits (render.proto): 2 x 4 .. 1024 x 2048
SHADINGS = ("unlit", "diffuse", "pbr", "pbr_diffuse")
ENVIRONMENT_SHADINGS = ("pbr", "pbr_diffuse")   # the shadings lit by an EnvironmentMap


@dataclass
class EnvironmentMap:
    """An equirectangular environment map for shading "pbr" (render.proto EnvironmentMap):
    radiance float32 (3, H, W), LINEAR radiance >= 0, +Y up, centre column +Z; rotation_y_deg rotates it
    about world +Y (+Z towards +X)."""

    radiance: np.ndarray
    rotation_y_deg: float = 0.0

    @classmethod
    def checked(cls, radiance, rotation_y_deg: float = 0.0, field: str = "environment") -> "EnvironmentMap":
        """Validated copy; InvalidArgument naming `field`.values / .height / .rotation_y_deg."""
        from services.common.errors import require

        a = np.asarray(radiance, dtype=np.float32)
        require(a.ndim == 3 and a.shape[0] == 3, f"{field}.values", f"expected (3, H, W), got {list(a.shape)}")
        h, w = a.shape[1:]
        require(2 <= h <= MAX_ENV_HEIGHT and 4 <= w <= 2 * MAX_ENV_HEIGHT, f"{field}.height",
                f"the map must be 2 x 4 .. {MAX_ENV_HEIGHT} x {2 * MAX_ENV_HEIGHT} pixels, got {h} x {w}")
        require(bool(np.isfinite(a).all()), f"{field}.values", "contains NaN or infinite values")
        require(float(a.min()) >= 0, f"{field}.values", "radiance must be >= 0")
        require(math.isfinite(rotation_y_deg), f"{field}.rotation_y_deg", "must be finite")
        return cls(np.ascontiguousarray(a), float(rotation_y_deg))
