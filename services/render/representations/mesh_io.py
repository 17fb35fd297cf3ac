"""Triangle meshes in and out of files: GLB (glTF 2.0 binary), OBJ+MTL+PNG in a zip, and PLY, read and
written through trimesh. Also the validation every mesh entering the render service goes through.

In memory a mesh is a `MeshData`: geometry (vertices, faces counter-clockwise from outside) and, for a
textured mesh, a separate UV topology (uvs indexed by uv_faces, one UV triangle per geometry triangle)
as in OBJ files, so UV seams do not cut the geometry. Files that store one UV per vertex (glTF, trimesh)
get their vertices split along seams on export and welded back by exact position on import.

UVs follow the render API: u right, v down, (0, 0) the top-left texel of the stored texture (the glTF
convention). trimesh keeps OpenGL-style UVs (v up) and converts for glTF itself, so v is flipped at the
trimesh boundary here; OBJ files store v up as well.

Errors are `MeshError` subclasses: ValueError for plain Python callers and InvalidArgument (gRPC
INVALID_ARGUMENT with a field name and a reason) for the service.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import numpy as np

from services.common.errors import InvalidArgument

DEFAULT_MAX_TRIANGLES = 2_000_000
MAX_ZIP_BYTES = 1 << 30


class MeshError(InvalidArgument, ValueError):
    """A mesh or mesh file the render service refuses."""

    reason_code = "MESH_INVALID"

    def __init__(self, field: str, description: str, **kw):
        super().__init__(field, description, reason=self.reason_code, **kw)


class EmptyMeshError(MeshError):
    reason_code = "MESH_EMPTY"


class FaceIndexError(MeshError):
    reason_code = "MESH_FACE_INDEX_OUT_OF_RANGE"


class NonFiniteMeshError(MeshError):
    reason_code = "MESH_NOT_FINITE"


class TooManyTrianglesError(MeshError):
    reason_code = "MESH_TOO_LARGE"


class MeshShapeError(MeshError):
    reason_code = "MESH_BAD_SHAPE"


class MeshFormatError(MeshError):
    reason_code = "MESH_UNDECODABLE"


@dataclass
class MeshData:
    """vertices (V, 3) float32 world units; faces (F, 3) int64 CCW from outside; uvs (U, 2) float32 in
    [0, 1] (v down) with uv_faces (F, 3) int64, or None; texture (T, T, 3) float32 sRGB in [0, 1] or
    None; vertex_colors (V, 3) float32 in [0, 1] or None; roughness, metallic (T, T) float32 linear in
    [0, 1] on the texture's UVs, or None (GLB: glTF metallicRoughnessTexture, G roughness, B metallic)."""

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray | None = None
    uv_faces: np.ndarray | None = None
    texture: np.ndarray | None = None
    vertex_colors: np.ndarray | None = None
    roughness: np.ndarray | None = None
    metallic: np.ndarray | None = None


@dataclass
class MeshReport:
    """Topology diagnostics of an accepted mesh. Non-manifold or open meshes are rendered as they are:
    the rasteriser draws both sides of every triangle and treats boundary and non-manifold edges as
    silhouettes; only the regularisers that need a neighbourhood skip such edges."""

    num_vertices: int
    num_faces: int
    boundary_edges: int
    non_manifold_edges: int
    inconsistent_edges: int
    degenerate_faces: int
    unreferenced_vertices: int

    @property
    def watertight(self) -> bool:
        return self.boundary_edges == 0 and self.non_manifold_edges == 0

    @property
    def manifold(self) -> bool:
        return self.non_manifold_edges == 0 and self.inconsistent_edges == 0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d.update(watertight=self.watertight, manifold=self.manifold)
        return d


