"""The optional gsplat path of the Gaussian scene ("gsplat" backend): `gsplat.rasterization` (CUDA;
compiled on first use), chosen when the scene is on CUDA and gsplat is installed. Agreement with the
torch reference: gaussians.py."""

from __future__ import annotations

from typing import Any

import torch

from services.core.camera_batch import CameraBatch
from services.render.representations.gaussians_projection import EPS2D, NEAR_PLANE, camera_normals
from services.render.representations.gaussians_raster import TILE_SIZE


def gsplat_available() -> bool:
    """True when CUDA and the gsplat package are both present."""
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("gsplat") is not None


def rasterize_gsplat(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                     colors: torch.Tensor, cameras: CameraBatch, normals: torch.Tensor | None = None,
                     extra: torch.Tensor | None = None) -> dict[str, Any]:
    """`rasterize_torch` on gsplat's CUDA rasteriser (same arguments and results; CUDA float32 tensors).
    Colours are evaluated here (per camera), so gsplat composites plain feature channels: rgb, then the
    oriented camera normals, then the extra features, then depth (render_mode "RGB+ED": expected depth =
    sum w z / alpha)."""
    from gsplat import rasterization

    W, H = cameras.width, cameras.height
    w2c, K = cameras.world_to_camera.contiguous(), cameras.K.contiguous()
    feats = [colors]
    if normals is not None:
        means_cam = torch.einsum("cij,pj->cpi", w2c[:, :3, :3], means) + w2c[:, None, :3, 3]
        feats.append(camera_normals(normals, w2c, means_cam))
    if extra is not None:
        feats.append(extra)
    img, alpha, meta = rasterization(means, quats, scales, opacities, torch.cat(feats, -1).contiguous(), w2c, K,
                                     W, H, near_plane=NEAR_PLANE, eps2d=EPS2D, packed=False, tile_size=TILE_SIZE,
                                     render_mode="RGB+ED", rasterize_mode="classic")
    img = img.permute(0, 3, 1, 2)  # (C, H, W, D + 1) -> (C, D + 1, H, W)
    radii = meta["radii"]
    visible = (radii > 0).all(-1) if radii.dim() == 3 else radii > 0  # (C, P, 2) in newer gsplat
    out = {"rgb": img[:, :3], "alpha": alpha.permute(0, 3, 1, 2), "depth": img[:, -1:],
           "means2d": meta["means2d"], "visible": visible}
    start = 3
    if normals is not None:
        out["normal_camera"] = img[:, 3:6]
        start = 6
    if extra is not None:
        out["extra"] = img[:, start:start + extra.shape[-1]]
    return out
