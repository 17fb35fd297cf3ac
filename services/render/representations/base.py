"""What every renderable representation provides. The render service holds one per scene session.

Render outputs by name (shapes for N cameras of H x W pixels; see protos/headforge/v1/render.proto):
  rgb (N, 3, H, W) in [0, 1], composited over `background`; alpha (N, 1, H, W) in [0, 1];
  depth (N, 1, H, W) world units along camera +z, alpha-normalised, 0 where alpha = 0;
  normal_camera / normal_world (N, 3, H, W) in [-1, 1], 0 where alpha = 0;
  uv (N, 2, H, W) in [0, 1] and triangle_id (N, 1, H, W) int32 (-1 = none): meshes only, no gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Collection, Mapping

import torch
from torch import nn

from services.core.camera_batch import CameraBatch

ALL_OUTPUTS = ("rgb", "alpha", "depth", "normal_camera", "normal_world", "uv", "triangle_id")


class Representation(nn.Module):
    """A differentiable 3D representation. Subclasses set `kind`, `outputs`, `default_lrs`, and implement
    render(), parameter_groups() and the file formats they support."""

    kind: ClassVar[str]
    outputs: ClassVar[frozenset[str]]
    # learning rate per parameter group when the caller gives none
    default_lrs: ClassVar[dict[str, float]]
    backend: str = "torch"

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Optimised parameters by group name (the names OptimizerConfig.ParamGroup uses)."""
        raise NotImplementedError

    def render(self, cameras: CameraBatch, outputs: Collection[str],
               background: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Render the requested outputs (a subset of `self.outputs`). background: (3,) in [0, 1],
        default white."""
        raise NotImplementedError

    def regularizers(self) -> dict[str, "callable"]:
        """Named scalar regularisers a caller may add with a weight (e.g. mesh "laplacian")."""
        return {}

    def after_step(self, step: int, optimizer) -> bool:
        """Hook after each optimiser step (Gaussian densification). Returns True when the parameter set
        changed (the optimiser state was rebuilt)."""
        return False

    def export(self, fmt: str) -> bytes:
        """The scene as a file: "glb", "obj_zip", "ply" or "npz"; ValueError for unsupported formats."""
        raise ValueError(f"{self.kind} cannot be exported as {fmt}")

    def config(self) -> dict:
        """JSON-serialisable settings that, with state_tensors(), rebuild this object via from_config()."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict) -> "Representation":
        """An object with the given settings and placeholder parameters (load_state_tensors fills them)."""
        raise NotImplementedError

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Every tensor needed to restore this object (parameters and buffers), detached CPU copies."""
        return {k: v.detach().cpu().clone() for k, v in self.state_dict().items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Inverse of state_tensors. Kinds whose parameter count changes (Gaussians) override this."""
        self.load_state_dict(tensors)

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in [*self.parameters(), *self.buffers()])


@dataclass(frozen=True)
class SceneKind:
    """What the render service needs of one scene kind (registered in representations/__init__.py).

    cls: the Representation class (outputs, default_lrs, from_config for checkpoints). create(init,
    seed, options, limits) -> a new scene from CreateScene's init values (convert.init_from_proto's
    dict) and options, validating every value (InvalidArgument naming "<kind>.<field>" or
    "options.<key>"). from_asset(data, fmt, options) -> a scene from a file. options: the accepted
    CreateScene options, described (Describe). accelerated_backend: the backend Describe lists first
    when the server has CUDA. init_bytes(init, options, limits) -> the bytes create() would hold
    (memory_bytes() of the new scene), computed from the request alone and validating the size-like
    fields it reads, so that the service refuses an over-cap scene before allocating it."""

    cls: type[Representation]
    create: Callable[[Mapping[str, Any], int, Mapping[str, str], Any], Representation]
    from_asset: Callable[[bytes, str, Mapping[str, str]], Representation]
    options: Mapping[str, str]
    export_formats: tuple[str, ...]
    regularizers: tuple[str, ...]
    accelerated_backend: str = "torch"
    init_bytes: Callable[[Mapping[str, Any], Mapping[str, str], Any], int] = field(kw_only=True)
