"""Drawing a triangle mesh through a rasteriser (render_triangles: every render output of a mesh scene)
and the mesh regularisers, shared by MeshScene and DmtetScene (on its extracted mesh)."""

from __future__ import annotations

from typing import Collection

import torch

from services.core.camera_batch import CameraBatch
from services.render.representations.mesh_raster import face_normals, vertex_normals
from services.render.types import ENVIRONMENT_SHADINGS, SHADINGS

AMBIENT = 0.3
DEFAULT_ROUGHNESS = 0.5   # material values of surfaces without material maps
DEFAULT_METALLIC = 0.0


# --------------------------------------------------------------------------------------------------
# rendering shared by MeshScene and DmtetScene

def _background(background: torch.Tensor | None, N: int, H: int, W: int, like: torch.Tensor) -> torch.Tensor:
    """(3,), (3, H, W) or (N, 3, H, W) in [0, 1] (None = white) -> broadcastable (N or 1, 3, H or 1, W or 1)."""
    if background is None:
        return like.new_ones(1, 3, 1, 1)
    bg = background.to(like)
    if bg.dim() == 1 and bg.shape[0] == 3:
        return bg.view(1, 3, 1, 1)
    if bg.dim() == 3 and bg.shape == (3, H, W):
        return bg[None]
    if bg.dim() == 4 and bg.shape == (N, 3, H, W):
        return bg
    raise ValueError(f"background must be (3,), (3, {H}, {W}) or ({N}, 3, {H}, {W}), got {tuple(bg.shape)}")


