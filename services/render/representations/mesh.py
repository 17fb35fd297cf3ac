"""Triangle meshes with a UV texture or vertex colours (scene kind "mesh").

Parameters (OptimizerConfig group names):
  "vertices": (V, 3) world positions.
  "texture":  the UV texture (T, T, 3) sRGB, stored raw (not as logits) and kept in [0, 1] by
              projection: after_step() clamps it in place, and rendering clamps too (torch.clamp passes
              gradients at the bounds), so Adam steps and back-projected writes see the same values.
              A mesh without UVs has per-vertex colours (V, 3) in this group instead.
  "roughness", "metallic": optional PBR material maps (T, T, 1) each, linear in [0, 1], on the same UVs
              (materials=True; MeshInit materials / roughness / metallic), clamped like the texture.
              Outputs "roughness" / "metallic" sample them (constants 0.5 / 0 without them); shading
              "pbr" uses them; GLB export writes them as glTF metallicRoughness (G roughness, B metallic).
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
from services.render.representations.mesh_render import (DEFAULT_METALLIC, DEFAULT_ROUGHNESS, edge_length_energy,
                                                         laplacian_energy, normal_consistency, render_triangles,
                                                         unique_edges)
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
    outputs = frozenset(ALL_OUTPUTS) | {"albedo", "texture_seen", "roughness", "metallic"}
    default_lrs = {"vertices": 1e-3, "texture": 1e-2, "roughness": 1e-2, "metallic": 1e-2}

    def __init__(self, num_vertices: int, num_faces: int, num_uvs: int = 0, texture_size: int = 0, *,
                 flat_normals: bool = False, max_triangles: int = DEFAULT_MAX_TRIANGLES, backend: str = "auto",
                 materials: bool = False):
        """Placeholder parameters of the given sizes (create(), from_asset() or load_state_tensors fill
        them). texture_size > 0 means a UV texture (num_uvs UV vertices), else vertex colours;
        materials (textured only) adds the roughness and metallic maps."""
        super().__init__()
        if materials and texture_size <= 0:
            raise MeshShapeError("mesh.materials", "material maps need a UV texture (uvs, a texture or texture_size)")
        self.roughness_map = self.metallic_map = None
        if materials:
            self.roughness_map = nn.Parameter(torch.full((texture_size, texture_size, 1), DEFAULT_ROUGHNESS))
            self.metallic_map = nn.Parameter(torch.full((texture_size, texture_size, 1), DEFAULT_METALLIC))
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
               uv_faces=None, materials: bool = False, roughness=None, metallic=None) -> "MeshScene":
        """From MeshInit fields: vertices (V, 3), faces (F, 3) CCW from outside, optional uvs (V, 2) in
        [0, 1] with v down (per vertex; or (U, 2) with uv_faces (F, 3)), optional texture (3, T, T) or
        uint8 (T, T, 3) (resampled to texture_size), texture_size (0 = 1024 when uvs or a texture are
        given; without either, 0 means vertex colours). Without uvs and with a texture
        wanted, xatlas unwraps the mesh. vertex_colors (V, 3) in [0, 1] for an untextured mesh (grey
        0.5 by default). materials: add roughness / metallic maps, each from `roughness` / `metallic`: a
        number (default 0.5 / 0.0) or a (T', T') map in [0, 1] (resampled); giving either implies
        materials. Raises MeshError subclasses for bad input."""
        materials = bool(materials) or roughness is not None or metallic is not None
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
                        backend=backend, materials=materials)
            if materials:
                for name, value, param in (("roughness", roughness, scene.roughness_map),
                                           ("metallic", metallic, scene.metallic_map)):
                    if value is not None:
                        param.data.copy_(_material_map(value, size, f"mesh.{name}"))
            scene.uvs.copy_(torch.as_tensor(uv))
            scene.uv_faces.copy_(torch.as_tensor(uvf))
            if tex is not None:
                t = torch.as_tensor(tex)
                if t.shape[0] != t.shape[1]:
                    t = torch.nn.functional.interpolate(t.permute(2, 0, 1)[None], size=(size, size), mode="bilinear",
                                                        align_corners=False)[0].permute(1, 2, 0)
                scene.texture.data.copy_(resize_texture(t, size))
        else:
            if materials:
                raise MeshShapeError("mesh.materials", "material maps need a UV texture (uvs, a texture or texture_size)")
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
                          vertex_colors=m.vertex_colors, roughness=m.roughness, metallic=m.metallic, **kw)

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
                          max_triangles=max_triangles, roughness=m.roughness if m.texture is not None else None,
                          metallic=m.metallic if m.texture is not None else None, **kw)

    # ---------------------------------------------------------------- Representation

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"vertices": [self.vertices],
                  "texture": [self.texture if self.texture is not None else self.vertex_colors]}
        if self.roughness_map is not None:
            groups["roughness"], groups["metallic"] = [self.roughness_map], [self.metallic_map]
        return groups

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
               shading: str = "unlit", light_direction: torch.Tensor | None = None,
               environment=None) -> dict[str, torch.Tensor]:
        unknown = set(outputs) - self.outputs
        if unknown:
            raise ValueError(f"mesh scenes cannot render {sorted(unknown)}; outputs are {sorted(self.outputs)}")
        topo = self.topology()
        return render_triangles(self._rasterizer(), self.vertices, self.faces, topo["neighbors"], cameras, outputs,
                                background, vertex_colors=self.vertex_colors, texture=self.texture, uvs=self.uvs,
                                uv_faces=self.uv_faces, seen=self.texture_seen, flat_normals=self.flat_normals,
                                shading=shading, light_direction=light_direction, roughness=self.roughness_map,
                                metallic=self.metallic_map, environment=environment)

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
            for m in (self.roughness_map, self.metallic_map):
                if m is not None:
                    m.clamp_(0, 1)
        return False

    def mesh_data(self) -> MeshData:
        """The current mesh as numpy arrays."""
        to = lambda t: None if t is None else t.detach().cpu().float().numpy()  # noqa: E731
        return MeshData(to(self.vertices), self.faces.cpu().numpy(), to(self.uvs),
                        None if self.uv_faces is None else self.uv_faces.cpu().numpy(),
                        None if self.texture is None else to(self.texture.clamp(0, 1)),
                        None if self.vertex_colors is None else to(self.vertex_colors.clamp(0, 1)),
                        None if self.roughness_map is None else to(self.roughness_map.clamp(0, 1))[..., 0],
                        None if self.metallic_map is None else to(self.metallic_map.clamp(0, 1))[..., 0])

    def export(self, fmt: str, *, scale: float = 1.0, texture_size: int = 0) -> bytes:
        """"glb" (baseColorTexture, +Y up), "obj_zip" (mesh.obj + mesh.mtl + texture.png) or "ply"
        (vertex colours; a texture is summarised per vertex). scale multiplies positions (0 = 1);
        texture_size resamples the texture (0 = as is)."""
        m = self.mesh_data()
        if texture_size and m.texture is not None and texture_size != m.texture.shape[0]:
            m.texture = resize_texture(torch.as_tensor(m.texture), texture_size).numpy()
            for name in ("roughness", "metallic"):
                if getattr(m, name) is not None:
                    setattr(m, name, resize_texture(torch.as_tensor(getattr(m, name))[..., None], texture_size)[..., 0].numpy())
        return mesh_io.export_mesh(m, fmt, scale or 1.0)

    def config(self) -> dict:
        return dict(num_vertices=self.vertices.shape[0], num_faces=self.faces.shape[0],
                    num_uvs=0 if self.uvs is None else self.uvs.shape[0],
                    texture_size=0 if self.texture is None else self.texture.shape[0],
                    flat_normals=self.flat_normals, max_triangles=self.max_triangles, backend=self.backend_option,
                    materials=self.roughness_map is not None)

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
MESH_INIT_KEYS = ("vertices", "faces", "uvs", "texture", "texture_size", "materials", "roughness", "metallic")
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
                            flat_normals=iv.flag(options, "flat_normals"), **_material_init(init, "mesh"))


def _material_init(init: Mapping[str, Any], field: str) -> dict:
    """materials / roughness / metallic of a MeshInit, checked: numbers in [0, 1] (in process also
    (T, T) maps)."""
    out = {"materials": bool(init.get("materials", False))}
    for name in ("roughness", "metallic"):
        if init.get(name) is not None and np.ndim(init[name]) > 0:
            out[name] = init[name]        # an in-process (T, T) map, checked by create()
        elif init.get(name) is not None:
            out[name] = iv.number(init, name, f"{field}.{name}", 0.0, low=0, high=1)
    return out


def _material_map(value, size: int, field: str) -> torch.Tensor:
    """A number or a (T', T') map in [0, 1] -> (size, size, 1) float32."""
    a = np.asarray(value, dtype=np.float32)
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise MeshShapeError(field, "must be finite and in [0, 1]")
    if a.ndim == 0:
        return torch.full((size, size, 1), float(a))
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise MeshShapeError(field, f"expected a number or a square (T, T) map, got {list(a.shape)}")
    return resize_texture(torch.as_tensor(a)[..., None], size)


def mesh_bytes(num_vertices: int, num_faces: int, texture_size: int = 0, num_uvs: int = 0,
               materials: bool = False) -> int:
    """memory_bytes() of a MeshScene of these sizes (texture_size 0 = vertex colours)."""
    common = num_vertices * 3 * 4 + num_faces * 3 * 8 + 4
    if texture_size <= 0:
        return common + num_vertices * 3 * 4
    return common + texture_size * texture_size * (3 + 1 + (2 if materials else 0)) * 4 + num_uvs * 2 * 4 + num_faces * 3 * 8


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
    materials = bool(init.get("materials")) or init.get("roughness") is not None or init.get("metallic") is not None
    return mesh_bytes(_rows(init, "vertices"), faces, size, uvs, materials and size > 0)


def _from_asset(data: bytes, fmt: str, options: Mapping[str, str]) -> MeshScene:
    return MeshScene.from_asset(data, fmt or None, backend=iv.choice(options, "backend", BACKENDS, "auto"))


SCENE_KIND = SceneKind(MeshScene, _create, _from_asset, OPTIONS, ("glb", "obj_zip", "ply", "npz"),
                       ("laplacian", "normal_consistency", "edge_length"), accelerated_backend="nvdiffrast",
                       init_bytes=_init_bytes)
