"""What an inversion client sends and receives: plain dataclasses with numpy arrays, and the pydantic
config and limits of a service (numpy only; importing this loads no torch).

Cameras are GanCamera (one of the API's three forms) or a world-unit PinholeCamera; sources are a
session id (str) or a Latent.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import grpc
import numpy as np
from pydantic import BaseModel, Field

from services.common.errors import HeadForgeError, InvalidArgument
from services.core.cameras import PinholeCamera

if TYPE_CHECKING:
    from services.inversion.generators.config import GeneratorConfig


class Cancelled(HeadForgeError):
    """The caller stopped an inversion (no session is created)."""

    code = grpc.StatusCode.CANCELLED


# config and limits ---------------------------------------------------------------------------------

class InversionLimits(BaseModel):
    """Limits an inversion server enforces (Describe reports them)."""

    session_idle_ttl_s: float = Field(1800, gt=0)
    max_sessions_per_tenant: int = Field(8, ge=1)
    max_session_bytes: int = Field(2 << 30, ge=1)
    max_tenant_bytes: int = Field(4 << 30, ge=1)
    max_total_bytes: int = Field(16 << 30, ge=1, description="all tenants together")
    max_concurrent_inversions: int = Field(2, ge=1, description="Invert calls running at once; more: RESOURCE_EXHAUSTED")
    max_render_pixels: int = Field(16 << 20, ge=1, description="N x S x S per Render call")
    max_mesh_resolution: int = Field(512, ge=32, le=1024, description="ExtractMesh grid side the server allows")


class InversionConfig(BaseModel):
    """How an inversion service is set up (`headforge serve inversion` flags of the same names)."""

    generators: dict[str, str] = Field(default_factory=dict, description="name -> generator directory")
    default_generator: str = Field("", description="empty = the first configured")
    trust_pickles: bool = Field(False, description="allow official .pkl weights (they run code when loaded)")
    device: str | None = Field(None, description="torch device; default cuda when available")
    lpips_vgg: str | None = Field(None, description="VGG16 backbone weights (torchvision state dict)")
    lpips_lin: str | None = Field(None, description="LPIPS lin weights (the lpips package's v0.1/vgg.pth)")
    limits: InversionLimits = Field(default_factory=InversionLimits)
    max_message_bytes: int = 64 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    w_stats_samples: int = Field(2000, ge=16, description="z samples for w_avg / w_std")

    @classmethod
    def from_models_dir(cls, models_dir: str | Path, **kw) -> "InversionConfig":
        """Every generator directory under MODELS/inversion/<name>."""
        root = Path(models_dir) / "inversion"
        gens = {p.name: str(p) for p in sorted(root.iterdir()) if p.is_dir()} if root.is_dir() else {}
        return cls(generators=gens, **kw)


# cameras and sources -------------------------------------------------------------------------------

@dataclass
class GanCamera:
    """A camera in one of the API's forms: kind "world" (PinholeCamera, world units), "generator"
    (PinholeCamera in generator units, e.g. Face.crop_camera) or "eg3d" (25-float label)."""

    kind: str
    camera: PinholeCamera | None = None
    label: np.ndarray | None = None

    @classmethod
    def world(cls, camera: PinholeCamera) -> "GanCamera":
        return cls("world", camera=camera)

    @classmethod
    def generator(cls, camera: PinholeCamera) -> "GanCamera":
        return cls("generator", camera=camera)

    @classmethod
    def eg3d(cls, label) -> "GanCamera":
        return cls("eg3d", label=np.asarray(label, np.float32))


def as_gan_camera(c: GanCamera | PinholeCamera) -> GanCamera:
    """A GanCamera as is; a plain PinholeCamera as a world-unit one."""
    return c if isinstance(c, GanCamera) else GanCamera.world(c)


@dataclass
class Latent:
    """A latent source for an untuned generator: w (num_ws, w_dim) or (w_dim,), or (w None) the sample
    mapping(z) with z ~ N(0, I) from z_seed (> 0), truncated towards w_avg by truncation_psi in [0, 1]."""

    w: np.ndarray | None
    generator: str = ""
    conditioning_camera: GanCamera | None = None
    z_seed: int = 0
    truncation_psi: float = 1.0

    @classmethod
    def sample(cls, z_seed: int, generator: str = "", truncation_psi: float = 1.0) -> "Latent":
        return cls(None, generator, z_seed=z_seed, truncation_psi=truncation_psi)


# invert --------------------------------------------------------------------------------------------

@dataclass
class InvertSettings:
    """InvertOptions with the proto's defaults applied (see inversion.proto)."""

    latent_space: str = "w_plus"
    steps: int = 500
    lr: float = 0.01
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    w_noise: float = 0.05
    w_noise_ramp: float = 0.75
    noise_regularization: float = 1e5
    l2_weight: float = 1.0
    lpips_weight: float = 1.0
    lpips_resolution: int = 256
    init_latent: np.ndarray | None = None
    pti: bool = False
    pti_steps: int = 350
    pti_lr: float = 3e-4
    pti_l2_weight: float = 1.0
    pti_lpips_weight: float = 1.0
    # joint camera optimisation (Portrait3D's projector optimises the head pose jointly with w): yaw,
    # pitch, roll offsets about the generator's camera target, Adam at camera_lr * the lr ramp (radians)
    optimize_camera: bool = False
    camera_lr: float = 0.01
    seed: int = 0
    progress_every: int = 10
    preview_size: int = 0

    def validate(self, num_ws: int, w_dim: int) -> "InvertSettings":
        """InvalidArgument naming the option ("options.<name>")."""
        def need(cond, name, why):
            if not cond:
                raise InvalidArgument(f"options.{name}", why)

        need(self.latent_space in ("w", "w_plus"), "latent_space", "W or W_PLUS")
        need(0 <= self.steps <= 10000, "steps", f"must be in 0..10000, got {self.steps}")
        need(0 <= self.pti_steps <= 5000, "pti_steps", f"must be in 0..5000, got {self.pti_steps}")
        need(isinstance(self.optimize_camera, (bool, np.bool_)), "optimize_camera", "must be true or false")
        for name in ("lr", "pti_lr", "camera_lr"):
            v = getattr(self, name)
            need(math.isfinite(v) and 0 < v <= 1, name, f"must be in (0, 1], got {v}")
        for name in ("lr_rampup", "lr_rampdown", "w_noise_ramp"):
            v = getattr(self, name)
            need(math.isfinite(v) and 0 <= v <= 1, name, f"must be in [0, 1], got {v}")
        for name in ("w_noise", "noise_regularization", "l2_weight", "lpips_weight", "pti_l2_weight",
                     "pti_lpips_weight"):
            v = getattr(self, name)
            need(math.isfinite(v) and v >= 0, name, f"must be finite and >= 0, got {v}")
        need(self.l2_weight + self.lpips_weight > 0, "l2_weight", "l2_weight and lpips_weight are both 0")
        need(16 <= self.lpips_resolution <= 1024, "lpips_resolution", f"must be in 16..1024, got {self.lpips_resolution}")
        need(1 <= self.progress_every <= 10000, "progress_every", "must be in 1..10000")
        need(0 <= self.preview_size <= 1024, "preview_size", "must be in 0..1024")
        if self.init_latent is not None:
            a = np.asarray(self.init_latent, dtype=np.float32)
            need(a.shape in ((w_dim,), (num_ws, w_dim)), "init_latent",
                 f"shape {list(a.shape)}; expected ({num_ws}, {w_dim}) or ({w_dim},)")
            need(bool(np.isfinite(a).all()), "init_latent", "contains NaN or infinite values")
        return self


