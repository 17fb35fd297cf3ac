"""Differentiable marching tetrahedra on DMTet's Kuhn grid (layout and conventions: dmtet.py): the
per-cell tetrahedra, the triangle table, grid vertex positions, and the surface extraction that only
builds the tetrahedra of cells the surface crosses."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

TET_EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))


def _kuhn_tets() -> np.ndarray:
    """(6, 4, 3) corner offsets (di, dj, dk) of the 6 tetrahedra of a unit cell, each positively
    oriented (det[v1 - v0, v2 - v0, v3 - v0] > 0)."""
    tets = []
    for perm in itertools.permutations(range(3)):
        corners = [np.zeros(3, int)]
        for axis in perm:
            nxt = corners[-1].copy()
            nxt[axis] = 1
            corners.append(nxt)
        c = np.array(corners)
        if np.linalg.det(np.stack([c[1] - c[0], c[2] - c[0], c[3] - c[0]])) < 0:
            c[[2, 3]] = c[[3, 2]]
        tets.append(c)
    return np.array(tets)


def _triangle_table() -> tuple[np.ndarray, np.ndarray]:
    """For each of the 16 inside/outside codes (bit k = vertex k inside): up to two triangles as local
    edge indices (16, 2, 3) (-1 = none) and the triangle count (16,). Oriented so the normal points from
    the inside vertices to the outside ones in the positively oriented reference tetrahedron."""
    ref = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
    edge_index = {frozenset(e): i for i, e in enumerate(TET_EDGES)}
    table = -np.ones((16, 2, 3), int)
    count = np.zeros(16, int)
    for code in range(16):
        inside = [k for k in range(4) if code >> k & 1]
        outside = [k for k in range(4) if not code >> k & 1]
        if len(inside) in (0, 4):
            continue
        if len(inside) == 1:
            tris = [[(inside[0], o) for o in outside]]
        elif len(inside) == 3:
            tris = [[(outside[0], i) for i in inside]]
        else:
            (a, b), (c, d) = inside, outside
            tris = [[(a, c), (a, d), (b, d)], [(a, c), (b, d), (b, c)]]
        direction = ref[outside].mean(0) - ref[inside].mean(0)
        for t, tri in enumerate(tris):
            mid = np.array([ref[list(e)].mean(0) for e in tri])
            if np.dot(np.cross(mid[1] - mid[0], mid[2] - mid[0]), direction) < 0:
                tri = [tri[0], tri[2], tri[1]]
            table[code, t] = [edge_index[frozenset(e)] for e in tri]
        count[code] = len(tris)
    return table, count


CELL_TETS = _kuhn_tets()
TRI_TABLE, TRI_COUNT = _triangle_table()


def grid_vertices(resolution: int, extent: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """All (r + 1)^3 grid vertex positions (V, 3), world units."""
    lin = torch.linspace(-extent, extent, resolution + 1, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3)


def tet_grid(resolution: int, device=None) -> torch.Tensor:
    """All 6 r^3 tetrahedra (T, 4) int64 as vertex indices (for small r: at r = 512 this would take
    13 GB as int32; the scene never builds it)."""
    r = resolution
    cells = torch.arange(r ** 3, device=device)
    return cell_tets(cells, r)


def cell_tets(cells: torch.Tensor, r: int) -> torch.Tensor:
    """Tetrahedra (6 C, 4) of the given flat cell indices (C,) (cell (i, j, k) -> (i * r + j) * r + k)."""
    i, j, k = cells // (r * r), (cells // r) % r, cells % r
    off = torch.as_tensor(CELL_TETS, device=cells.device)                   # (6, 4, 3)
    n = r + 1
    ci = i[:, None, None] + off[..., 0]
    cj = j[:, None, None] + off[..., 1]
    ck = k[:, None, None] + off[..., 2]
    return ((ci * n + cj) * n + ck).reshape(-1, 4)


def active_cells(inside: torch.Tensor, r: int) -> torch.Tensor:
    """Flat indices of cells whose corners are not all on one side. inside (V,) bool."""
    g = inside.view(r + 1, r + 1, r + 1)
    any_in = torch.zeros(r, r, r, dtype=torch.bool, device=inside.device)
    all_in = torch.ones(r, r, r, dtype=torch.bool, device=inside.device)
    for di, dj, dk in itertools.product((0, 1), repeat=3):
        c = g[di:di + r, dj:dj + r, dk:dk + r]
        any_in |= c
        all_in &= c
    return (any_in & ~all_in).reshape(-1).nonzero().squeeze(1)


@dataclass
class TetMesh:
    """A mesh extracted by marching tetrahedra: vertices (M, 3), faces (F, 3) CCW from outside, colours
    (M, 3) or None, and the grid edges (M, 2) each vertex lies on."""

    vertices: torch.Tensor
    faces: torch.Tensor
    colors: torch.Tensor | None
    edges: torch.Tensor


def marching_tets(positions_fn, sdf: torch.Tensor, resolution: int, colors: torch.Tensor | None = None) -> TetMesh:
    """Extract the zero level set. positions_fn(idx (K,)) -> (K, 3) deformed positions of grid vertices;
    sdf (V,); colors (V, 3) or None. Differentiable w.r.t. sdf, positions and colours."""
    r = resolution
    device = sdf.device
    inside = sdf.detach() < 0
    cells = active_cells(inside, r)
    tets = cell_tets(cells, r)                                              # (T, 4)
    occ = inside[tets]
    code = (occ.long() * torch.tensor([1, 2, 4, 8], device=device)).sum(-1)
    keep = (code > 0) & (code < 15)
    tets, occ, code = tets[keep], occ[keep], code[keep]
    e = torch.as_tensor(TET_EDGES, device=device)
    ends = tets[:, e]                                                        # (T, 6, 2)
    crossing = occ[:, e[:, 0]] != occ[:, e[:, 1]]                            # (T, 6)
    a, b = ends[..., 0][crossing], ends[..., 1][crossing]
    lo, hi = torch.minimum(a, b), torch.maximum(a, b)
    n = (r + 1) ** 3
    uniq, inv = torch.unique(lo * n + hi, return_inverse=True)
    edges = torch.stack([uniq // n, uniq % n], -1)                          # (M, 2)
    edge_vertex = torch.full(crossing.shape, -1, dtype=torch.long, device=device)
    edge_vertex[crossing] = inv
    s0, s1 = sdf[edges[:, 0]], sdf[edges[:, 1]]
    w = (s0 / (s0 - s1))[:, None]                                            # zero crossing along edge
    p0, p1 = positions_fn(edges[:, 0]), positions_fn(edges[:, 1])
    verts = p0 + (p1 - p0) * w
    col = None
    if colors is not None:
        col = colors[edges[:, 0]] + (colors[edges[:, 1]] - colors[edges[:, 0]]) * w
    table = torch.as_tensor(TRI_TABLE, device=device)[code]                  # (T, 2, 3)
    count = torch.as_tensor(TRI_COUNT, device=device)[code]
    faces = []
    for t in range(2):
        sel = count > t
        faces.append(edge_vertex[sel][torch.arange(int(sel.sum()), device=device)[:, None], table[sel, t]])
    faces = torch.cat(faces) if faces else torch.zeros(0, 3, dtype=torch.long, device=device)
    return TetMesh(verts, faces, col, edges)