def render_triangles(raster, vertices: torch.Tensor, faces: torch.Tensor, neighbors: torch.Tensor,
                     cameras: CameraBatch, outputs: Collection[str], background: torch.Tensor | None = None, *,
                     vertex_colors: torch.Tensor | None = None, texture: torch.Tensor | None = None,
                     uvs: torch.Tensor | None = None, uv_faces: torch.Tensor | None = None,
                     seen: torch.Tensor | None = None, flat_normals: bool = False, shading: str = "unlit",
                     light_direction: torch.Tensor | None = None, roughness: torch.Tensor | None = None,
                     metallic: torch.Tensor | None = None, environment=None,
                     vertex_roughness: torch.Tensor | None = None,
                     vertex_metallic: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Render a triangle mesh. vertices (V, 3), faces (F, 3), neighbors (F, 3) from edge_neighbors;
    albedo from texture (T, T, 3) at uvs/uv_faces, or vertex_colors (V, 3), or grey 0.5 when neither.
    shading "unlit", "diffuse" (Lambertian, ambient 0.3, light_direction (3,) world towards the light,
    default: towards each camera) or "pbr" (pbr.shade_pbr under environment, a pbr.Environment, with
    the roughness / metallic UV maps (T, T, 1) linear in [0, 1], or per-vertex values vertex_roughness /
    vertex_metallic (V, 1) interpolated like vertex colours (a UV map wins when both are given), or
    DEFAULT_ROUGHNESS / DEFAULT_METALLIC without either). Returns the requested outputs (render.proto shapes): "albedo" is the base colour
    before shading over the background (equal to "rgb" when unlit); "roughness" / "metallic"
    (N, 1, H, W) the material values (0 where nothing is drawn)."""
    outputs = set(outputs)
    if shading not in ("", *SHADINGS):
        raise ValueError(f"unknown shading {shading!r} (expected one of {list(SHADINGS)})")
    lit = shading in ENVIRONMENT_SHADINGS
    if lit and environment is None:
        raise ValueError(f"shading {shading!r} needs an environment")
    pbr = lit and "rgb" in outputs
    N, H, W = len(cameras), cameras.height, cameras.width
    cams = cameras.to(device=vertices.device, dtype=vertices.dtype)
    frags = raster.rasterize(vertices, faces, cams)
    mask = (frags.tri_id >= 0).to(vertices.dtype)[:, None]                # (N, 1, H, W)
    R = cams.world_to_camera[:, :3, :3]
    want_normals = bool(outputs & {"normal_camera", "normal_world"}) or shading == "diffuse" or lit
    uv_img = None
    if texture is not None and (outputs & {"rgb", "albedo", "uv", "texture_seen", "roughness", "metallic"}):
        uv_img = raster.interpolate(frags, uvs.to(vertices.dtype), uv_faces)
    n_world = None
    if want_normals:
        if flat_normals:
            fn = face_normals(vertices, faces)
            corner = torch.arange(3 * faces.shape[0], device=faces.device).view(-1, 3)
            n_world = raster.interpolate(frags, fn.repeat_interleave(3, 0), corner)
        else:
            n_world = raster.interpolate(frags, vertex_normals(vertices, faces))
        n_world = n_world / n_world.norm(dim=1, keepdim=True).clamp_min(1e-12)
    channels: list[tuple[str, torch.Tensor]] = []
    if outputs & {"rgb", "albedo"}:
        if texture is not None:
            albedo = raster.texture(texture.clamp(0, 1), uv_img)
        elif vertex_colors is not None:
            albedo = raster.interpolate(frags, vertex_colors.clamp(0, 1))
        else:
            albedo = torch.full_like(mask.expand(-1, 3, -1, -1), 0.5)
        bg = _background(background, N, H, W, vertices)
        if "albedo" in outputs:
            channels.append(("albedo", albedo * mask + bg * (1 - mask)))
    materials = {}
    for name, tex, per_vertex, default in (("roughness", roughness, vertex_roughness, DEFAULT_ROUGHNESS),
                                           ("metallic", metallic, vertex_metallic, DEFAULT_METALLIC)):
        if name in outputs or pbr:
            if tex is not None and uv_img is not None:
                materials[name] = raster.texture(tex.clamp(0, 1), uv_img)
            elif per_vertex is not None:
                materials[name] = raster.interpolate(frags, per_vertex.reshape(-1, 1).to(vertices.dtype).clamp(0, 1))
            else:
                materials[name] = torch.full_like(mask, default)
            if name in outputs:
                channels.append((name, materials[name] * mask))
    if "rgb" in outputs:
        shaded = albedo
        if pbr:
            from services.render.representations.pbr import shade_pbr

            _, dirs = cams.pixel_rays()                                       # (N, H, W, 3) camera -> scene
            last = lambda t: t.permute(0, 2, 3, 1)                            # noqa: E731 (N, C, H, W) -> (N, H, W, C)
            rgb = shade_pbr(last(albedo), last(materials["roughness"]), last(materials["metallic"]), last(n_world),
                            -dirs, environment, diffuse_only=shading == "pbr_diffuse")
            shaded = rgb.permute(0, 3, 1, 2)
        elif shading == "diffuse":
            if light_direction is None:
                light = -R[:, 2, :]                                          # towards the camera
            else:
                light = (light_direction.to(vertices) / light_direction.norm().clamp_min(1e-12)).expand(N, 3)
            lambert = (n_world * light[:, :, None, None]).sum(1, keepdim=True).clamp_min(0)
            shaded = albedo * (AMBIENT + (1 - AMBIENT) * lambert)
        channels.append(("rgb", shaded * mask + bg * (1 - mask)))
    channels.append(("alpha", mask))
    if "depth" in outputs:
        channels.append(("depth", raster.depth(frags) * mask))
    if "normal_world" in outputs:
        channels.append(("normal_world", n_world * mask))
    if "normal_camera" in outputs:
        channels.append(("normal_camera", torch.einsum("nij,njhw->nihw", R, n_world) * mask))
    stacked = torch.cat([c for _, c in channels], 1)
    aa = raster.antialias(frags, stacked, neighbors)
    out: dict[str, torch.Tensor] = {}
    start = 0
    for name, c in channels:
        out[name] = aa[:, start:start + c.shape[1]]
        start += c.shape[1]
    alpha = out["alpha"].clamp(0, 1)
    out["alpha"] = alpha
    for name in ("rgb", "albedo", "roughness", "metallic"):
        if name in out:
            out[name] = out[name].clamp(0, 1)
    if "depth" in out:
        out["depth"] = torch.where(alpha > 1e-6, out["depth"] / alpha.clamp_min(1e-6), torch.zeros_like(alpha))
    if "uv" in outputs:
        out["uv"] = (uv_img * mask).detach() if uv_img is not None else mask.new_zeros(N, 2, H, W)
    if "triangle_id" in outputs:
        out["triangle_id"] = frags.tri_id[:, None].to(torch.int32)
    if "texture_seen" in outputs:
        if seen is not None and uv_img is not None:
            out["texture_seen"] = (raster.texture(seen[..., None].to(vertices.dtype), uv_img) * mask).detach()
        else:
            out["texture_seen"] = mask.new_zeros(N, 1, H, W)
    return {k: v for k, v in out.items() if k in outputs}


# --------------------------------------------------------------------------------------------------
# regularisers on a mesh (also used on DMTet's extracted mesh)

def unique_edges(faces: torch.Tensor) -> torch.Tensor:
    """(E, 2) undirected edges of a triangle mesh, smaller index first."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]).long()
    n = int(e.max()) + 1 if e.numel() else 1
    keys = torch.unique(e.amin(1) * n + e.amax(1))      # 1D unique: far faster than unique(dim=0)
    return torch.stack([keys // n, keys % n], -1)


def laplacian_energy(vertices: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
    """Uniform Laplacian smoothing energy: mean over vertices of |v - mean(neighbours)|^2 (world units^2)."""
    V = vertices.shape[0]
    s = torch.zeros_like(vertices).index_add(0, edges[:, 0], vertices[edges[:, 1]])
    s = s.index_add(0, edges[:, 1], vertices[edges[:, 0]])
    deg = torch.zeros(V, dtype=vertices.dtype, device=vertices.device)
    deg = deg.index_add(0, edges[:, 0], torch.ones_like(edges[:, 0], dtype=vertices.dtype))
    deg = deg.index_add(0, edges[:, 1], torch.ones_like(edges[:, 1], dtype=vertices.dtype))
    used = deg > 0
    lap = vertices - s / deg.clamp_min(1)[:, None]
    return (lap[used] ** 2).sum(-1).mean()


def normal_consistency(vertices: torch.Tensor, faces: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """Mean of 1 - cos(angle between the normals of the two triangles at an edge), over edges shared by
    exactly two triangles (0 for a flat mesh)."""
    fn = face_normals(vertices, faces)
    f = torch.arange(faces.shape[0], device=faces.device)[:, None].expand_as(neighbors)
    ok = neighbors > f                                   # each interior edge once
    if not bool(ok.any()):
        return vertices.sum() * 0
    return (1 - (fn[f[ok]] * fn[neighbors[ok]]).sum(-1)).mean()


def edge_length_energy(vertices: torch.Tensor, edges: torch.Tensor, target: float | torch.Tensor = 0.0) -> torch.Tensor:
    """Mean of (|edge| - target)^2 (world units^2); target 0 shrinks edges, the mean initial length
    keeps them even."""
    length = (vertices[edges[:, 0]] - vertices[edges[:, 1]]).norm(dim=-1)
    return ((length - target) ** 2).mean()


