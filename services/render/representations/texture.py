"""UV textures: unwrapping with xatlas, texture sampling, rasterising the UV atlas, and back-projection of a
picture into the texture of a mesh (BackProjectTexture).

Texture conventions (render.proto "uv"): a texture is (T, T, 3) float sRGB in [0, 1], row 0 at the top;
u right, v down, texel (row i, column j) has its centre at (u, v) = ((j + 0.5) / T, (i + 0.5) / T), and
lookups are bilinear with the border texels repeated outside [0, 1].

Back-projection is texel-driven: the UV atlas is rasterised at T x T (each texel centre -> the triangle
whose UV triangle holds it, and its barycentrics; texels in the atlas gutter borrow a neighbouring
triangle and extrapolate, so bilinear lookups near chart borders read sensible colours), giving each
texel a 3D surface point and normal. A texel is visible from the camera when it projects inside the
image, its normal faces the camera with cosine >= min_cosine, it is not occluded (its depth is within a
slope-aware tolerance of the depth rasterised at that pixel), and the mask (if any) is set there.
Visible texels take the picture's colour at their projection (bilinear).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from services.core.camera_batch import CameraBatch
from services.render.representations.mesh_raster import (TorchRasterizer, project_vertices, rasterize_screen,
                                                         vertex_normals)


def unwrap_uv(vertices: np.ndarray, faces: np.ndarray, texture_size: int = 1024, padding: int = 4
              ) -> tuple[np.ndarray, np.ndarray]:
    """xatlas UV atlas for a mesh: uvs (U, 2) float32 in [0, 1] (v down) and uv_faces (F, 3) int64, one
    UV triangle per input face in the same order. Charts are packed for a texture of texture_size texels
    with `padding` texels between them (xatlas pads at its own atlas size, which the texture then
    resamples, so the gutter is about padding * T / atlas_size texels)."""
    import xatlas

    # The atlas does not depend on the mesh's position or scale: unit-size coordinates keep xatlas's float
    # normals finite (coordinates near 1e19 and above overflow them, and xatlas then loops forever).
    v = np.asarray(vertices, dtype=np.float64)
    v = v - (v.max(0) + v.min(0)) / 2
    extent = float(np.abs(v).max()) if v.size else 0.0
    v = v / extent if extent > 0 and np.isfinite(extent) else v
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(v, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
    pack = xatlas.PackOptions()
    pack.resolution = int(texture_size)
    pack.padding = int(padding)
    pack.bilinear = True
    atlas.generate(xatlas.ChartOptions(), pack)
    vmapping, indices, uvs = atlas[0]
    if atlas.atlas_count != 1 or indices.shape[0] != faces.shape[0]:
        raise ValueError(f"xatlas produced {atlas.atlas_count} atlases for {faces.shape[0]} faces; expected one")
    return np.asarray(uvs, np.float32), np.asarray(indices, np.int64)


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup: texture (T, T, C), uv (..., 2) -> (..., C). Differentiable in both."""
    shape = uv.shape[:-1]
    grid = (uv.reshape(1, 1, -1, 2) * 2 - 1).to(texture.dtype)
    out = F.grid_sample(texture.permute(2, 0, 1)[None], grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[0, :, 0].T.reshape(*shape, texture.shape[-1])


def resize_texture(texture: torch.Tensor, size: int) -> torch.Tensor:
    """(T, T, C) -> (size, size, C), bilinear (area-averaged when shrinking)."""
    if texture.shape[0] == size:
        return texture
    x = texture.permute(2, 0, 1)[None]
    mode = "area" if size < texture.shape[0] else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=(size, size), mode=mode, **kw)[0].permute(1, 2, 0)