def validate_mesh(vertices, faces, max_triangles: int = DEFAULT_MAX_TRIANGLES, field: str = "mesh"
                  ) -> tuple[np.ndarray, np.ndarray, MeshReport]:
    """Check and convert: vertices (V, 3) finite floats, faces (F, 3) integers in [0, V). Returns
    float32 vertices, int64 faces and a MeshReport. Raises EmptyMeshError, MeshShapeError,
    NonFiniteMeshError, FaceIndexError or TooManyTrianglesError with the offending field named."""
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.size == 0 or f.size == 0:
        raise EmptyMeshError(f"{field}.vertices" if v.size == 0 else f"{field}.faces",
                             f"the mesh is empty ({v.size // 3} vertices, {f.size // 3} faces); at least one "
                             "triangle is needed")
    if v.ndim != 2 or v.shape[1] != 3:
        raise MeshShapeError(f"{field}.vertices", f"expected shape (V, 3), got {tuple(v.shape)}")
    if f.ndim != 2 or f.shape[1] != 3:
        raise MeshShapeError(f"{field}.faces", f"expected triangles of shape (F, 3), got {tuple(f.shape)}")
    if f.shape[0] > max_triangles:
        raise TooManyTrianglesError(f"{field}.faces", f"{f.shape[0]} triangles is above the limit of {max_triangles}",
                                    metadata={"limit": str(max_triangles), "got": str(f.shape[0])})
    if not np.issubdtype(v.dtype, np.number) or not np.isfinite(v).all():
        bad = int((~np.isfinite(v.astype(np.float64))).any(-1).sum()) if np.issubdtype(v.dtype, np.number) else -1
        raise NonFiniteMeshError(f"{field}.vertices", f"{bad} vertices have NaN or infinite coordinates")
    if not np.issubdtype(f.dtype, np.integer):
        if np.issubdtype(f.dtype, np.floating) and np.all(np.mod(f, 1) == 0):
            f = f.astype(np.int64)
        else:
            raise MeshShapeError(f"{field}.faces", f"face indices must be integers, got {f.dtype}")
    if f.min() < 0 or f.max() >= v.shape[0]:
        raise FaceIndexError(f"{field}.faces", f"face indices must be in [0, {v.shape[0]}), got range "
                             f"[{int(f.min())}, {int(f.max())}]")
    v = v.astype(np.float32)
    f = f.astype(np.int64)
    return v, f, mesh_report(v, f)


def mesh_report(vertices: np.ndarray, faces: np.ndarray) -> MeshReport:
    """Edge statistics of a triangle soup: boundary (1 face), non-manifold (> 2 faces), inconsistent
    (2 faces traversing the edge in the same direction) edges, zero-area faces, unused vertices."""
    a = faces
    b = np.roll(faces, -1, axis=1)
    lo, hi = np.minimum(a, b).ravel(), np.maximum(a, b).ravel()
    forward = (a.ravel() < b.ravel())
    keys = lo * (int(vertices.shape[0]) + 1) + hi
    uniq, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
    fwd_count = np.bincount(inv, weights=forward, minlength=len(uniq))
    two = counts == 2
    inconsistent = int(np.sum(two & (fwd_count != 1)))
    cross = np.cross(vertices[faces[:, 1]] - vertices[faces[:, 0]], vertices[faces[:, 2]] - vertices[faces[:, 0]])
    used = np.zeros(vertices.shape[0], bool)
    used[faces.ravel()] = True
    return MeshReport(int(vertices.shape[0]), int(faces.shape[0]), int(np.sum(counts == 1)),
                      int(np.sum(counts > 2)), inconsistent, int(np.sum(np.linalg.norm(cross, axis=1) == 0)),
                      int(np.sum(~used)))


# --------------------------------------------------------------------------------------------------
# export

