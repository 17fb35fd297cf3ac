"""Triangle meshes with a UV texture or vertex colours (scene kind "mesh").

Parameters (OptimizerConfig group names):
  "vertices": (V, 3) world positions.
  "texture":  the UV texture (T, T, 3) sRGB, stored raw (not as logits) and kept in [0, 1] by
              projection: after_step() clamps it in place, and rendering clamps too (torch.clamp passes
              gradients at the bounds), so Adam steps and back-projected writes see the same values.
              A mesh without UVs has per-vertex colours (V, 3) in this group instead.
Buffers: faces (F, 3) CCW from outside; for textured meshes uvs (U, 2) (v down) and uv_faces (F, 3), a
separate UV topology (seams do not split geometry vertices), and texture_seen (T, T) (texels written
by back-projection, the "texture_seen" output).

Outputs: rgb (unlit albedo, or "diffuse" shading, composited over the background and anti-aliased at
silhouettes), alpha (anti-aliased coverage), depth (camera z, alpha-normalised), normal_camera /
normal_world (interpolated vertex normals, or face normals with flat_normals; alpha-weighted across
anti-aliased silhouette pixels), uv, triangle_id, texture_seen.

Input meshes are validated (mesh_io.validate_mesh): empty meshes, faces out of range, NaN vertices and
meshes above max_triangles are refused with MeshError subclasses (ValueError + INVALID_ARGUMENT).
Non-manifold, open or inconsistently wound meshes are accepted; `report` (a MeshReport) counts their
problem edges and create() logs a warning. They render as they are (both triangle sides are drawn);
normal_consistency skips edges that are not shared by exactly two triangles.
"""

from __future__ import annotations

import logging
from typing import Any, Collection, Mapping

import numpy as np
import torch
from torch import nn

from services.core.camera_batch import CameraBatch
from services.render.representations import mesh_io
from services.common.errors import InvalidArgument
from services.render.representations import init_values as iv
from services.render.representations.base import ALL_OUTPUTS, Representation, SceneKind
from services.render.representations.mesh_io import DEFAULT_MAX_TRIANGLES, MeshData, MeshReport, MeshShapeError
from services.render.representations.mesh_nvdiffrast import get_rasterizer
from services.render.representations.mesh_raster import edge_neighbors
from services.render.representations.mesh_render import (edge_length_energy, laplacian_energy, normal_consistency,
                                                         render_triangles, unique_edges)
from services.render.representations.texture import resize_texture, unwrap_uv

log = logging.getLogger(__name__)

DEFAULT_TEXTURE_SIZE = 1024


# --------------------------------------------------------------------------------------------------

def _texture_array(texture) -> np.ndarray:
    """MeshInit texture: float/uint8 (3, T, T), uint8 (T, T, 3) (or float (T, T, 3)) -> float32 (H, W, 3)."""
    t = np.asarray(texture)
    if t.ndim != 3 or 3 not in (t.shape[0], t.shape[-1]):
        raise MeshShapeError("mesh.texture", f"expected (3, T, T) or (T, T, 3), got {tuple(t.shape)}")
    if t.shape[0] == 3 and not (t.dtype == np.uint8 and t.shape[-1] == 3):
        t = np.transpose(t, (1, 2, 0))
    t = t.astype(np.float32) / 255.0 if t.dtype == np.uint8 else t.astype(np.float32)
    if not np.isfinite(t).all():
        raise mesh_io.NonFiniteMeshError("mesh.texture", "texture has NaN or infinite values")
    return np.clip(t, 0, 1)


