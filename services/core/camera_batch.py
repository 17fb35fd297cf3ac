"""Batches of cameras as torch tensors, the form every renderer takes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from services.core.cameras import PinholeCamera
from services.common.errors import InvalidArgument


@dataclass
class CameraBatch:
    """N pinhole cameras of one image size (conventions: services/common/cameras.py).

    K: (N, 3, 3) intrinsics in pixels; world_to_camera: (N, 4, 4); width, height in pixels.
    """

    K: torch.Tensor
    world_to_camera: torch.Tensor
    width: int
    height: int

    def __len__(self) -> int:
        return self.K.shape[0]

    @property
    def camera_to_world(self) -> torch.Tensor:
        return torch.linalg.inv(self.world_to_camera)

    @property
    def centers(self) -> torch.Tensor:
        """(N, 3) camera positions in world coordinates."""
        return self.camera_to_world[:, :3, 3]

    def to(self, device=None, dtype=None) -> "CameraBatch":
        return CameraBatch(self.K.to(device=device, dtype=dtype), self.world_to_camera.to(device=device, dtype=dtype),
                           self.width, self.height)

    def select(self, index) -> "CameraBatch":
        return CameraBatch(self.K[index], self.world_to_camera[index], self.width, self.height)

    @classmethod
    def from_pinholes(cls, cameras: list[PinholeCamera], dtype=torch.float32, field: str = "cameras") -> "CameraBatch":
        """Stack cameras of one size; InvalidArgument when empty or sizes differ."""
        if not cameras:
            raise InvalidArgument(field, "at least one camera is needed")
        for i, c in enumerate(cameras):
            c.validate(f"{field}[{i}]")
        sizes = {(c.width, c.height) for c in cameras}
        if len(sizes) != 1:
            raise InvalidArgument(field, f"cameras of different image sizes {sorted(sizes)}")
        K = torch.as_tensor(np.stack([c.K for c in cameras]), dtype=dtype)
        w2c = torch.as_tensor(np.stack([c.world_to_camera for c in cameras]), dtype=dtype)
        return cls(K, w2c, cameras[0].width, cameras[0].height)

    def pixel_rays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray origins (N, H, W, 3) and unit directions (N, H, W, 3) in world coordinates through pixel
        centres (pixel (i, j) centre at x = j + 0.5, y = i + 0.5)."""
        dtype, device = self.K.dtype, self.K.device
        ys, xs = torch.meshgrid(torch.arange(self.height, dtype=dtype, device=device) + 0.5,
                                torch.arange(self.width, dtype=dtype, device=device) + 0.5, indexing="ij")
        pix = torch.stack([xs, ys, torch.ones_like(xs)], -1)  # (H, W, 3)
        dirs_cam = torch.einsum("nij,hwj->nhwi", torch.linalg.inv(self.K), pix)
        c2w = self.camera_to_world
        dirs = torch.einsum("nij,nhwj->nhwi", c2w[:, :3, :3], dirs_cam)
        dirs = dirs / dirs.norm(dim=-1, keepdim=True)
        origins = c2w[:, None, None, :3, 3].expand_as(dirs)
        return origins, dirs