def split_by_uv(m: MeshData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One vertex per distinct (geometry vertex, uv vertex) corner pair, as glTF wants. Returns
    positions (S, 3), uvs (S, 2) (v down) and faces (F, 3) into them."""
    keys = m.faces.astype(np.int64) * (len(m.uvs) + 1) + m.uv_faces
    uniq, inv = np.unique(keys.ravel(), return_inverse=True)
    geo, uvi = uniq // (len(m.uvs) + 1), uniq % (len(m.uvs) + 1)
    return m.vertices[geo], m.uvs[uvi], inv.reshape(-1, 3)


def _texture_image(texture: np.ndarray):
    from PIL import Image

    return Image.fromarray((np.clip(texture, 0, 1) * 255 + 0.5).astype(np.uint8), mode="RGB")


def _fit(channel: np.ndarray | None, size: int, default: float) -> np.ndarray:
    """A (T', T') material channel at (size, size) (nearest), or the default everywhere."""
    if channel is None:
        return np.full((size, size), default, np.float32)
    c = np.asarray(channel, np.float32)
    if c.shape != (size, size):
        idx = (np.arange(size) * c.shape[0] // size)
        c = c[idx][:, idx]
    return c


def _to_trimesh(m: MeshData, scale: float):
    import trimesh
    from trimesh.visual import ColorVisuals, TextureVisuals
    from trimesh.visual.material import PBRMaterial

    if m.texture is not None and m.uvs is not None:
        pos, uv, faces = split_by_uv(m)
        if m.roughness is not None or m.metallic is not None:
            # glTF metallicRoughness: G roughness, B metallic (linear), R unused; factors 1 multiply them
            T = m.texture.shape[0]
            mr = np.zeros((T, T, 3), np.float32)
            mr[..., 1] = _fit(m.roughness, T, 0.5)
            mr[..., 2] = _fit(m.metallic, T, 0.0)
            material = PBRMaterial(baseColorTexture=_texture_image(m.texture), metallicRoughnessTexture=_texture_image(mr),
                                   metallicFactor=1.0, roughnessFactor=1.0, doubleSided=False)
        else:
            material = PBRMaterial(baseColorTexture=_texture_image(m.texture), metallicFactor=0.0, roughnessFactor=1.0,
                                   doubleSided=False)
        visual = TextureVisuals(uv=np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1), material=material)
        return trimesh.Trimesh(pos * scale, faces, visual=visual, process=False)
    colours = None
    if m.vertex_colors is not None:
        rgb = (np.clip(m.vertex_colors, 0, 1) * 255 + 0.5).astype(np.uint8)
        colours = np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], 1)
    return trimesh.Trimesh(m.vertices * scale, m.faces, visual=ColorVisuals(vertex_colors=colours), process=False)


# asset.extras of HeadForge's GLBs: {"headforge": {"file_units_per_world_unit": scale}}, so that load_mesh
# reads a GLB written at any scale (e.g. metres: 0.1, world units being 10 cm) back in world units
GLB_EXTRAS_KEY = "headforge"


def export_glb(m: MeshData, scale: float = 1.0) -> bytes:
    """glTF 2.0 binary: positions in world units times scale (+Y up, +Z front), TEXCOORD_0 and the
    texture as baseColorTexture (PNG), or COLOR_0 vertex colours. The scale is recorded in asset.extras
    (GLB_EXTRAS_KEY) for load_mesh."""
    import trimesh

    def record_scale(tree: dict) -> None:
        tree.setdefault("asset", {}).setdefault("extras", {})[GLB_EXTRAS_KEY] = {
            "file_units_per_world_unit": float(scale)}

    return trimesh.Scene(_to_trimesh(m, scale)).export(file_type="glb", tree_postprocessor=record_scale)


def glb_scale(data: bytes) -> float:
    """The file_units_per_world_unit a HeadForge GLB records (export_glb); 1.0 for any other GLB (its
    positions are taken as world units)."""
    import json
    import struct

    try:
        length, kind = struct.unpack_from("<II", data, 12)
        if kind != 0x4E4F534A:   # "JSON": the first chunk of a valid GLB
            return 1.0
        extras = json.loads(data[20:20 + length]).get("asset", {}).get("extras", {})
        scale = float(extras.get(GLB_EXTRAS_KEY, {}).get("file_units_per_world_unit", 1.0))
    except (struct.error, ValueError, AttributeError, TypeError):
        return 1.0   # trimesh reports what is wrong with the file
    return scale if np.isfinite(scale) and scale > 0 else 1.0


def export_ply(m: MeshData, scale: float = 1.0) -> bytes:
    """Binary PLY with uint8 vertex colours. A UV texture cannot live in a PLY: each vertex gets the
    texture colour at its UV (averaged over its seam copies), so the colours are a lossy summary."""
    colours = m.vertex_colors
    if colours is None and m.texture is not None and m.uvs is not None:
        colours = texture_colors_at_vertices(m)
    plain = MeshData(m.vertices, m.faces, vertex_colors=colours)
    return _to_trimesh(plain, scale).export(file_type="ply", encoding="binary")


def texture_colors_at_vertices(m: MeshData) -> np.ndarray:
    """(V, 3) texture colour at each geometry vertex's UV (nearest texel, averaged over seam copies)."""
    T = m.texture.shape[0]
    rows = np.clip((m.uvs[:, 1] * T).astype(int), 0, T - 1)
    cols = np.clip((m.uvs[:, 0] * T).astype(int), 0, T - 1)
    uv_col = m.texture[rows, cols]
    acc = np.zeros((len(m.vertices), 3))
    cnt = np.zeros(len(m.vertices))
    np.add.at(acc, m.faces.ravel(), uv_col[m.uv_faces.ravel()])
    np.add.at(cnt, m.faces.ravel(), 1)
    return (acc / np.maximum(cnt, 1)[:, None]).astype(np.float32)


def export_obj_zip(m: MeshData, scale: float = 1.0) -> bytes:
    """A zip with mesh.obj (v, vt with v up as OBJ expects, f v/vt), mesh.mtl and texture.png; without a
    texture, vertex colours as the common `v x y z r g b` extension and no texture."""
    out = io.StringIO()
    out.write("# HeadForge mesh\n")
    textured = m.texture is not None and m.uvs is not None
    if textured:
        out.write("mtllib mesh.mtl\n")
    v = m.vertices * scale
    if m.vertex_colors is not None and not textured:
        np.savetxt(out, np.concatenate([v, np.clip(m.vertex_colors, 0, 1)], 1), fmt="v %.9g %.9g %.9g %.6f %.6f %.6f")
    else:
        np.savetxt(out, v, fmt="v %.9g %.9g %.9g")
    if textured:
        np.savetxt(out, np.stack([m.uvs[:, 0], 1.0 - m.uvs[:, 1]], 1), fmt="vt %.9g %.9g")
        out.write("usemtl material0\n")
        idx = np.stack([m.faces + 1, m.uv_faces + 1], -1).reshape(-1, 6)
        np.savetxt(out, idx, fmt="f %d/%d %d/%d %d/%d")
    else:
        np.savetxt(out, m.faces + 1, fmt="f %d %d %d")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("mesh.obj", out.getvalue())
        if textured:
            z.writestr("mesh.mtl", "newmtl material0\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd texture.png\n")
            png = io.BytesIO()
            _texture_image(m.texture).save(png, format="PNG")
            z.writestr("texture.png", png.getvalue())
    return buf.getvalue()


def export_mesh(m: MeshData, fmt: str, scale: float = 1.0) -> bytes:
    """fmt "glb", "obj_zip" or "ply"; ValueError otherwise."""
    writers = {"glb": export_glb, "obj_zip": export_obj_zip, "ply": export_ply}
    if fmt not in writers:
        raise ValueError(f"cannot export a mesh as {fmt!r} (expected one of {sorted(writers)})")
    return writers[fmt](m, scale)


# --------------------------------------------------------------------------------------------------
# import

def detect_format(data: bytes) -> str:
    """"glb", "obj_zip" or "ply" from the leading bytes; MeshFormatError when none matches."""
    if data[:4] == b"glTF":
        return "glb"
    if data[:4] == b"PK\x03\x04":
        return "obj_zip"
    if data[:3] == b"ply":
        return "ply"
    raise MeshFormatError("asset.data", "not a GLB, OBJ zip or PLY file (unrecognised leading bytes)")


def _read_zip(data: bytes) -> tuple[str, dict[str, bytes]]:
    """The .obj file's name and every member of a zip; refuses zip bombs and archives without an OBJ."""
    try:
        z = zipfile.ZipFile(io.BytesIO(data))
        infos = [i for i in z.infolist() if not i.is_dir()]
        if sum(i.file_size for i in infos) > MAX_ZIP_BYTES:
            raise MeshFormatError("asset.data", f"zip expands to more than {MAX_ZIP_BYTES} bytes")
        files = {i.filename: z.read(i) for i in infos}
    except zipfile.BadZipFile as e:
        raise MeshFormatError("asset.data", f"not a readable zip: {e}") from None
    objs = sorted(n for n in files if n.lower().endswith(".obj"))
    if not objs:
        raise MeshFormatError("asset.data", "the zip holds no .obj file")
    return objs[0], files


def _load_trimesh(data: bytes, fmt: str):
    import trimesh
    from trimesh.resolvers import ZipResolver

    if fmt == "obj_zip":
        name, files = _read_zip(data)
        folder = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
        archive = {k[len(folder):]: io.BytesIO(v) for k, v in files.items() if k.startswith(folder)}
        return trimesh.load(io.BytesIO(files[name]), file_type="obj", resolver=ZipResolver(archive),
                            process=False)
    return trimesh.load(io.BytesIO(data), file_type=fmt, process=False)


def _single_mesh(loaded):
    """One Trimesh from what trimesh.load returned (a Scene is flattened with its transforms)."""
    import trimesh

    if isinstance(loaded, trimesh.Scene):
        geoms = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)]
        if not geoms:
            raise EmptyMeshError("asset.data", "the file holds no triangle mesh")
        return geoms[0] if len(geoms) == 1 else trimesh.util.concatenate(geoms)
    if not isinstance(loaded, trimesh.Trimesh):
        raise EmptyMeshError("asset.data", f"the file holds no triangle mesh (found {type(loaded).__name__})")
    return loaded