@dataclass
class CameraOffsets:
    """Rotation of the optimised camera relative to the input camera about the generator's camera
    target, degrees: yaw about world +Y (azimuth grows), pitch about the input camera's right axis
    (elevation grows), then roll about the camera's own viewing axis (+z, right-handed)."""

    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    roll_deg: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {"yaw_deg": self.yaw_deg, "pitch_deg": self.pitch_deg, "roll_deg": self.roll_deg}


@dataclass
class Metrics:
    mse: float
    psnr: float    # dB
    lpips: float   # NaN without an LPIPS model


@dataclass
class ProgressEvent:
    stage: str                 # "invert" or "pti"
    step: int
    total_steps: int
    scalars: dict[str, float]
    elapsed_s: float
    preview: np.ndarray | None = None   # (P, P, 3) uint8


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class InvertResult:
    session_id: str
    expires_in_s: float
    latent: np.ndarray                  # (num_ws, w_dim) float32
    latent_metrics: Metrics
    pti_metrics: Metrics | None
    reconstruction: np.ndarray          # (S, S, 3) uint8
    generator: str
    session_bytes: int
    steps_per_s: float = 0.0
    pti_steps_per_s: float = 0.0
    # with settings.optimize_camera: the optimised camera (world units, the input camera's intrinsics
    # and image size) and its offsets from the input camera (CameraOffsets)
    camera: PinholeCamera | None = None
    camera_offsets: "CameraOffsets | None" = None


# describe ------------------------------------------------------------------------------------------

@dataclass
class GeneratorInfo:
    name: str
    is_default: bool
    kind: str
    weights_format: str
    available: bool
    unavailable_reason: str
    path: str
    sha256: str
    config: GeneratorConfig | None      # in-process only (None over gRPC)
    crop_style: str = ""
    provenance: str = ""                # services.core.models.PROVENANCES ("random_weights" for tiny ones)


@dataclass
class Description:
    generators: list[GeneratorInfo]
    limits: InversionLimits
    max_message_bytes: int
    device: str
    lpips: str
    lpips_reason: str


# meshes --------------------------------------------------------------------------------------------

@dataclass
class MeshResult:
    vertices: np.ndarray        # (V, 3) float32 world units
    faces: np.ndarray           # (F, 3) int32, CCW from outside
    vertex_normals: np.ndarray  # (V, 3) float32 unit
    vertex_colors: np.ndarray | None  # (V, 3) float32 in [0, 1]

    def trimesh(self):
        """A trimesh.Trimesh of the arrays (vertex colours as uint8)."""
        import trimesh

        colors = None if self.vertex_colors is None else (np.clip(self.vertex_colors, 0, 1) * 255 + 0.5).astype(np.uint8)
        return trimesh.Trimesh(self.vertices, self.faces, vertex_normals=self.vertex_normals, vertex_colors=colors,
                               process=False)

    def encode(self, fmt: str) -> bytes:
        """"glb" or "ply" file bytes."""
        buf = io.BytesIO()
        self.trimesh().export(buf, file_type=fmt)
        return buf.getvalue()


@dataclass
class MeshOutput:
    mesh: MeshResult | None    # fmt "tensors"
    data: bytes                # GLB / PLY file
    num_vertices: int
    num_faces: int
