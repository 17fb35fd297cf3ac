"""Expression DMTet (scene kind "dmtet_expression"): ID-to-3D's neural head model. The grid, marching
tetrahedra, deformation and rasteriser are DmtetScene's (dmtet.py); the SDF is a network of the grid
vertex and an expression code instead of a free value per vertex:

  sdf_e(v) = template(v) + max_offset * tanh(f_sdf(hash_sdf(v), code_e))

template (V,): a frozen buffer, set as DmtetScene.create sets its SDF (sphere, mesh or mesh asset);
max_offset (world units) bounds how far an expression may move the surface from it. v is the grid
vertex's undeformed position mapped to [0, 1]^3 (the grid cube). Only vertices in the band
|template| < max_offset + one cell are evaluated by the network (in chunks); outside it the residual
could not change the sign, so those vertices keep the template value and memory follows the band (about
the surface area times the band's width in cells), not the (r + 1)^3 volume.

Networks (HashTransformer): a multiresolution hash grid (hash_grid.py; L levels of F features) read at
the point; tokens: the L per-level features, each linearly projected (own weights per level) to
d_model = 32 (zero initial bias), plus one token for the expression code (code_dim, one learnable code per expression,
linearly projected to d_model); a torch.nn.TransformerEncoder (batch_first, 4 heads, pre-norm, no
dropout); the output is a linear read-out of the code token's final state. The paper (ID-to-3D) says
"hash grid + 4-layer transformer conditioned on a 32-d expression code"; this token layout is ours.
  f_sdf: 4 layers, one output, its read-out layer initialised to ZERO, so a new scene renders exactly
         the template (same alpha and normals as a DmtetScene from the same init).
  f_mat: 3 layers, own hash grid, its own code per expression (the paper's k_exp^a beside the geometry's
         k_exp^n: the texture stages learn them with the geometry frozen); 5 outputs at each extracted mesh vertex
         (deformed world position): albedo (3, sRGB, sigmoid), roughness and metallic (sigmoid, linear
         [0, 1]); read-out weights zero and biases so that a new scene has albedo 0.5, roughness 0.5,
         metallic 0.02.

Parameter groups: "sdf_net" (f_sdf incl. its hash grid), "codes" (E, code_dim), "deform" (V, 3, as
DmtetScene), "material_net" (f_mat incl. its hash grid), "material_codes" (E, code_dim).
Outputs: rgb, albedo, alpha, depth, normal_camera, normal_world, triangle_id, roughness, metallic.
Shading: "unlit" (default: the albedo), "diffuse" (Lambert on the albedo), "pbr" (per-vertex materials).
render(..., expression=e) picks the code; the regularisers (sdf_sign, laplacian, normal_consistency)
act on the surface of the expression rendered last. Export per expression: the extracted mesh with an
xatlas UV atlas and the material network baked into baseColor, roughness and metallic maps.
"""

from __future__ import annotations

import functools
import io
import json
import math
from typing import Any, Collection, Mapping

import numpy as np
import torch
from torch import nn

from services.common.errors import InvalidArgument
from services.core.camera_batch import CameraBatch
from services.render.representations import init_values as iv
from services.render.representations import mesh_io
from services.render.representations.base import SceneKind
from services.render.representations.dmtet import (DMTET_INIT_KEYS, EXPRESSION_INIT_KEYS, DmtetScene, _resolution,
                                                   asset_grid, initial_sdf, mesh_init_arg)
from services.render.representations.dmtet_marching import TetMesh, active_cells, cell_tets, marching_tets
from services.render.representations.hash_grid import HashGrid
from services.render.representations.mesh import BACKENDS, texture_size_from_init
from services.render.representations.mesh_io import MeshData

D_MODEL = 32
HEADS = 4
FEEDFORWARD = 64
SDF_LAYERS = 4
MATERIAL_LAYERS = 3
CHUNK = 32768                     # points per network evaluation
# hash tables start uniform in +-HASH_INIT, not Instant-NGP's 1e-4: the level tokens (zero bias) pass through
# LayerNorm, and features that small would leave the network nearly blind to position at the start
HASH_INIT = 0.5
MAX_EXPRESSIONS = 32
INITIAL_ALBEDO, INITIAL_ROUGHNESS, INITIAL_METALLIC = 0.5, 0.5, 0.02


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