def _material_texture(visual) -> np.ndarray | None:
    """(T, T, 3) float texture of a TextureVisuals (PBR base colour or simple diffuse image), square."""
    from PIL import Image

    mat = getattr(visual, "material", None)
    img = getattr(mat, "baseColorTexture", None) or getattr(mat, "image", None)
    if img is None:
        return None
    img = img.convert("RGB")
    side = max(img.size)
    if img.size != (side, side):
        img = img.resize((side, side), Image.BILINEAR)
    tex = np.asarray(img, dtype=np.float32) / 255.0
    factor = getattr(mat, "baseColorFactor", None)
    if factor is not None:
        f = np.asarray(factor, np.float32)[:3]
        tex = tex * (f / 255.0 if np.asarray(factor).dtype == np.uint8 or f.max() > 1 else f)
    return tex


def _material_maps(visual, size: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(roughness, metallic) (size, size) from a glTF metallicRoughnessTexture (G, B) times the factors;
    (None, None) without that texture."""
    from PIL import Image

    mat = getattr(visual, "material", None)
    img = getattr(mat, "metallicRoughnessTexture", None)
    if img is None:
        return None, None
    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    a = np.asarray(img, dtype=np.float32) / 255.0
    rf = getattr(mat, "roughnessFactor", None)
    mf = getattr(mat, "metallicFactor", None)
    rough = a[..., 1] * (1.0 if rf is None else float(rf))
    metal = a[..., 2] * (1.0 if mf is None else float(mf))
    return np.clip(rough, 0, 1).astype(np.float32), np.clip(metal, 0, 1).astype(np.float32)


def weld(positions: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge vertices at exactly equal positions. Returns unique positions (V, 3), faces (F, 3) into
    them, and the index (S,) of each input vertex's merged vertex."""
    uniq, first, inv = np.unique(positions, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)               # keep the file's vertex order
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    inv = rank[inv.ravel()]
    return uniq[order], inv[faces], inv


def load_mesh(data: bytes, fmt: str | None = None, max_triangles: int = DEFAULT_MAX_TRIANGLES) -> MeshData:
    """Read a GLB, OBJ zip or PLY (fmt None: detected) into MeshData, validated. Split seam vertices are
    welded back by position. Raises MeshError subclasses for undecodable, empty or invalid meshes."""
    fmt = fmt or detect_format(data)
    if fmt not in ("glb", "obj_zip", "ply"):
        raise MeshFormatError("asset.format", f"unsupported mesh format {fmt!r}")
    try:
        tm = _single_mesh(_load_trimesh(data, fmt))
    except MeshError:
        raise
    except Exception as e:  # trimesh raises many types on garbage
        raise MeshFormatError("asset.data", f"could not decode the {fmt} file: {type(e).__name__}: {e}") from None
    pos = np.asarray(tm.vertices, dtype=np.float64)
    if fmt == "glb":
        pos = pos / glb_scale(data)
    faces = np.asarray(tm.faces, dtype=np.int64)
    if len(faces) > max_triangles:
        raise TooManyTrianglesError("asset.data", f"{len(faces)} triangles is above the limit of {max_triangles}",
                                    metadata={"limit": str(max_triangles), "got": str(len(faces))})
    pos32, faces = validate_mesh(pos, faces, max_triangles, field="asset")[:2]
    visual = tm.visual
    texture = _material_texture(visual) if visual.kind == "texture" or hasattr(visual, "material") else None
    uv = getattr(visual, "uv", None)
    if texture is not None and uv is not None and len(uv) == len(pos32):
        verts, geo_faces, _ = weld(pos32, faces)
        uvs = np.stack([uv[:, 0], 1.0 - uv[:, 1]], 1).astype(np.float32)
        rough, metal = _material_maps(visual, texture.shape[0])
        return MeshData(verts.astype(np.float32), geo_faces.astype(np.int64), uvs, faces, texture.astype(np.float32),
                        roughness=rough, metallic=metal)
    colours = None
    if visual.kind == "vertex":
        colours = np.asarray(visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
    verts, geo_faces, remap = weld(pos32, faces)
    if colours is not None:
        merged = np.zeros((len(verts), 3), np.float32)
        merged[remap] = colours
        colours = merged
    return MeshData(verts.astype(np.float32), geo_faces.astype(np.int64), vertex_colors=colours)
