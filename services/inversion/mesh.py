"""Meshes from a generator's density: marching cubes (scikit-image, Lewiner) on the raw decoder density
sampled on a grid over the rendering box, cleaned with trimesh.

Grid: `resolution` samples per side at x_i = -b + 2b i / (resolution - 1), i = 0..resolution-1, over the
box [-b, b]^3 (b = box_size, world units), padded by one sample of a value below the iso-level on every
side so every surface closes (the mesh is watertight by construction). Iso-level: the raw density
(before the renderer's activation; EG3D's shape extraction uses 10). Faces are counter-clockwise seen
from outside (checked by the signed volume and flipped if needed). Optional: keep only the largest
connected component; quadric decimation to at most max_faces (fast-simplification); vertex colours
= the field's decoded RGB at each vertex.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh
from skimage import measure

from services.common.errors import FailedPrecondition
from services.inversion.types import MeshResult

Query = "services.core.volume.Query"


@torch.no_grad()
def sample_density(query, box_size: float, resolution: int, device: torch.device, chunk: int = 1 << 18) -> np.ndarray:
    """Raw density on the grid, (res, res, res) float32 indexed [x, y, z]."""
    axis = torch.linspace(-box_size, box_size, resolution, device=device)
    out = np.empty((resolution, resolution, resolution), dtype=np.float32)
    ys, zs = torch.meshgrid(axis, axis, indexing="ij")
    plane = torch.stack([torch.zeros_like(ys), ys, zs], -1).reshape(-1, 3)  # one x-slice of points
    slices = max(1, chunk // plane.shape[0])
    for i in range(0, resolution, slices):
        xs = axis[i:i + slices]
        pts = plane.unsqueeze(0).repeat(len(xs), 1, 1)
        pts[..., 0] = xs[:, None]
        raw, _ = query(pts.reshape(-1, 3))
        out[i:i + len(xs)] = raw.float().cpu().numpy().reshape(len(xs), resolution, resolution)
    return out


def extract_mesh(query, box_size: float, resolution: int, threshold: float, *, device: torch.device,
                 largest_component_only: bool = False, max_faces: int = 0, vertex_colors: bool = False
                 ) -> MeshResult:
    """See the module docstring. FailedPrecondition EMPTY_SURFACE when nothing crosses the threshold."""
    grid = sample_density(query, box_size, resolution, device)
    lo, hi = float(grid.min()), float(grid.max())
    if not (lo < threshold < hi):
        raise FailedPrecondition(f"no surface at density threshold {threshold}: the raw density lies in "
                                 f"[{lo:.3g}, {hi:.3g}] on the {resolution}^3 grid; choose a threshold inside it",
                                 reason="EMPTY_SURFACE", metadata={"min": f"{lo:.6g}", "max": f"{hi:.6g}"})
    padded = np.pad(grid, 1, mode="constant", constant_values=min(lo, threshold) - 1.0)
    step = 2 * box_size / (resolution - 1)
    verts, faces, _, _ = measure.marching_cubes(padded, threshold, allow_degenerate=False)
    verts = (verts - 1.0) * step - box_size
    mesh = trimesh.Trimesh(verts, faces, process=True)
    if largest_component_only:
        parts = mesh.split(only_watertight=False)
        if len(parts) > 1:
            mesh = max(parts, key=lambda m: len(m.faces))
    if max_faces and len(mesh.faces) > max_faces:
        mesh = mesh.simplify_quadric_decimation(face_count=int(max_faces))
    if mesh.volume < 0:
        mesh.invert()
    v = np.asarray(mesh.vertices, dtype=np.float32)
    f = np.asarray(mesh.faces, dtype=np.int32)
    # normals from the final winding on a fresh object (split / invert can leave stale cached normals)
    n = np.asarray(trimesh.Trimesh(v, f, process=False).vertex_normals, dtype=np.float32)
    colors = None
    if vertex_colors and len(v):
        with torch.no_grad():
            cols = []
            pts = torch.as_tensor(v, device=device)
            for s in range(0, len(v), 1 << 18):
                cols.append(query(pts[s:s + (1 << 18)])[1][:, :3].float().cpu())
            colors = torch.cat(cols).clamp(0, 1).numpy()
    return MeshResult(v, f, n, colors)
