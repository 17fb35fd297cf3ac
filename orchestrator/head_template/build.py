"""The head template: a clean, mirror-symmetric triangle mesh of an average adult head (cranium, face,
ears, neck) with a UV layout, built by the project itself (no scanned data, no downloads).

Shape: a smooth union of ellipsoids and a neck cylinder (a signed distance field in the head frame,
proportioned to services.core.landmarks.TEMPLATE_68: +Y up, face along +Z, 1 unit = 10 cm).
Mesh: the SDF is sampled along a grid of rays, cast from outside inwards so each ray keeps the outermost
surface (no folds):
  - an upper cap: rays from the point (0, Y0, 0) at elevations 90° (the crown, one pole vertex) down to 0°;
  - a lower tube: horizontal rays from points (0, y, 0), y from Y0 down to the neck cut at Y_CUT.
Each row of rays goes round the head in azimuth phi(s) = pi (A s + (1 - A) s^3), s in [-1, 1), odd in
s (so the mesh is exactly mirror-symmetric in x) and denser at the front (the face gets more vertices
and texels). Faces are counter-clockwise from outside; the only boundary is the ring at the neck cut.

UV layout (render.proto convention, v down): u = (s + 1) / 2 (the face's midline at u = 0.5, the seam
at the back of the head), v = the row's position from the crown (v = 0) to the neck cut (v = 1).
Mirroring the head in x is exactly u -> 1 - u, which texture completion uses.

Anchors: for each of the 68 iBUG landmarks, the template vertex that the generic 3D landmark
(TEMPLATE_68) is attached to; build() then deforms the template (see fit.rbf_deform) so those vertices sit
exactly on TEMPLATE_68, so a subject's 3D landmarks drive the fit directly.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from services.core.landmarks import TEMPLATE_68

VERSION = 2
Y0 = 0.25          # the upper cap's ray origin and the tube's first row (just above the eyes)
Y_CUT = -1.55      # the neck cut (15.5 cm below the eye line)
A = 0.55           # azimuth density: the front is (1 + 2(1 - A)/A) times denser than the back

# (centre, radii) of ellipsoids, head units; mirrored parts are listed once with x > 0 and reflected.
_PARTS = [
    ("cranium", (0.0, 0.42, -0.18), (0.77, 0.97, 1.00), 0.0),
    ("face", (0.0, -0.16, 0.22), (0.66, 0.78, 0.68), 0.2),
    ("jaw", (0.0, -0.56, 0.28), (0.56, 0.44, 0.58), 0.16),
    ("chin", (0.0, -0.80, 0.64), (0.25, 0.20, 0.22), 0.12),
    ("nose_bridge", (0.0, 0.04, 0.86), (0.085, 0.30, 0.16), 0.10),
    ("nose_tip", (0.0, -0.13, 0.99), (0.105, 0.10, 0.15), 0.10),
    ("lips", (0.0, -0.50, 0.83), (0.25, 0.13, 0.12), 0.10),
    ("neck", None, None, 0.16),
]
_MIRRORED = [
    ("cheek", (0.40, -0.10, 0.52), (0.26, 0.24, 0.28), 0.16),
    ("brow", (0.30, 0.46, 0.66), (0.26, 0.10, 0.10), 0.16),    # a soft ridge: the dense fit shapes brows
    ("nostril", (0.13, -0.20, 0.90), (0.07, 0.06, 0.08), 0.06),
    ("ear", (0.74, 0.08, -0.12), (0.12, 0.30, 0.19), 0.05),
]
_NECK = ((0.0, -0.12), (0.54, 0.50), -0.35)   # centre (x, z), radii (x, z), top y (it rounds off above)
_NECK_FLARE = (-1.05, 0.35)   # below this y the neck widens, by this fraction at the cut (the trapezius)


def _ellipsoid(p: np.ndarray, centre, radii) -> np.ndarray:
    q = (p - np.asarray(centre)) / np.asarray(radii)
    k0 = np.linalg.norm(q, axis=-1)
    k1 = np.linalg.norm(q / np.asarray(radii), axis=-1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    if k <= 0:
        return np.minimum(a, b)
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0, 1)
    return b * (1 - h) + a * h - k * h * (1 - h)


def head_sdf(p: np.ndarray) -> np.ndarray:
    """Approximate signed distance (negative inside) of the template head at points p (..., 3)."""
    d = None
    for name, centre, radii, k in _PARTS:
        if name == "neck":
            (cx, cz), (rx, rz), top = _NECK
            y0, flare = _NECK_FLARE
            f = 1.0 + flare * np.clip((y0 - p[..., 1]) / (y0 - Y_CUT), 0, 1) ** 2
            q = np.stack([(p[..., 0] - cx) / (rx * f), (p[..., 2] - cz) / (rz * (1 + 0.4 * (f - 1)))], -1)
            dn = (np.linalg.norm(q, axis=-1) - 1.0) * min(rx, rz)
            dn = np.maximum(dn, p[..., 1] - top)
            d = _smin(d, dn, k)
            continue
        e = _ellipsoid(p, centre, radii)
        d = e if d is None else _smin(d, e, k)
    for _, centre, radii, k in _MIRRORED:
        for sx in (1.0, -1.0):
            c = (sx * centre[0], centre[1], centre[2])
            d = _smin(d, _ellipsoid(p, c, radii), k)
    return d


@dataclass(frozen=True)
class HeadTemplate:
    """vertices (V, 3) float64, faces (F, 3) int64 (CCW from outside), uvs (U, 2) float32 in [0, 1]
    (v down), uv_faces (F, 3) int64, anchors (68,) vertex index per iBUG landmark, mirror (V,) index of
    each vertex's mirror image, rows/cols of the grid, boundary (cols,) vertex indices of the neck ring
    (in order), region (V,) int8: 0 skin, 1 scalp (hair when the subject has hair), 2 ear, 3 neck."""

    vertices: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    uv_faces: np.ndarray
    anchors: np.ndarray
    mirror: np.ndarray
    rows: int
    cols: int
    boundary: np.ndarray
    region: np.ndarray


def _azimuths(cols: int) -> tuple[np.ndarray, np.ndarray]:
    s = -1.0 + 2.0 * np.arange(cols) / cols
    return s, math.pi * (A * s + (1 - A) * s ** 3)


def _ray_cast(origins: np.ndarray, dirs: np.ndarray, r_max: float = 2.6, steps: int = 320) -> np.ndarray:
    """Outermost surface along each ray origin + t * dir, t in (0, r_max]: march inward from r_max and
    take the first sign change (refined by bisection). Returns t (N,)."""
    t = np.linspace(r_max, 0.0, steps)
    pts = origins[:, None] + dirs[:, None] * t[None, :, None]
    inside = head_sdf(pts) < 0
    first = np.argmax(inside, axis=1)
    if not inside[np.arange(len(first)), first].all():
        raise RuntimeError("a template ray misses the head")
    hi, lo = t[first - 1], t[first]            # hi outside, lo inside
    for _ in range(30):
        mid = 0.5 * (hi + lo)
        ins = head_sdf(origins + dirs * mid[:, None]) < 0
        lo = np.where(ins, mid, lo)
        hi = np.where(ins, hi, mid)
    return 0.5 * (hi + lo)


def _grid(cols: int, cap_rows: int, tube_rows: int):
    """Vertex positions (rows, cols, 3) and each row's v coordinate; row 0 is the pole (all columns the
    same point)."""
    _, phi = _azimuths(cols)
    el = np.linspace(90.0, 0.0, cap_rows + 1)                    # includes the equator row at Y0
    ys = np.linspace(Y0, Y_CUT, tube_rows + 1)[1:]
    origins, dirs = [], []
    for e in np.radians(el):
        for a in phi:
            origins.append((0.0, Y0, 0.0))
            dirs.append((math.cos(e) * math.sin(a), math.sin(e), math.cos(e) * math.cos(a)))
    for y in ys:
        for a in phi:
            origins.append((0.0, y, 0.0))
            dirs.append((math.sin(a), 0.0, math.cos(a)))
    origins, dirs = np.asarray(origins), np.asarray(dirs)
    t = _ray_cast(origins, dirs)
    pos = (origins + dirs * t[:, None]).reshape(-1, cols, 3)
    # v: arc length down the midline profile, normalised (even texel density from crown to neck)
    seg = np.linalg.norm(np.diff(pos, axis=0), axis=-1).mean(1)
    v = np.concatenate([[0.0], np.cumsum(seg)])
    return pos, v / v[-1]


def _mesh_from_grid(pos: np.ndarray, v_rows: np.ndarray):
    R, C = pos.shape[:2]
    # geometry vertices: the pole once, then rows 1.. R-1 with C columns each
    vid = np.zeros((R, C), np.int64)
    vid[1:] = 1 + np.arange((R - 1) * C).reshape(R - 1, C)
    verts = np.concatenate([pos[0, :1], pos[1:].reshape(-1, 3)])
    # UV vertices: R rows x (C + 1) columns (the seam column duplicated)
    u = np.arange(C + 1) / C
    uvs = np.stack(np.meshgrid(u, v_rows), -1).reshape(-1, 2).astype(np.float32)
    uid = np.arange(R * (C + 1)).reshape(R, C + 1)
    faces, uv_faces = [], []
    for j in range(C):
        jn = (j + 1) % C
        # pole fan: (pole, row1 j+1, row1 j) is CCW seen from above/outside
        faces.append((vid[0, 0], vid[1, jn], vid[1, j]))
        uv_faces.append((uid[0, j], uid[1, j + 1], uid[1, j]))
    for r in range(1, R - 1):
        for j in range(C):
            jn = (j + 1) % C
            a, b, c, d = vid[r, j], vid[r, jn], vid[r + 1, jn], vid[r + 1, j]
            ua, ub, uc, ud = uid[r, j], uid[r, j + 1], uid[r + 1, j + 1], uid[r + 1, j]
            faces += [(a, b, c), (a, c, d)]
            uv_faces += [(ua, ub, uc), (ua, uc, ud)]
    faces = np.asarray(faces, np.int64)
    uv_faces = np.asarray(uv_faces, np.int64)
    # orientation: azimuth grows from -x (s = -1, the back) through +z; make the winding outward
    vv = verts[faces]
    n = np.cross(vv[:, 1] - vv[:, 0], vv[:, 2] - vv[:, 0])
    if (np.einsum("ij,ij->i", n, vv.mean(1) * [1, 0, 1]) < 0).mean() > 0.5:   # outward from the vertical axis
        faces = faces[:, ::-1].copy()
        uv_faces = uv_faces[:, ::-1].copy()
    return verts, faces, uvs, uv_faces, vid


def _regions(verts: np.ndarray) -> np.ndarray:
    x, y, z = verts.T
    region = np.zeros(len(verts), np.int8)
    # scalp: above the forehead hairline at the front, above the ears at the sides, down to the nape behind
    front = np.clip(z / 0.9, 0, 1)
    hairline = 0.78 * front + (-0.35) * (1 - front) + 0.1 * (np.abs(x) / 0.8)
    region[y > hairline] = 1
    ear = ((np.abs(x) - 0.8) / 0.2) ** 2 + ((y - 0.08) / 0.34) ** 2 + ((z + 0.12) / 0.24) ** 2 < 1
    region[ear] = 2
    region[(y < -0.75) & ~((z > 0.35) & (y > -1.05))] = 3
    return region


def build_template(cols: int = 112, cap_rows: int = 34, tube_rows: int = 56) -> HeadTemplate:
    """Build the template (deterministic; ~1 s). See the module docstring."""
    from orchestrator.head_template.fit import rbf_deform

    pos, v_rows = _grid(cols, cap_rows, tube_rows)
    verts, faces, uvs, uv_faces, vid = _mesh_from_grid(pos, v_rows)
    R, C = pos.shape[:2]
    # mirror map: column j <-> column (C - j) % C (s -> -s), same row
    mcol = (C - np.arange(C)) % C
    mirror = np.zeros(len(verts), np.int64)
    mirror[vid[1:]] = vid[1:][:, mcol]
    # anchors: nearest free vertex to each generic landmark; left-side points pick, their mirror partners
    # take the mirror vertex, midline points stay on the midline column (so the anchors are symmetric)
    from services.core.landmarks import MIRROR_68

    partner = {**MIRROR_68, **{v: k for k, v in MIRROR_68.items()}}
    anchors = np.full(68, -1, np.int64)
    midline = vid[1:, C // 2]
    is_mid = np.zeros(len(verts), bool)
    is_mid[midline] = True
    used = np.zeros(len(verts), bool)
    for i in np.argsort(TEMPLATE_68[:, 0], kind="stable"):
        j = partner[int(i)]
        if anchors[i] >= 0:
            continue
        d = np.linalg.norm(verts - TEMPLATE_68[i], axis=1)
        d[used] = np.inf
        d[~is_mid if i == j else is_mid] = np.inf
        a = int(np.argmin(d))
        anchors[i] = a
        used[a] = True
        if i != j:
            anchors[j] = mirror[a]
            used[mirror[a]] = True
    region = _regions(verts)
    # pull the anchor vertices exactly onto the generic landmarks (a smooth, local deformation)
    verts = rbf_deform(verts, verts[anchors], TEMPLATE_68)
    verts = 0.5 * (verts + verts[mirror] * [-1.0, 1.0, 1.0])   # exact symmetry (the solve is ill-conditioned)
    boundary = vid[-1]
    return HeadTemplate(verts, faces, uvs, uv_faces, anchors, mirror, R, C, boundary, region)


def _cache_dir() -> Path:
    return Path(os.environ.get("HEADFORGE_CACHE", Path.home() / ".cache" / "headforge"))


def template_hash() -> str:
    """Identifies the template's source (this file, fit.py, the generic landmarks): the cache key."""
    src = Path(__file__).read_bytes() + Path(__file__).with_name("fit.py").read_bytes()
    return hashlib.sha256(src + TEMPLATE_68.tobytes()).hexdigest()[:12]


@lru_cache(maxsize=1)
def load_template() -> HeadTemplate:
    """The template, from the on-disk cache (keyed by this file's source) or built and cached."""
    path = _cache_dir() / f"head_template_v{VERSION}_{template_hash()}.npz"
    if path.exists():
        try:
            z = np.load(path)
            return HeadTemplate(z["vertices"], z["faces"], z["uvs"], z["uv_faces"], z["anchors"], z["mirror"],
                                int(z["rows"]), int(z["cols"]), z["boundary"], z["region"])
        except Exception:  # a corrupt cache entry: rebuild
            pass
    t = build_template()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, vertices=t.vertices, faces=t.faces, uvs=t.uvs, uv_faces=t.uv_faces, anchors=t.anchors,
                 mirror=t.mirror, rows=t.rows, cols=t.cols, boundary=t.boundary, region=t.region)
        os.replace(tmp, path)
    except OSError:
        pass
    return t
