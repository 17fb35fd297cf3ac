"""The face shaped by MediaPipe's 468-point face mesh (head frame, from the face service's
landmarks_3d_478), after the 68-landmark fit (fit.fit_to_landmarks) has placed the template's eyes,
brows, nose, mouth and jaw line.

The 68-point fit decides where things are across the face; the dense points decide how far they stand
out: nose depth and width, brow ridge, lips, cheeks, the face's flatness. Each iteration every point is
paired with its nearest vertex of the face area, and only the point's offset along that vertex's
normal is used (the tangential part would fight the 68-point fit and slide the surface). Those normal
offsets, with zero offsets on a ring of vertices around the face (forehead above the hairline, temples,
under the jaw), are spread by a regularised polyharmonic spline (fit.rbf_deform's kernel), i.e. a smooth
bending that passes near the points and fades out over FADE before the ring; the cranium, ears and neck
further out do not move.
Points further than MAX_OFFSET from the surface are outliers and left out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_OFFSET = 0.35       # head units (3.5 cm): a point further off the fitted template is not trusted
SMOOTH = 0.02           # spline regularisation (head units): MediaPipe's depth is noisy at the ~1 mm level
ITERATIONS = 2
FADE = 0.25             # head units: the bending fades out over this distance outside the face area
RING = 0.15             # the width of the ring of zero-offset vertices beyond the fade
PIN_EVERY = 3           # every k-th ring vertex holds a zero offset


@dataclass
class DenseFit:
    vertices: np.ndarray        # (V, 3) head frame
    rms_before: float           # head units: RMS distance of the dense points to the surface (normal offset)
    rms_after: float
    points_used: int


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) unit area-weighted vertex normals of a CCW mesh (outward)."""
    v = np.asarray(vertices, np.float64)
    tri = v[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    out = np.zeros_like(v)
    for k in range(3):
        np.add.at(out, faces[:, k], n)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def face_area(template) -> np.ndarray:
    """bool (V,): template vertices the dense points may move (the front of the head below the hairline,
    no ears, no neck), judged on the undeformed template."""
    x, y, z = template.vertices.T
    return (z > 0.05) & (y < 0.75) & (y > -1.05) & (np.abs(x) < 0.72) & np.isin(template.region, (0, 1))


def _zones(template) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(candidates, moving, pins) vertex indices: the face area, the face area plus the fade, a ring
    beyond (distances on the undeformed template)."""
    from scipy.spatial import cKDTree

    area = face_area(template)
    candidates = np.flatnonzero(area)
    dist, _ = cKDTree(template.vertices[candidates]).query(template.vertices)
    moving = np.flatnonzero(dist < FADE)
    pins = np.flatnonzero((dist >= FADE) & (dist < FADE + RING))[::PIN_EVERY]
    return candidates, moving, pins


def _normal_offsets(vertices, normals, candidates, points):
    """For each point: its nearest candidate vertex and its signed offset along that vertex's normal."""
    from scipy.spatial import cKDTree

    tree = cKDTree(vertices[candidates])
    _, k = tree.query(points)
    idx = candidates[k]
    offset = np.einsum("ij,ij->i", points - vertices[idx], normals[idx])
    return idx, offset


def fit_dense(template, vertices: np.ndarray, points: np.ndarray) -> DenseFit:
    """vertices (V, 3): the 68-landmark fit; points (P, 3): MediaPipe's face-mesh points (the first 468
    of landmarks_3d_478) in the same head frame. Returns the bent vertices and how far the points are
    from the surface before and after (RMS of their normal offsets, head units: x 100 = mm)."""
    from orchestrator.head_template.fit import rbf_deform

    pts = np.asarray(points, np.float64)[:468]
    v = np.asarray(vertices, np.float64).copy()
    candidates, moving, pins = _zones(template)
    before = None
    used = 0
    for _ in range(ITERATIONS):
        normals = vertex_normals(v, template.faces)
        idx, offset = _normal_offsets(v, normals, candidates, pts)
        ok = np.abs(offset) < MAX_OFFSET
        if before is None:
            before = float(np.sqrt((offset[ok] ** 2).mean())) if ok.any() else 0.0
        used = int(ok.sum())
        if used < 20:
            break
        # one control per vertex (several points may share a nearest vertex: average their offsets)
        ctrl, inv = np.unique(idx[ok], return_inverse=True)
        off = np.bincount(inv, offset[ok]) / np.bincount(inv)
        src = np.concatenate([v[ctrl], v[pins]])
        dst = np.concatenate([v[ctrl] + normals[ctrl] * off[:, None], v[pins]])
        v[moving] = rbf_deform(v[moving], src, dst, smooth=SMOOTH, affine=False)
    normals = vertex_normals(v, template.faces)
    _, offset = _normal_offsets(v, normals, candidates, pts)
    ok = np.abs(offset) < MAX_OFFSET
    after = float(np.sqrt((offset[ok] ** 2).mean())) if ok.any() else 0.0
    return DenseFit(v, before or 0.0, after, used)
