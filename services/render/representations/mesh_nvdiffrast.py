"""The nvdiffrast (CUDA) mesh rasteriser with TorchRasterizer's interface, and get_rasterizer, the
backend choice. It builds OpenGL clip positions (opencv_to_opengl and a projection built from K), calls
rasterize / interpolate / texture / antialias, and flips rows back to the OpenCV orientation."""

from __future__ import annotations

import numpy as np
import torch

from services.core.camera_batch import CameraBatch
from services.core.cameras import opencv_to_opengl
from services.render.representations.mesh_raster import Fragments, TorchRasterizer, project_vertices


def opengl_clip_positions(vertices: torch.Tensor, cameras: CameraBatch, near: float = 0.01, far: float = 100.0
                          ) -> torch.Tensor:
    """Homogeneous OpenGL clip positions (N, V, 4) of world vertices (V, 3): the OpenCV extrinsics turned
    into an OpenGL view (opencv_to_opengl) and a projection built from K, so that NDC x = 2u/W - 1 and
    NDC y = 1 - 2v/H for OpenCV pixel coordinates (u, v). nvdiffrast's output row 0 is NDC y = -1, i.e.
    the bottom image row: flip rows to get OpenCV images."""
    W, H = cameras.width, cameras.height
    dev, dt = vertices.device, vertices.dtype
    w2c = cameras.world_to_camera.detach().cpu().double().numpy()
    views = torch.as_tensor(np.stack([opencv_to_opengl(m) for m in w2c]), dtype=dt, device=dev)
    K = cameras.K.to(device=dev, dtype=dt)
    proj = torch.zeros(len(cameras), 4, 4, dtype=dt, device=dev)
    proj[:, 0, 0] = 2 * K[:, 0, 0] / W
    proj[:, 0, 1] = -2 * K[:, 0, 1] / W
    proj[:, 0, 2] = 1 - 2 * K[:, 0, 2] / W
    proj[:, 1, 1] = 2 * K[:, 1, 1] / H
    proj[:, 1, 2] = 2 * K[:, 1, 2] / H - 1
    proj[:, 2, 2] = -(far + near) / (far - near)
    proj[:, 2, 3] = -2 * far * near / (far - near)
    proj[:, 3, 2] = -1
    mvp = proj @ views
    hom = torch.cat([vertices, torch.ones_like(vertices[..., :1])], -1)
    if vertices.dim() == 2:
        return torch.einsum("nij,vj->nvi", mvp, hom)
    return torch.einsum("nij,nvj->nvi", mvp, hom)


_CUDA_CONTEXTS: dict = {}


class NvdiffrastRasterizer:
    """nvdiffrast (CUDA) backend with the TorchRasterizer interface. Images come back in the OpenCV
    orientation (row 0 at the top)."""

    name = "nvdiffrast"

    def __init__(self, device: torch.device | str = "cuda", near: float = 0.01, far: float = 100.0):
        import nvdiffrast.torch as dr

        self.dr = dr
        device = torch.device(device)
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        if device not in _CUDA_CONTEXTS:            # creating a context is slow: one per device
            _CUDA_CONTEXTS[device] = dr.RasterizeCudaContext(device=device)
        self.ctx = _CUDA_CONTEXTS[device]
        self.near, self.far = near, far

    def rasterize(self, vertices: torch.Tensor, faces: torch.Tensor, cameras: CameraBatch) -> Fragments:
        clip = opengl_clip_positions(vertices.float(), cameras, self.near, self.far).contiguous()
        tri = faces.int().contiguous()
        rast, _ = self.dr.rasterize(self.ctx, clip, tri, resolution=[cameras.height, cameras.width])
        tri_id = (rast[..., 3].long() - 1).flip(1)
        _, z = project_vertices(vertices.float(), cameras)
        return Fragments(tri_id, faces.long(), (len(cameras), cameras.height, cameras.width),
                         dict(rast=rast, clip=clip, tri=tri, z=z))

    def interpolate(self, frags: Fragments, attr: torch.Tensor, faces: torch.Tensor | None = None) -> torch.Tensor:
        tri = frags.extra["tri"] if faces is None else faces.int().contiguous()
        attr = attr[None] if attr.dim() == 2 else attr           # instanced mode: broadcast over cameras
        out, _ = self.dr.interpolate(attr.float().contiguous(), frags.extra["rast"], tri)
        return out.flip(1).permute(0, 3, 1, 2)

    def barycentrics(self, frags: Fragments) -> torch.Tensor:
        """As TorchRasterizer.barycentrics: interpolating a one-hot attribute per triangle corner gives
        the weights without relying on the order of nvdiffrast's (u, v) channels."""
        F_ = frags.faces.shape[0]
        corners = torch.arange(3 * F_, device=frags.faces.device).view(F_, 3)
        onehot = torch.eye(3, device=frags.faces.device).repeat(F_, 1)
        return self.interpolate(frags, onehot, corners)

    def antialias(self, frags: Fragments, image: torch.Tensor, neighbors: torch.Tensor | None = None) -> torch.Tensor:
        gl = image.permute(0, 2, 3, 1).flip(1).float().contiguous()
        out = self.dr.antialias(gl, frags.extra["rast"], frags.extra["clip"], frags.extra["tri"])
        return out.flip(1).permute(0, 3, 1, 2)

    def texture(self, texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        uvc = uv.permute(0, 2, 3, 1).float().contiguous()
        out = self.dr.texture(texture[None].float().contiguous(), uvc, filter_mode="linear", boundary_mode="clamp")
        return out.permute(0, 3, 1, 2)

    def depth(self, frags: Fragments) -> torch.Tensor:
        return self.interpolate(frags, frags.extra["z"][..., None].contiguous())


def nvdiffrast_available() -> bool:
    """True when CUDA is usable and nvdiffrast imports (it compiles its plugin on first use)."""
    if not torch.cuda.is_available():
        return False
    try:
        import nvdiffrast.torch  # noqa: F401
    except Exception:
        return False
    return True


def get_rasterizer(backend: str = "auto", device: torch.device | str = "cpu"):
    """"torch", "nvdiffrast", or "auto" (nvdiffrast for CUDA tensors when available, else torch).
    ValueError for an unknown name or nvdiffrast requested where it cannot run."""
    device = torch.device(device)
    if backend == "auto":
        backend = "nvdiffrast" if device.type == "cuda" and nvdiffrast_available() else "torch"
    if backend == "torch":
        return TorchRasterizer()
    if backend == "nvdiffrast":
        if device.type != "cuda" or not nvdiffrast_available():
            raise ValueError("backend 'nvdiffrast' needs CUDA tensors and the diffrp-nvdiffrast package")
        return NvdiffrastRasterizer(device)
    raise ValueError(f"unknown rasteriser backend {backend!r} (expected 'auto', 'torch' or 'nvdiffrast')")