class HashTransformer(nn.Module):
    """f(hash(x), code): x (P, 3) in [0, 1], code (code_dim,) -> (P, out_dim). Token layout in the module doc."""

    def __init__(self, out_dim: int, layers: int, code_dim: int, *, levels: int, features: int, log2_table_size: int):
        super().__init__()
        self.grid = HashGrid(levels, features, log2_table_size, init_scale=HASH_INIT)
        bound = 1 / math.sqrt(features)
        self.level_weight = nn.Parameter(torch.empty(levels, features, D_MODEL).uniform_(-bound, bound))
        self.level_bias = nn.Parameter(torch.zeros(levels, D_MODEL))
        self.code_proj = nn.Linear(code_dim, D_MODEL)
        layer = nn.TransformerEncoderLayer(D_MODEL, HEADS, FEEDFORWARD, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(D_MODEL, out_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        outs = []
        code_token = self.code_proj(code.to(self.level_weight.dtype))[None, None]          # (1, 1, D)
        for chunk in x.split(CHUNK):
            feats = self.grid(chunk)                                                        # (P, L, F)
            tokens = torch.einsum("plf,lfd->pld", feats, self.level_weight) + self.level_bias
            seq = torch.cat([tokens, code_token.expand(len(chunk), 1, D_MODEL)], 1)         # (P, L + 1, D)
            outs.append(self.head(self.encoder(seq)[:, -1]))
        if not outs:
            return x.new_zeros(0, self.head.out_features)
        return torch.cat(outs)


class ExpressionDmtetScene(DmtetScene):
    kind = "dmtet_expression"
    outputs = DmtetScene.outputs
    default_lrs = {"sdf_net": 1e-4, "codes": 1e-3, "deform": 1e-2, "material_net": 1e-2, "material_codes": 1e-2}

    def __init__(self, resolution: int = 128, extent: float = 1.2, *, expressions: int = 1, code_dim: int = 32,
                 max_offset: float = 0.1, levels: int = 16, features: int = 2, log2_table_size: int = 19,
                 backend: str = "auto", seed: int = 0):
        """Placeholder template (create() sets it). expressions: number of codes E (1..32); max_offset:
        the bound of the SDF residual, world units (> 0); levels / features / log2_table_size: each
        hash grid's size."""
        nn.Module.__init__(self)
        self._init_grid(resolution, extent, backend)
        if not 1 <= int(expressions) <= MAX_EXPRESSIONS:
            raise ValueError(f"expressions must be in [1, {MAX_EXPRESSIONS}], got {expressions}")
        if not 1 <= int(code_dim) <= 256:
            raise ValueError(f"code_dim must be in [1, 256], got {code_dim}")
        if not 0 < max_offset < self.extent:
            raise ValueError(f"max_offset must be in (0, extent={self.extent}), got {max_offset}")
        self.code_dim, self.max_offset = int(code_dim), float(max_offset)
        self.hash_sizes = dict(levels=int(levels), features=int(features), log2_table_size=int(log2_table_size))
        self.colors = None
        gen = torch.Generator().manual_seed(int(seed))
        self.register_buffer("template", torch.zeros((self.resolution + 1) ** 3))
        self.codes = nn.Parameter(torch.randn(int(expressions), self.code_dim, generator=gen))
        self.material_codes = nn.Parameter(torch.randn(int(expressions), self.code_dim, generator=gen))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            self.sdf_net = HashTransformer(1, SDF_LAYERS, self.code_dim, **self.hash_sizes)
            self.material_net = HashTransformer(5, MATERIAL_LAYERS, self.code_dim, **self.hash_sizes)
        with torch.no_grad():
            self.material_net.head.bias.copy_(torch.tensor([_logit(INITIAL_ALBEDO)] * 3 +
                                                           [_logit(INITIAL_ROUGHNESS), _logit(INITIAL_METALLIC)]))
        self.expression = 0          # the expression rendered last (the regularisers' surface)
        self._band_cache: tuple | None = None
        self._rendered: tuple | None = None   # (parameter versions, mesh) of the last render with autograd

    @property
    def num_expressions(self) -> int:
        return int(self.codes.shape[0])

    @classmethod
    def create(cls, resolution: int = 128, extent: float = 1.2, *, sphere_radius: float | None = None,
               mesh: MeshData | tuple | None = None, max_triangles: int = mesh_io.DEFAULT_MAX_TRIANGLES,
               **settings) -> "ExpressionDmtetScene":
        """From DmtetInit: the template as DmtetScene.create makes its SDF; settings: __init__'s keywords."""
        scene = cls(resolution or 128, extent or 1.2, **settings)
        # a mesh's distance is exact out to two cells past the network's band: truncated nearer, every vertex
        # would look close enough to change sign, and the band would be the whole grid
        sdf, _ = initial_sdf(scene.resolution, scene.extent, sphere_radius=sphere_radius, mesh=mesh,
                             max_triangles=max_triangles, band_cells=max(4.0, scene.max_offset / scene.cell + 2))
        scene.template.copy_(sdf)
        return scene

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"sdf_net": list(self.sdf_net.parameters()), "codes": [self.codes], "deform": [self.deform],
                "material_net": list(self.material_net.parameters()), "material_codes": [self.material_codes]}

    def check_expression(self, expression: int) -> int:
        e = int(expression)
        if not 0 <= e < self.num_expressions:
            raise ValueError(f"expression must be in 0..{self.num_expressions - 1}, got {expression}")
        return e

    # geometry ------------------------------------------------------------------------------------
    def band(self) -> torch.Tensor:
        """Grid vertex indices (K,) with |template| < max_offset + one cell (cached per template version)."""
        t = self.template
        key = (t.device, t.data_ptr(), t._version)
        if self._band_cache is None or self._band_cache[0] != key:
            idx = (t.abs() < self.max_offset + self.cell).nonzero().squeeze(1)
            self._band_cache = (key, idx)
        return self._band_cache[1]

    def _unit(self, points: torch.Tensor) -> torch.Tensor:
        """World positions -> the grid cube's [0, 1]^3."""
        return (points + self.extent) / (2 * self.extent)

    def _banded(self, idx: torch.Tensor, e: int) -> torch.Tensor:
        """template + bounded residual at grid vertices idx (K,) for expression e."""
        n = self.resolution + 1
        ijk = torch.stack([idx // (n * n), (idx // n) % n, idx % n], -1).to(self.template.dtype)
        residual = self.sdf_net(ijk / self.resolution, self.codes[e])[:, 0]
        return self.template[idx] + self.max_offset * torch.tanh(residual)

    def current_sdf(self, expression: int | None = None) -> torch.Tensor:
        """The SDF (V,) of an expression. With autograd, the band is evaluated without a graph first and only
        the corners of the cells the surface crosses again with one: marching tetrahedra reads nothing else,
        so the gradient is the same at a fraction of the backward's cost."""
        e = self.expression if expression is None else self.check_expression(expression)
        idx = self.band()
        with torch.no_grad():
            sdf = self.template.index_put((idx,), self._banded(idx, e))
        if not torch.is_grad_enabled():
            return sdf
        corners = torch.unique(cell_tets(active_cells(sdf < 0, self.resolution), self.resolution))
        corners = corners[(self.template[corners].abs() < self.max_offset + self.cell)]   # inside the band
        return sdf.index_put((corners,), self._banded(corners, e))

    def extract(self, expression: int | None = None) -> TetMesh:
        return marching_tets(self.positions, self.current_sdf(expression), self.resolution)

    def materials(self, points: torch.Tensor, expression: int | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Albedo (P, 3) sRGB, roughness (P, 1), metallic (P, 1) in [0, 1] at world points (P, 3)."""
        e = self.expression if expression is None else self.check_expression(expression)
        out = torch.sigmoid(self.material_net(self._unit(points), self.material_codes[e]))
        return out[:, :3], out[:, 3:4], out[:, 4:5]

    # rendering -----------------------------------------------------------------------------------
    def render(self, cameras: CameraBatch, outputs: Collection[str], background: torch.Tensor | None = None, *,
               shading: str | None = None, light_direction: torch.Tensor | None = None, environment=None,
               expression: int = 0) -> dict[str, torch.Tensor]:
        """Extract expression `expression`'s surface and rasterise it with the material network's
        per-vertex albedo / roughness / metallic. shading None = "unlit" (the albedo)."""
        self._check_outputs(outputs)
        self.expression = self.check_expression(expression)
        m = self.extract()
        if torch.is_grad_enabled():   # the regularisers of the coming ApplyGradients reuse this surface
            self._rendered = (self._versions(), m)
        material_kw = {}
        if set(outputs) & {"rgb", "albedo", "roughness", "metallic"}:
            albedo, rough, metal = self.materials(m.vertices)
            material_kw = dict(vertex_roughness=rough, vertex_metallic=metal)
        else:
            albedo = torch.full_like(m.vertices, INITIAL_ALBEDO)
        return self._draw(m, cameras, outputs, background, albedo, shading=shading or "unlit",
                          light_direction=light_direction, environment=environment, **material_kw)

    def _versions(self) -> tuple:
        return tuple(p._version for p in self.parameters())

    def regularizers(self) -> dict[str, "callable"]:
        """DmtetScene's, on the surface of the expression rendered last: the mesh of that render (its graph is
        part of the same backward) when no parameter changed since, else extracted once for all of them."""
        rendered, self._rendered = self._rendered, None
        cache: dict = {}

        def surface() -> TetMesh:
            if "mesh" not in cache:
                fresh = rendered is not None and rendered[0] == self._versions() and torch.is_grad_enabled()
                cache["mesh"] = rendered[1] if fresh else self.extract()
            return cache["mesh"]

        return self._regularizers(surface)

    def after_step(self, step: int, optimizer) -> bool:
        return False

    # export --------------------------------------------------------------------------------------
    @torch.no_grad()
    def mesh_data(self, expression: int = 0, texture_size: int = 512) -> MeshData:
        """Expression `expression`'s mesh with an xatlas atlas and the material network baked at its texels."""
        from services.render.representations.texture import texel_surface, unwrap_uv

        m = self.extract(self.check_expression(expression))
        if len(m.faces) == 0:
            raise mesh_io.EmptyMeshError("scene", "the SDF has no zero crossing inside the grid: nothing to export")
        verts = m.vertices.float()
        faces = m.faces
        uvs, uv_faces = unwrap_uv(verts.cpu().numpy(), faces.cpu().numpy(), texture_size)
        dev = verts.device
        surf = texel_surface(verts, faces, torch.as_tensor(uvs, device=dev), torch.as_tensor(uv_faces, device=dev),
                             texture_size)
        T = texture_size
        maps = torch.tensor([INITIAL_ALBEDO] * 3 + [INITIAL_ROUGHNESS, INITIAL_METALLIC], device=dev).repeat(T, T, 1)
        valid = surf["valid"]
        if bool(valid.any()):
            albedo, rough, metal = self.materials(surf["points"][valid].float(), expression)
            maps[valid] = torch.cat([albedo, rough, metal], -1).to(maps.dtype)
        maps = maps.cpu().numpy().astype(np.float32)
        return MeshData(verts.cpu().numpy(), faces.cpu().numpy(), uvs=uvs, uv_faces=uv_faces, texture=maps[..., :3],
                        roughness=maps[..., 3], metallic=maps[..., 4])

    def export(self, fmt: str, *, scale: float = 1.0, texture_size: int = 0, expression: int = 0) -> bytes:
        """"glb" / "obj_zip" / "ply": mesh_data(expression, texture_size or 512); "npz": config (JSON,
        key "config") and state_tensors()."""
        if fmt == "npz":
            buf = io.BytesIO()
            np.savez(buf, config=np.array(json.dumps(self.config())),
                     **{k: v.numpy() for k, v in self.state_tensors().items()})
            return buf.getvalue()
        if fmt not in ("glb", "obj_zip", "ply"):
            raise ValueError(f"{self.kind} cannot be exported as {fmt}")
        return mesh_io.export_mesh(self.mesh_data(expression, texture_size or 512), fmt, scale or 1.0)

    def config(self) -> dict:
        return dict(resolution=self.resolution, extent=self.extent, expressions=self.num_expressions,
                    code_dim=self.code_dim, max_offset=self.max_offset, backend=self.backend_option, **self.hash_sizes)

    @classmethod
    def from_config(cls, config: dict) -> "ExpressionDmtetScene":
        return cls(**config)


# ------------------------------------------------------------------------------------------------ kind

INIT_KEYS = DMTET_INIT_KEYS + EXPRESSION_INIT_KEYS
OPTIONS = {"backend": "auto | torch | nvdiffrast",
           "hash_levels": "hash-grid levels of both networks (16)",
           "hash_features": "features per hash-grid level (2)",
           "hash_log2_size": "log2 of each level's hash table size (19; tests use small ones)",
           "grid_resolution": "for asset init (128)", "extent": "for asset init (1.2)",
           "expressions": "for asset init: number of expression codes (1)",
           "max_offset": "for asset init: SDF residual bound, world units (0.1)"}


def _hash_sizes(options: Mapping[str, str]) -> dict:
    out = {}
    for key, arg, default, low, high in (("hash_levels", "levels", 16, 1, 32), ("hash_features", "features", 2, 1, 8),
                                         ("hash_log2_size", "log2_table_size", 19, 4, 24)):
        value = iv.option_number(options, key, default, integer_only=True)
        if not low <= value <= high:
            raise InvalidArgument(f"options.{key}", f"must be in [{low}, {high}], got {value}")
        out[arg] = int(value)
    return out


def _settings(init: Mapping[str, Any], extent: float) -> dict:
    expressions = iv.integer(init, "expressions", "dmtet.expressions", 0)
    if not 1 <= expressions <= MAX_EXPRESSIONS:
        raise InvalidArgument("dmtet.expressions", f"kind dmtet_expression needs 1..{MAX_EXPRESSIONS} expression "
                                                   f"codes, got {expressions}")
    code_dim = iv.integer(init, "code_dim", "dmtet.code_dim", 32) or 32
    if not 1 <= code_dim <= 256:
        raise InvalidArgument("dmtet.code_dim", f"must be in [1, 256] (0 = 32), got {code_dim}")
    max_offset = iv.number(init, "max_offset", "dmtet.max_offset", 0.1) or 0.1
    if not 0 < max_offset < extent:
        raise InvalidArgument("dmtet.max_offset", f"must be in (0, extent={extent}) world units, got {max_offset}")
    return dict(expressions=expressions, code_dim=code_dim, max_offset=max_offset)


def _create(init: Mapping[str, Any], seed: int, options: Mapping[str, str], limits) -> ExpressionDmtetScene:
    iv.check_keys(init, INIT_KEYS, "dmtet")
    resolution = _resolution(iv.integer(init, "grid_resolution", "dmtet.grid_resolution", 128), "dmtet.grid_resolution")
    extent = iv.number(init, "extent", "dmtet.extent", 1.2, low=0, open_low=True)
    texture_size_from_init(init, "dmtet.texture_size")
    settings = _settings(init, extent)
    radius, mesh_arg = mesh_init_arg(init, extent, limits)
    return ExpressionDmtetScene.create(resolution, extent, sphere_radius=radius, mesh=mesh_arg,
                                       max_triangles=limits.max_triangles, seed=seed,
                                       backend=iv.choice(options, "backend", BACKENDS, "auto"),
                                       **settings, **_hash_sizes(options))


@functools.lru_cache(maxsize=32)
def _network_bytes(code_dim: int, levels: int, features: int) -> int:
    """Bytes of both networks without their hash tables."""
    nets = [HashTransformer(out, layers, code_dim, levels=levels, features=features, log2_table_size=4)
            for out, layers in ((1, SDF_LAYERS), (5, MATERIAL_LAYERS))]
    return sum(p.numel() * 4 for net in nets for name, p in net.named_parameters() if name != "grid.tables")


def expression_dmtet_bytes(resolution: int, expressions: int, code_dim: int, levels: int, features: int,
                           log2_table_size: int) -> int:
    """memory_bytes() of an ExpressionDmtetScene: template (V,), deform (V, 3), codes, two networks."""
    return ((resolution + 1) ** 3 * 4 * 4 + 2 * expressions * code_dim * 4 + _network_bytes(code_dim, levels, features)
            + 2 * HashGrid.table_bytes(levels, features, log2_table_size))


def _init_bytes(init: Mapping[str, Any], options: Mapping[str, str], limits) -> int:
    iv.check_keys(init, INIT_KEYS, "dmtet")
    resolution = _resolution(iv.integer(init, "grid_resolution", "dmtet.grid_resolution", 128), "dmtet.grid_resolution")
    extent = iv.number(init, "extent", "dmtet.extent", 1.2, low=0, open_low=True)
    texture_size_from_init(init, "dmtet.texture_size")
    s = _settings(init, extent)
    return expression_dmtet_bytes(resolution, s["expressions"], s["code_dim"], **_hash_sizes(options))


def _from_asset(data: bytes, fmt: str, options: Mapping[str, str]) -> ExpressionDmtetScene:
    m = mesh_io.load_mesh(data, fmt or None, mesh_io.DEFAULT_MAX_TRIANGLES)
    resolution, extent = asset_grid(options)
    expressions = iv.option_number(options, "expressions", 1, integer_only=True)
    max_offset = iv.option_number(options, "max_offset", 0.1)
    try:
        return ExpressionDmtetScene.create(resolution, extent, mesh=m, expressions=int(expressions),
                                           max_offset=float(max_offset),
                                           backend=iv.choice(options, "backend", BACKENDS, "auto"),
                                           **_hash_sizes(options))
    except ValueError as e:
        raise InvalidArgument("options", str(e)) from None


SCENE_KIND = SceneKind(ExpressionDmtetScene, _create, _from_asset, OPTIONS, ("glb", "obj_zip", "ply", "npz"),
                       ("sdf_sign", "laplacian", "normal_consistency"), accelerated_backend="nvdiffrast",
                       init_bytes=_init_bytes)