class MeshScene(Representation):
    kind = "mesh"
    outputs = frozenset(ALL_OUTPUTS) | {"albedo", "texture_seen"}
    default_lrs = {"vertices": 1e-3, "texture": 1e-2}

    def __init__(self, num_vertices: int, num_faces: int, num_uvs: int = 0, texture_size: int = 0, *,
                 flat_normals: bool = False, max_triangles: int = DEFAULT_MAX_TRIANGLES, backend: str = "auto"):
        """Placeholder parameters of the given sizes (create(), from_asset() or load_state_tensors fill
        them). texture_size > 0 means a UV texture (num_uvs UV vertices), else vertex colours."""
        super().__init__()
        self.flat_normals = bool(flat_normals)
        self.max_triangles = int(max_triangles)
        self.backend_option = backend
        self.vertices = nn.Parameter(torch.zeros(num_vertices, 3))
        self.register_buffer("faces", torch.zeros(num_faces, 3, dtype=torch.long))
        self.register_buffer("edge_length_ref", torch.zeros(()))
        if texture_size > 0:
            self.texture = nn.Parameter(torch.full((texture_size, texture_size, 3), 0.5))
            self.register_buffer("uvs", torch.zeros(num_uvs, 2))
            self.register_buffer("uv_faces", torch.zeros(num_faces, 3, dtype=torch.long))
            self.register_buffer("texture_seen", torch.zeros(texture_size, texture_size))
            self.vertex_colors = None
        else:
            self.texture = None
            self.uvs = self.uv_faces = self.texture_seen = None
            self.vertex_colors = nn.Parameter(torch.full((num_vertices, 3), 0.5))
        self.report: MeshReport | None = None
        self._topology: dict | None = None

    # ---------------------------------------------------------------- construction

    @classmethod
    def create(cls, vertices, faces, uvs=None, texture=None, texture_size: int = 0, *, vertex_colors=None,
               flat_normals: bool = False, max_triangles: int = DEFAULT_MAX_TRIANGLES, backend: str = "auto",
               uv_faces=None) -> "MeshScene":
        """From MeshInit fields: vertices (V, 3), faces (F, 3) CCW from outside, optional uvs (V, 2) in
        [0, 1] with v down (per vertex; or (U, 2) with uv_faces (F, 3)), optional texture (3, T, T) or
        uint8 (T, T, 3) (resampled to texture_size), texture_size (0 = 1024 when uvs or a texture are
        given; without either, 0 means vertex colours). Without uvs and with a texture
        wanted, xatlas unwraps the mesh. vertex_colors (V, 3) in [0, 1] for an untextured mesh (grey
        0.5 by default). Raises MeshError subclasses for bad input."""
        v, f, report = mesh_io.validate_mesh(vertices, faces, max_triangles)
        tex = _texture_array(texture) if texture is not None else None
        size = int(texture_size)
        if not 0 <= size <= MAX_TEXTURE_SIZE:  # also a textured asset's own side
            raise MeshShapeError("mesh.texture_size", f"must be in [0, {MAX_TEXTURE_SIZE}], got {size}")
        if size == 0 and (uvs is not None or tex is not None):
            size = DEFAULT_TEXTURE_SIZE
        if size > 0:
            if uvs is None:
                uv, uvf = unwrap_uv(v, f, size)
            else:
                uv = np.asarray(uvs, dtype=np.float32)
                uvf = f if uv_faces is None else np.asarray(uv_faces, dtype=np.int64)
                if uv.ndim != 2 or uv.shape[1] != 2 or (uv_faces is None and uv.shape[0] != v.shape[0]):
                    raise MeshShapeError("mesh.uvs", f"expected ({v.shape[0]}, 2) UVs, got {tuple(uv.shape)}")
                if uvf.shape != f.shape or uvf.min() < 0 or uvf.max() >= uv.shape[0]:
                    raise mesh_io.FaceIndexError("mesh.uvs", "UV faces do not match the faces or index out of range")
                if not np.isfinite(uv).all():
                    raise mesh_io.NonFiniteMeshError("mesh.uvs", "UVs have NaN or infinite values")
            scene = cls(len(v), len(f), len(uv), size, flat_normals=flat_normals, max_triangles=max_triangles,
                        backend=backend)
            scene.uvs.copy_(torch.as_tensor(uv))
            scene.uv_faces.copy_(torch.as_tensor(uvf))
            if tex is not None:
                t = torch.as_tensor(tex)
                if t.shape[0] != t.shape[1]:
                    t = torch.nn.functional.interpolate(t.permute(2, 0, 1)[None], size=(size, size), mode="bilinear",
                                                        align_corners=False)[0].permute(1, 2, 0)
                scene.texture.data.copy_(resize_texture(t, size))
        else:
            scene = cls(len(v), len(f), flat_normals=flat_normals, max_triangles=max_triangles, backend=backend)
            if vertex_colors is not None:
                c = np.asarray(vertex_colors, dtype=np.float32)
                if c.shape != v.shape:
                    raise MeshShapeError("mesh.vertex_colors", f"expected {v.shape}, got {c.shape}")
                scene.vertex_colors.data.copy_(torch.as_tensor(np.clip(c, 0, 1)))
        scene.vertices.data.copy_(torch.as_tensor(v))
        scene.faces.copy_(torch.as_tensor(f))
        scene.report = report
        scene._reset_topology()
        scene.edge_length_ref.fill_(float(scene._edge_lengths().detach().mean()))
        if not report.manifold or not report.watertight:
            log.warning("mesh accepted with topology problems: %s", report.as_dict())
        return scene

    @classmethod
    def from_mesh_data(cls, m: MeshData, **kw) -> "MeshScene":
        return cls.create(m.vertices, m.faces, uvs=m.uvs, texture=m.texture, uv_faces=m.uv_faces,
                          vertex_colors=m.vertex_colors, **kw)

    @classmethod
    def from_asset(cls, data: bytes, fmt: str | None = None, *, max_triangles: int = DEFAULT_MAX_TRIANGLES,
                   texture_size: int = 0, **kw) -> "MeshScene":
        """From GLB / OBJ zip / PLY bytes (fmt None: detected). A textured file keeps its UVs and texture
        (at the file's texture side, or resampled to texture_size when > 0); a PLY or untextured file
        gets vertex colours."""
        m = mesh_io.load_mesh(data, fmt, max_triangles)
        if m.texture is not None:
            texture_size = texture_size or m.texture.shape[0]
        return cls.create(m.vertices, m.faces, uvs=m.uvs, texture=m.texture, uv_faces=m.uv_faces,
                          texture_size=texture_size if m.texture is not None else 0, vertex_colors=m.vertex_colors,
                          max_triangles=max_triangles, **kw)

    # ---------------------------------------------------------------- Representation

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"vertices": [self.vertices],
                "texture": [self.texture if self.texture is not None else self.vertex_colors]}

    def _reset_topology(self) -> None:
        self._topology = None

    def topology(self) -> dict[str, torch.Tensor]:
        """Cached per faces: neighbors (F, 3) across each edge and unique edges (E, 2)."""
        if self._topology is None or self._topology["faces"] is not self.faces:
            self._topology = dict(faces=self.faces, neighbors=edge_neighbors(self.faces),
                                  edges=unique_edges(self.faces))
        return self._topology

    def _rasterizer(self):
        return get_rasterizer(self.backend_option, self.vertices.device)

    @property
    def backend(self) -> str:  # type: ignore[override]
        return self._rasterizer().name

    def render(self, cameras: CameraBatch, outputs: Collection[str], background: torch.Tensor | None = None, *,
               shading: str = "unlit", light_direction: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        unknown = set(outputs) - self.outputs
        if unknown:
            raise ValueError(f"mesh scenes cannot render {sorted(unknown)}; outputs are {sorted(self.outputs)}")
        topo = self.topology()
        return render_triangles(self._rasterizer(), self.vertices, self.faces, topo["neighbors"], cameras, outputs,
                                background, vertex_colors=self.vertex_colors, texture=self.texture, uvs=self.uvs,
                                uv_faces=self.uv_faces, seen=self.texture_seen, flat_normals=self.flat_normals,
                                shading=shading, light_direction=light_direction)

    def _edge_lengths(self) -> torch.Tensor:
        e = self.topology()["edges"]
        return (self.vertices[e[:, 0]] - self.vertices[e[:, 1]]).norm(dim=-1)

    def regularizers(self) -> dict[str, "callable"]:
        """"laplacian" (uniform Laplacian energy, world units^2), "normal_consistency" (1 - cos between
        adjacent face normals), "edge_length" (mean (|e| - target)^2; params: target, default the mean
        edge length at creation)."""
        topo = self.topology

        def laplacian(**_):
            return laplacian_energy(self.vertices, topo()["edges"])

        def consistency(**_):
            return normal_consistency(self.vertices, self.faces, topo()["neighbors"])

        def edge_length(target: float | None = None, **_):
            return edge_length_energy(self.vertices, topo()["edges"],
                                      self.edge_length_ref if target is None else target)

        return {"laplacian": laplacian, "normal_consistency": consistency, "edge_length": edge_length}

    def after_step(self, step: int, optimizer) -> bool:
        with torch.no_grad():
            if self.texture is not None:
                self.texture.clamp_(0, 1)
            else:
                self.vertex_colors.clamp_(0, 1)
        return False

    def mesh_data(self) -> MeshData:
        """The current mesh as numpy arrays."""
        to = lambda t: None if t is None else t.detach().cpu().float().numpy()  # noqa: E731
        return MeshData(to(self.vertices), self.faces.cpu().numpy(), to(self.uvs),
                        None if self.uv_faces is None else self.uv_faces.cpu().numpy(),
                        None if self.texture is None else to(self.texture.clamp(0, 1)),
                        None if self.vertex_colors is None else to(self.vertex_colors.clamp(0, 1)))

    def export(self, fmt: str, *, scale: float = 1.0, texture_size: int = 0) -> bytes:
        """"glb" (baseColorTexture, +Y up), "obj_zip" (mesh.obj + mesh.mtl + texture.png) or "ply"
        (vertex colours; a texture is summarised per vertex). scale multiplies positions (0 = 1);
        texture_size resamples the texture (0 = as is)."""
        m = self.mesh_data()
        if texture_size and m.texture is not None and texture_size != m.texture.shape[0]:
            m.texture = resize_texture(torch.as_tensor(m.texture), texture_size).numpy()
        return mesh_io.export_mesh(m, fmt, scale or 1.0)

    def config(self) -> dict:
        return dict(num_vertices=self.vertices.shape[0], num_faces=self.faces.shape[0],
                    num_uvs=0 if self.uvs is None else self.uvs.shape[0],
                    texture_size=0 if self.texture is None else self.texture.shape[0],
                    flat_normals=self.flat_normals, max_triangles=self.max_triangles, backend=self.backend_option)

    @classmethod
    def from_config(cls, config: dict) -> "MeshScene":
        c = dict(config)
        return cls(c.pop("num_vertices"), c.pop("num_faces"), c.pop("num_uvs", 0), c.pop("texture_size", 0), **c)

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_state_tensors(tensors)
        self._reset_topology()
        v, f = self.vertices.detach().cpu().numpy(), self.faces.cpu().numpy()
        self.report = mesh_io.mesh_report(v, f) if len(f) else None


BACKENDS = ("auto", "torch", "nvdiffrast")
MESH_INIT_KEYS = ("vertices", "faces", "uvs", "texture", "texture_size")
MAX_TEXTURE_SIZE = 8192
OPTIONS = {"backend": "auto | torch | nvdiffrast", "flat_normals": "true: face normals"}


def texture_size_from_init(init: Mapping[str, Any], field: str) -> int:
    """init["texture_size"] in [0, MAX_TEXTURE_SIZE] (0 = the kind's default)."""
    return iv.integer(init, "texture_size", field, 0, low=0, high=MAX_TEXTURE_SIZE)


def _create(init: Mapping[str, Any], seed: int, options: Mapping[str, str], limits) -> MeshScene:
    iv.check_keys(init, MESH_INIT_KEYS, "mesh")
    if init.get("vertices") is None or init.get("faces") is None:
        raise InvalidArgument("mesh.vertices", "a mesh needs vertices and faces (or create it from an asset)")
    return MeshScene.create(init["vertices"], init["faces"], uvs=init.get("uvs"), texture=init.get("texture"),
                            texture_size=texture_size_from_init(init, "mesh.texture_size"),
                            max_triangles=limits.max_triangles, backend=iv.choice(options, "backend", BACKENDS, "auto"),
                            flat_normals=iv.flag(options, "flat_normals"))


def mesh_bytes(num_vertices: int, num_faces: int, texture_size: int = 0, num_uvs: int = 0) -> int:
    """memory_bytes() of a MeshScene of these sizes (texture_size 0 = vertex colours)."""
    common = num_vertices * 3 * 4 + num_faces * 3 * 8 + 4
    if texture_size <= 0:
        return common + num_vertices * 3 * 4
    return common + texture_size * texture_size * (3 + 1) * 4 + num_uvs * 2 * 4 + num_faces * 3 * 8


def _rows(values: Mapping[str, Any], key: str) -> int:
    """The row count of an init array (0 when absent or not an array: create() reports those)."""
    shape = np.shape(values.get(key)) if values.get(key) is not None else ()
    return int(shape[0]) if len(shape) >= 1 else 0


def _init_bytes(init: Mapping[str, Any], options: Mapping[str, str], limits) -> int:
    iv.check_keys(init, MESH_INIT_KEYS, "mesh")
    size = texture_size_from_init(init, "mesh.texture_size")
    faces = _rows(init, "faces")
    if faces > limits.max_triangles:
        raise mesh_io.TooManyTrianglesError("mesh.faces", f"{faces} triangles is above the limit of "
                                            f"{limits.max_triangles}")
    if size == 0 and (init.get("uvs") is not None or init.get("texture") is not None):
        size = DEFAULT_TEXTURE_SIZE
    uvs = _rows(init, "uvs") if init.get("uvs") is not None else 3 * faces  # xatlas: at most 3 per face
    return mesh_bytes(_rows(init, "vertices"), faces, size, uvs)


def _from_asset(data: bytes, fmt: str, options: Mapping[str, str]) -> MeshScene:
    return MeshScene.from_asset(data, fmt or None, backend=iv.choice(options, "backend", BACKENDS, "auto"))


SCENE_KIND = SceneKind(MeshScene, _create, _from_asset, OPTIONS, ("glb", "obj_zip", "ply", "npz"),
                       ("laplacian", "normal_consistency", "edge_length"), accelerated_backend="nvdiffrast",
                       init_bytes=_init_bytes)