@torch.no_grad()
def rasterize_uv(uvs: torch.Tensor, uv_faces: torch.Tensor, size: int, dilate: int = 2
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which triangle holds each texel centre of a size x size texture. uvs (U, 2), uv_faces (F, 3).
    Returns triangle (size, size) int64 (-1 where none), barycentrics (size, size, 3) w.r.t. that UV
    triangle, and inside (size, size) bool (False for gutter texels filled by `dilate` rounds of
    borrowing a 4-neighbour's triangle; their barycentrics extrapolate slightly outside it)."""
    uvs = uvs.double()
    screen = (uvs * size)[None]
    tri, _ = rasterize_screen(screen, torch.ones_like(screen[..., 0]), uv_faces, size, size, near=0.5)
    tri = tri[0]
    inside = tri >= 0
    for _ in range(dilate):
        filled = tri.clone()
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            shifted = torch.full_like(tri, -1)
            ys = slice(max(dy, 0), size + min(dy, 0))
            yd = slice(max(-dy, 0), size + min(-dy, 0))
            xs = slice(max(dx, 0), size + min(dx, 0))
            xd = slice(max(-dx, 0), size + min(-dx, 0))
            shifted[yd, xd] = tri[ys, xs]
            filled = torch.where((filled < 0) & (shifted >= 0), shifted, filled)
        tri = filled
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64) + 0.5,
                            torch.arange(size, dtype=torch.float64) + 0.5, indexing="ij")
    p = torch.stack([xs, ys], -1)
    q = screen[0][uv_faces.long()[tri.clamp_min(0)]]                # (S, S, 3, 2)

    def cross(a, b):
        return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]

    area = cross(q[..., 1, :] - q[..., 0, :], q[..., 2, :] - q[..., 0, :])
    area = torch.where(area == 0, torch.ones_like(area), area)
    bary = torch.stack([cross(q[..., (k + 1) % 3, :] - p, q[..., (k + 2) % 3, :] - p) for k in range(3)], -1)
    bary = bary / area[..., None]
    bary = torch.where((tri >= 0)[..., None], bary, torch.zeros_like(bary))
    return tri, bary.float(), inside


def texel_surface(vertices: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor, uv_faces: torch.Tensor,
                  size: int) -> dict[str, torch.Tensor]:
    """Surface point (S, S, 3) and unit normal (S, S, 3) of every texel, with the triangle map and
    `valid` (S, S) (texel on a chart or its gutter). World units; no gradient."""
    tri, bary, inside = rasterize_uv(uvs.to("cpu"), uv_faces.to("cpu"), size)
    dev = vertices.device
    tri, bary = tri.to(dev), bary.to(dev)
    valid = tri >= 0
    vid = faces.long()[tri.clamp_min(0)]                                       # (S, S, 3)
    v = vertices.detach()
    b = bary.to(v.dtype)[..., None]
    points = (v[vid] * b).sum(-2)
    vn = vertex_normals(v, faces)
    normals = (vn[vid] * b).sum(-2)
    normals = normals / normals.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return dict(points=points, normals=normals, tri=tri, valid=valid, inside=inside.to(dev))


