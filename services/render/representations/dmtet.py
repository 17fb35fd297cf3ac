"""DMTet (scene kind "dmtet"): a deformable tetrahedral grid holding a signed distance field, turned into
a triangle mesh by differentiable marching tetrahedra at every render and drawn by the mesh rasteriser.

Grid: the cube [-extent, extent]^3 split into r^3 cells (r = resolution), each cell into the 6
tetrahedra of the Kuhn (Freudenthal) triangulation, which tiles the grid conformingly. Vertex (i, j, k)
sits at -extent + (i, j, k) * h (h = 2 extent / r) along (x, y, z); its flat index is
(i * (r + 1) + j) * (r + 1) + k. The tetrahedra are never stored for the whole grid: each render finds
the cells whose 8 corners do not all share the SDF sign and builds only their tetrahedra from the
per-cell corner table CELL_TETS, so memory follows the surface (about r^2 cells) rather than the volume
(6 r^3 tetrahedra, 13 GB of int32 indices at r = 512). `tet_grid` materialises the full grid for small r.

Parameters (OptimizerConfig groups):
  "sdf":     (V,) signed distance at each grid vertex, world units, negative inside.
  "deform":  (V, 3) raw offsets; a vertex moves by (h / 2) tanh(deform), at most half a cell per axis.
  "texture": (V, 3) optional per-grid-vertex sRGB colour (color_field=True), interpolated onto the
             extracted vertices like positions, then rendered unlit. Without it "rgb" is a grey albedo
             (0.7) with Lambertian headlight shading (ambient 0.3), so images show the shape.
V = (r + 1)^3. Memory at r = 512: 135M vertices; sdf + deform are 2.2 GB float32 (x3 with Adam).

Marching tetrahedra: in each tetrahedron the surface crosses the edges whose endpoint SDFs differ in
sign (inside = sdf < 0) at p = p_a + (p_b - p_a) s_a / (s_a - s_b), differentiable w.r.t. SDF and
positions. Crossing points on a shared grid edge are merged, so the mesh is connected. The triangle
table is built (at import) for positively oriented tetrahedra and every grid tetrahedron is stored
positively oriented, so all triangles are counter-clockwise seen from outside (sdf > 0).

Outputs: rgb, alpha, depth, normal_camera, normal_world, triangle_id (indices into the mesh extracted
for that render), roughness / metallic (the constants 0.5 / 0 that shading "pbr" uses). No "uv": the mesh changes every render, so there is no UV atlas.
Regularisers: "sdf_sign" (nvdiffrec's: binary cross-entropy between sigmoid(s_a) and [s_b > 0], and vice
versa, over grid edges whose endpoint signs differ; suppresses floaters and internal surfaces),
"laplacian" and "normal_consistency" on the extracted mesh.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from services.common.errors import InvalidArgument
from services.core.camera_batch import CameraBatch
from services.render.representations import init_values as iv
from services.render.representations import mesh_io
from services.render.representations.base import Representation, SceneKind
from services.render.representations.dmtet_marching import (TET_EDGES, TetMesh, active_cells, cell_tets, grid_vertices,
                                                             marching_tets)
from services.render.representations.dmtet_sdf import mesh_sdf_grid
from services.render.representations.mesh import BACKENDS, MESH_INIT_KEYS, texture_size_from_init
from services.render.representations.mesh_render import (laplacian_energy, normal_consistency, render_triangles,
                                                         unique_edges)
from services.render.representations.mesh_io import MeshData
from services.render.representations.mesh_nvdiffrast import get_rasterizer
from services.render.representations.mesh_raster import edge_neighbors

GREY = 0.7


def initial_sdf(resolution: int, extent: float, *, sphere_radius: float | None = None,
                mesh: MeshData | tuple | None = None, max_triangles: int = mesh_io.DEFAULT_MAX_TRIANGLES,
                band_cells: float = 4.0) -> tuple[torch.Tensor, tuple[np.ndarray, np.ndarray | None] | None]:
    """The SDF (V,) a DMTet grid starts from (DmtetScene.create's rules: a mesh's signed distance, truncated
    at band_cells cells (mesh_sdf_grid), else a sphere of sphere_radius, default extent / 2) and, for a mesh,
    (its vertices, vertex colours or None)."""
    if mesh is not None:
        if isinstance(mesh, MeshData):
            v, f, colours = mesh.vertices, mesh.faces, mesh.vertex_colors
        else:
            (v, f), colours = mesh[:2], (mesh[2] if len(mesh) > 2 else None)
        v, f, _ = mesh_io.validate_mesh(v, f, max_triangles)
        return mesh_sdf_grid(torch.as_tensor(v), torch.as_tensor(f), resolution, extent, band_cells), (v, colours)
    radius = float(sphere_radius) if sphere_radius else extent / 2
    if not 0 < radius < extent:
        raise ValueError(f"sphere_radius must be in (0, extent={extent}), got {radius}")
    return grid_vertices(resolution, extent).norm(dim=-1) - radius, None


# --------------------------------------------------------------------------------------------------

class DmtetScene(Representation):
    kind = "dmtet"
    outputs = frozenset({"rgb", "albedo", "alpha", "depth", "normal_camera", "normal_world", "triangle_id",
                         "roughness", "metallic"})
    default_lrs = {"sdf": 1e-3, "deform": 1e-2, "texture": 1e-2}

    def __init__(self, resolution: int = 128, extent: float = 1.2, *, color_field: bool = False,
                 backend: str = "auto"):
        """Placeholder parameters (create() sets the SDF). resolution: cells per side (>= 2); extent: half
        side of the grid cube, world units."""
        super().__init__()
        self._init_grid(resolution, extent, backend)
        n = (self.resolution + 1) ** 3
        self.sdf = nn.Parameter(torch.zeros(n))
        self.colors = nn.Parameter(torch.full((n, 3), 0.5)) if color_field else None

    def _init_grid(self, resolution: int, extent: float, backend: str) -> None:
        """The grid settings and the "deform" parameter (shared with the kinds built on this grid)."""
        if int(resolution) < 2 or resolution > 1024:
            raise ValueError(f"grid resolution must be in [2, 1024], got {resolution}")
        if not extent > 0:
            raise ValueError(f"extent must be > 0, got {extent}")
        self.resolution = int(resolution)
        self.extent = float(extent)
        self.backend_option = backend
        self.deform = nn.Parameter(torch.zeros((self.resolution + 1) ** 3, 3))

    @property
    def cell(self) -> float:
        """Grid spacing h, world units."""
        return 2 * self.extent / self.resolution

    @classmethod
    def create(cls, resolution: int = 128, extent: float = 1.2, *, sphere_radius: float | None = None,
               mesh: MeshData | tuple | None = None, color_field: bool = False, backend: str = "auto",
               max_triangles: int = mesh_io.DEFAULT_MAX_TRIANGLES) -> "DmtetScene":
        """From DmtetInit: resolution (0 = 128), extent (0 = 1.2), and either sphere_radius (SDF of a
        sphere at the origin) or mesh (MeshData or (vertices, faces): its signed distance, see
        mesh_sdf_grid; vertex colours seed the colour field by nearest vertex). Neither: a sphere of
        radius extent / 2."""
        scene = cls(resolution or 128, extent or 1.2, color_field=color_field, backend=backend)
        sdf, source = initial_sdf(scene.resolution, scene.extent, sphere_radius=sphere_radius, mesh=mesh,
                                  max_triangles=max_triangles)
        if color_field and source is not None and source[1] is not None:
            from scipy.spatial import cKDTree

            _, nearest = cKDTree(source[0]).query(grid_vertices(scene.resolution, scene.extent).numpy(), k=1)
            scene.colors.data.copy_(torch.as_tensor(np.asarray(source[1], np.float32)[nearest]))
        scene.sdf.data.copy_(sdf)
        return scene

    def current_sdf(self) -> torch.Tensor:
        """The SDF (V,) at the grid vertices that the surface is extracted from."""
        return self.sdf

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"sdf": [self.sdf], "deform": [self.deform]}
        if self.colors is not None:
            groups["texture"] = [self.colors]
        return groups

    def positions(self, idx: torch.Tensor) -> torch.Tensor:
        """Deformed world positions (K, 3) of grid vertices idx (K,)."""
        n = self.resolution + 1
        ijk = torch.stack([idx // (n * n), (idx // n) % n, idx % n], -1).to(self.deform.dtype)
        base = -self.extent + ijk * self.cell
        return base + 0.5 * self.cell * torch.tanh(self.deform[idx])

    def extract(self) -> TetMesh:
        """The current surface as a mesh (differentiable w.r.t. sdf, deform and colours)."""
        return marching_tets(self.positions, self.current_sdf(), self.resolution, self.colors)

    @property
    def backend(self) -> str:  # type: ignore[override]
        return get_rasterizer(self.backend_option, self.deform.device).name

    def render(self, cameras: CameraBatch, outputs: Collection[str], background: torch.Tensor | None = None, *,
               shading: str | None = None, light_direction: torch.Tensor | None = None,
               environment=None) -> dict[str, torch.Tensor]:
        """Extract, then rasterise. shading None: "unlit" with a colour field, "diffuse" (grey) without;
        "pbr" under environment (pbr.Environment) with the constant materials of mesh_render
        (DEFAULT_ROUGHNESS, DEFAULT_METALLIC: DMTet has no UV atlas for material maps)."""
        self._check_outputs(outputs)
        m = self.extract()
        if shading is None:
            shading = "unlit" if m.colors is not None else "diffuse"
        colours = m.colors if m.colors is not None else torch.full_like(m.vertices, GREY)
        return self._draw(m, cameras, outputs, background, colours, shading=shading, light_direction=light_direction,
                          environment=environment)

    def _check_outputs(self, outputs: Collection[str]) -> None:
        unknown = set(outputs) - self.outputs
        if unknown:
            raise ValueError(f"{self.kind} scenes cannot render {sorted(unknown)}; outputs are {sorted(self.outputs)}")

    def _draw(self, m: TetMesh, cameras: CameraBatch, outputs: Collection[str], background, colours: torch.Tensor,
              **shade) -> dict[str, torch.Tensor]:
        """Rasterise an extracted mesh with per-vertex colours (and render_triangles' shading keywords)."""
        raster = get_rasterizer(self.backend_option, self.deform.device)
        neighbors = edge_neighbors(m.faces) if len(m.faces) else torch.zeros(0, 3, dtype=torch.long)
        return render_triangles(raster, m.vertices, m.faces, neighbors, cameras, outputs, background,
                                vertex_colors=colours, **shade)

    def sdf_sign_loss(self) -> torch.Tensor:
        """nvdiffrec's SDF regulariser over the grid edges whose endpoint signs differ (see module doc)."""
        sdf = self.current_sdf()
        m_edges = self._sign_change_edges(sdf.detach())
        if m_edges.numel() == 0:
            return sdf.sum() * 0
        s0, s1 = sdf[m_edges[:, 0]], sdf[m_edges[:, 1]]
        return (F.binary_cross_entropy_with_logits(s0, (s1 > 0).to(s0)) +
                F.binary_cross_entropy_with_logits(s1, (s0 > 0).to(s1))) / 2

    def _sign_change_edges(self, sdf: torch.Tensor) -> torch.Tensor:
        r = self.resolution
        inside = sdf < 0
        tets = cell_tets(active_cells(inside, r), r)
        e = torch.as_tensor(TET_EDGES, device=tets.device)
        ends = tets[:, e].reshape(-1, 2)
        ends = ends[inside[ends[:, 0]] != inside[ends[:, 1]]]
        n = (r + 1) ** 3
        keys = torch.unique(ends.amin(1) * n + ends.amax(1))
        return torch.stack([keys // n, keys % n], -1)

    def regularizers(self) -> dict[str, "callable"]:
        return self._regularizers(self.extract)

    def _regularizers(self, surface) -> dict[str, "callable"]:
        """The regularisers on the mesh surface() gives (called once per regulariser)."""
        def laplacian(**_):
            m = surface()
            if len(m.faces) == 0:
                return self.deform.sum() * 0
            return laplacian_energy(m.vertices, unique_edges(m.faces))

        def consistency(**_):
            m = surface()
            if len(m.faces) == 0:
                return self.deform.sum() * 0
            return normal_consistency(m.vertices, m.faces, edge_neighbors(m.faces))

        return {"sdf_sign": lambda **_: self.sdf_sign_loss(), "laplacian": laplacian,
                "normal_consistency": consistency}

    def after_step(self, step: int, optimizer) -> bool:
        if self.colors is not None:
            with torch.no_grad():
                self.colors.clamp_(0, 1)
        return False

    def mesh_data(self) -> MeshData:
        """The extracted mesh (vertex colours: the colour field, or the grey albedo)."""
        with torch.no_grad():
            m = self.extract()
        if len(m.faces) == 0:
            raise mesh_io.EmptyMeshError("scene", "the SDF has no zero crossing inside the grid: nothing to export")
        verts = m.vertices.cpu().float().numpy()
        colours = m.colors.clamp(0, 1).cpu().float().numpy() if m.colors is not None else np.full_like(verts, GREY)
        return MeshData(verts, m.faces.cpu().numpy(), vertex_colors=colours)

    def export(self, fmt: str, *, scale: float = 1.0, texture_size: int = 0) -> bytes:
        """The extracted mesh as "glb", "obj_zip" or "ply" with vertex colours (no UV texture)."""
        return mesh_io.export_mesh(self.mesh_data(), fmt, scale or 1.0)

    def config(self) -> dict:
        return dict(resolution=self.resolution, extent=self.extent, color_field=self.colors is not None,
                    backend=self.backend_option)

    @classmethod
    def from_config(cls, config: dict) -> "DmtetScene":
        return cls(**config)


RESOLUTIONS = (32, 64, 128, 256, 512)  # grid resolutions CreateScene accepts (Describe's dmtet_resolutions)
EXPRESSION_INIT_KEYS = ("expressions", "code_dim", "max_offset")    # kind dmtet_expression (dmtet_expression.py)
DMTET_INIT_KEYS = ("grid_resolution", "extent", "texture_size", "sphere_radius", "mesh", "mesh_asset")
OPTIONS = {"backend": "auto | torch | nvdiffrast", "color_field": "true: a per-vertex colour field",
           "grid_resolution": "for asset init (128)", "extent": "for asset init (1.2)"}


def _resolution(value: int, field: str) -> int:
    if value not in RESOLUTIONS:
        raise InvalidArgument(field, f"must be one of {list(RESOLUTIONS)}, got {value}")
    return value


def _no_expressions(init: Mapping[str, Any]) -> None:
    """DmtetInit's expression fields belong to kind dmtet_expression: plain dmtet takes only 0 there."""
    for key in EXPRESSION_INIT_KEYS:
        value = init.get(key)
        if value not in (None, 0):
            raise InvalidArgument(f"dmtet.{key}", f"must be 0 for kind dmtet (it is for kind dmtet_expression), "
                                                  f"got {value}")


def mesh_init_arg(init: Mapping[str, Any], extent: float, limits) -> tuple[float | None, tuple | MeshData | None]:
    """DmtetInit's shape, validated: (sphere_radius or None, mesh (vertices, faces) / MeshData or None)."""
    radius = None
    if init.get("sphere_radius") is not None:
        radius = iv.number(init, "sphere_radius", "dmtet.sphere_radius", extent / 2, low=0, high=extent,
                           open_low=True, open_high=True)
    mesh = init.get("mesh")
    mesh_arg = None
    if mesh:
        iv.check_keys(mesh, MESH_INIT_KEYS, "dmtet.mesh")
        v, f, _ = mesh_io.validate_mesh(mesh.get("vertices"), mesh.get("faces"), limits.max_triangles, "dmtet.mesh")
        mesh_arg = (v, f)
    elif init.get("mesh_asset") is not None:
        data, fmt = _mesh_asset(init["mesh_asset"])
        mesh_arg = mesh_io.load_mesh(data, fmt or None, limits.max_triangles)
    return radius, mesh_arg


def _create(init: Mapping[str, Any], seed: int, options: Mapping[str, str], limits) -> DmtetScene:
    iv.check_keys(init, DMTET_INIT_KEYS + EXPRESSION_INIT_KEYS, "dmtet")
    _no_expressions(init)
    resolution = _resolution(iv.integer(init, "grid_resolution", "dmtet.grid_resolution", 128), "dmtet.grid_resolution")
    extent = iv.number(init, "extent", "dmtet.extent", 1.2, low=0, open_low=True)
    texture_size_from_init(init, "dmtet.texture_size")
    radius, mesh_arg = mesh_init_arg(init, extent, limits)
    return DmtetScene.create(resolution, extent, sphere_radius=radius, mesh=mesh_arg,
                             color_field=iv.flag(options, "color_field"),
                             backend=iv.choice(options, "backend", BACKENDS, "auto"), max_triangles=limits.max_triangles)


def dmtet_bytes(resolution: int, color_field: bool = False) -> int:
    """memory_bytes() of a DmtetScene: sdf (n,), deform (n, 3) and colours (n, 3), n = (r + 1)^3."""
    return (resolution + 1) ** 3 * (1 + 3 + (3 if color_field else 0)) * 4


def _init_bytes(init: Mapping[str, Any], options: Mapping[str, str], limits) -> int:
    iv.check_keys(init, DMTET_INIT_KEYS + EXPRESSION_INIT_KEYS, "dmtet")
    _no_expressions(init)
    resolution = _resolution(iv.integer(init, "grid_resolution", "dmtet.grid_resolution", 128), "dmtet.grid_resolution")
    texture_size_from_init(init, "dmtet.texture_size")
    return dmtet_bytes(resolution, iv.flag(options, "color_field"))


def _mesh_asset(value) -> tuple[bytes, str]:
    """init["mesh_asset"]: (bytes, format) with format glb | obj_zip | ply | "" (detected)."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), ""
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], (bytes, bytearray)):
        return bytes(value[0]), str(value[1] or "")
    raise InvalidArgument("dmtet.mesh_asset", "give the mesh file as (bytes, format)")


def asset_grid(options: Mapping[str, str]) -> tuple[int, float]:
    """(grid resolution, extent) of a DMTet made from a mesh file: the options grid_resolution (128), extent (1.2)."""
    resolution = _resolution(iv.option_number(options, "grid_resolution", 128, integer_only=True),
                             "options.grid_resolution")
    extent = iv.option_number(options, "extent", 1.2)
    if not extent > 0:
        raise InvalidArgument("options.extent", f"must be > 0, got {extent}")
    return resolution, extent


def _from_asset(data: bytes, fmt: str, options: Mapping[str, str]) -> DmtetScene:
    m = mesh_io.load_mesh(data, fmt or None, mesh_io.DEFAULT_MAX_TRIANGLES)
    resolution, extent = asset_grid(options)
    return DmtetScene.create(resolution, extent, mesh=m, color_field=iv.flag(options, "color_field"),
                             backend=iv.choice(options, "backend", BACKENDS, "auto"))


SCENE_KIND = SceneKind(DmtetScene, _create, _from_asset, OPTIONS, ("glb", "obj_zip", "ply", "npz"),
                       ("sdf_sign", "laplacian", "normal_consistency"), accelerated_backend="nvdiffrast",
                       init_bytes=_init_bytes)