def _sample_image(image: torch.Tensor, pix: torch.Tensor, W: int, H: int) -> torch.Tensor:
    """Bilinear lookup of image (C, H, W) at pixel positions pix (P, 2) (pixel centres at +0.5)."""
    grid = torch.stack([pix[:, 0] / W * 2 - 1, pix[:, 1] / H * 2 - 1], -1).reshape(1, 1, -1, 2)
    out = F.grid_sample(image[None].to(grid.dtype), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T


@torch.no_grad()
def project_to_texels(vertices: torch.Tensor, faces: torch.Tensor, uvs: torch.Tensor, uv_faces: torch.Tensor,
                      size: int, image: torch.Tensor, camera: CameraBatch, mask: torch.Tensor | None = None,
                      min_cosine: float = 0.2, surface: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The picture in UV space. image (3, H, W) in [0, 1], camera a CameraBatch of one camera of the
    image's size, mask (H, W) or (1, H, W) in [0, 1] (>= 0.5 = use). Returns texture (T, T, 3), 0 where
    not visible, and visibility (T, T): the viewing cosine where visible, else 0. surface: a cached
    texel_surface() of the same mesh and size."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got {tuple(image.shape)}")
    if len(camera) != 1 or (camera.height, camera.width) != tuple(image.shape[1:]):
        raise ValueError(f"need one camera of the image size {tuple(image.shape[1:])}, got {len(camera)} of "
                         f"{camera.height}x{camera.width}")
    dev = vertices.device
    dt = torch.float32 if vertices.dtype != torch.float64 else torch.float64
    v = vertices.detach().to(dt)
    cam = camera.to(device=dev, dtype=dt)
    surf = surface if surface is not None else texel_surface(v, faces, uvs, uv_faces, size)
    H, W = camera.height, camera.width
    # the picture's own depth map, for occlusion
    raster = TorchRasterizer()
    screen, z = project_vertices(v, cam)
    tri_id, zbuf = rasterize_screen(screen, z, faces, H, W, raster.near)
    pts = surf["points"].reshape(-1, 3)
    nrm = surf["normals"].reshape(-1, 3)
    pix, pz = project_vertices(pts, cam)
    pix, pz = pix[0], pz[0]
    centre = cam.centers[0]
    to_cam = centre - pts
    dist = to_cam.norm(dim=-1).clamp_min(1e-12)
    cosine = (nrm * to_cam).sum(-1) / dist
    inside_img = (pix[:, 0] >= 0) & (pix[:, 0] < W) & (pix[:, 1] >= 0) & (pix[:, 1] < H) & (pz > raster.near)
    px = pix[:, 0].clamp(0, W - 1).long()
    py = pix[:, 1].clamp(0, H - 1).long()
    d_pix = zbuf[0, py, px].to(dt)
    # depth tolerance: the surface may tilt away within one pixel's footprint (z / f world units)
    footprint = pz / cam.K[0, 0, 0]
    tan = torch.sqrt((1 - cosine.clamp(min_cosine, 1) ** 2).clamp_min(0)) / cosine.clamp(min_cosine, 1)
    tol = footprint * (1.0 + 2.0 * tan) + 1e-4 * pz
    visible = surf["valid"].reshape(-1) & inside_img & (cosine >= min_cosine)
    visible &= torch.isfinite(d_pix) & (pz <= d_pix + tol)
    if mask is not None:
        m = mask.reshape(1, H, W).to(device=dev, dtype=dt)
        visible &= _sample_image(m, pix, W, H)[:, 0] >= 0.5
    colour = _sample_image(image.to(device=dev, dtype=dt), pix, W, H)
    vis = torch.where(visible, cosine, torch.zeros_like(cosine))
    tex = torch.where(visible[:, None], colour, torch.zeros_like(colour))
    return tex.reshape(size, size, 3).float(), vis.reshape(size, size).float()


def fuse_projections(textures: list[torch.Tensor], visibilities: list[torch.Tensor], power: float = 2.0
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend several back-projected textures (T, T, 3) weighted by visibility**power (views facing a
    texel head-on win). Returns the fused texture and the best visibility per texel."""
    w = torch.stack([v ** power for v in visibilities])
    t = torch.stack(textures)
    total = w.sum(0)
    fused = (t * w[..., None]).sum(0) / total.clamp_min(1e-12)[..., None]
    return torch.where((total > 0)[..., None], fused, torch.zeros_like(fused)), torch.stack(visibilities).amax(0)


def back_project(scene, image: torch.Tensor, camera: CameraBatch, mask: torch.Tensor | None = None,
                 min_cosine: float = 0.2, write: str = "none") -> tuple[torch.Tensor, torch.Tensor, int]:
    """BackProjectTexture for a UV-textured scene (MeshScene). image (3, H, W) in [0, 1]; camera one
    camera of the image's size; mask optional (H, W) / (1, H, W). write: "none" (the scene is
    unchanged), "visible" (every visible texel is replaced), "unseen" (visible texels not written
    before, then marked seen). Returns texture (T, T, 3), visibility (T, T) in [0, 1] and the number of
    texels written. ValueError for a scene without a UV texture, bad shapes, or min_cosine outside
    [0, 1)."""
    if getattr(scene, "texture", None) is None or getattr(scene, "uvs", None) is None:
        raise ValueError(f"a {getattr(scene, 'kind', type(scene).__name__)} scene without a UV texture cannot "
                         "take a back-projected picture")
    if not 0 <= min_cosine < 1 or math.isnan(min_cosine):
        raise ValueError(f"min_cosine must be in [0, 1), got {min_cosine}")
    if write not in ("none", "visible", "unseen"):
        raise ValueError(f"write must be 'none', 'visible' or 'unseen', got {write!r}")
    size = scene.texture.shape[0]
    # the texel -> surface map only changes with the vertices: reuse it across the views of one pass
    key = (scene.vertices._version, scene.vertices.data_ptr(), scene.faces.data_ptr(), size)
    cache = scene.__dict__.get("_texel_surface_cache")
    if cache is None or cache[0] != key:
        v = scene.vertices.detach()
        cache = (key, texel_surface(v if v.dtype == torch.float64 else v.float(), scene.faces, scene.uvs,
                                    scene.uv_faces, size))
        scene.__dict__["_texel_surface_cache"] = cache
    tex, vis = project_to_texels(scene.vertices, scene.faces, scene.uvs, scene.uv_faces, size, image, camera,
                                 mask, min_cosine, surface=cache[1])
    written = 0
    if write != "none":
        target = vis > 0
        if write == "unseen":
            target &= scene.texture_seen <= 0
        with torch.no_grad():
            t = target.to(scene.texture.device)
            scene.texture.data = torch.where(t[..., None], tex.to(scene.texture), scene.texture.data)
            scene.texture_seen.data = torch.where(t, torch.ones_like(scene.texture_seen), scene.texture_seen)
        written = int(target.sum())
    return tex, vis, written
