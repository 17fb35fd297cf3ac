"""The head template: a clean, symmetric, single-boundary mesh with a sane UV layout and anchors."""

from __future__ import annotations

from collections import Counter

import numpy as np

from services.core.landmarks import TEMPLATE_68


def _directed_edges(faces):
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def boundary_loops(faces: np.ndarray) -> list[list[int]]:
    """Boundary edges (used by one triangle) chained into loops."""
    e = _directed_edges(faces)
    undirected = Counter(map(tuple, np.sort(e, 1).tolist()))
    nxt = {int(a): int(b) for a, b in e.tolist() if undirected[tuple(sorted((a, b)))] == 1}
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop, v = [], start
        while v not in seen:
            seen.add(v)
            loop.append(v)
            v = nxt[v]
        loops.append(loop)
    return loops


def check_clean_mesh(vertices: np.ndarray, faces: np.ndarray, neck_ring: int) -> None:
    """Manifold, consistently wound outward, no degenerate triangles, and open only at the neck: one
    boundary loop of neck_ring vertices at the bottom."""
    e = _directed_edges(faces)
    directed = Counter(map(tuple, e.tolist()))
    assert max(directed.values()) == 1, "an edge is used twice in the same direction: inconsistent winding"
    undirected = Counter(map(tuple, np.sort(e, 1).tolist()))
    assert max(undirected.values()) == 2, "non-manifold edge"
    loops = boundary_loops(faces)
    assert len(loops) == 1 and len(loops[0]) == neck_ring, f"holes: {[len(l) for l in loops]}"
    assert np.ptp(vertices[loops[0], 1]) < 0.05 and vertices[loops[0], 1].mean() < vertices[:, 1].min() + 0.05
    v = vertices[faces]
    area2 = np.linalg.norm(np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0]), axis=1)
    assert area2.min() > 1e-9, "degenerate triangle"
    # outward: close the neck with a fan to its centre; the enclosed volume is positive
    ring = np.array(loops[0])
    centre = vertices[ring].mean(0)
    cap_v = np.concatenate([vertices, centre[None]])
    c = len(vertices)
    cap = np.stack([ring, np.roll(ring, -1), np.full(len(ring), c)], 1)[:, ::-1]
    closed = np.concatenate([faces, cap])
    t = cap_v[closed]
    volume = np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6
    assert volume > 3.0, f"volume {volume}: faces point inwards or the head collapsed"
    # every triangle faces away from the head's vertical axis or up (none flipped inwards)
    n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    radial = v.mean(1) - np.array([0.0, 0.0, -0.1])
    assert (np.einsum("ij,ij->i", n, radial) > 0).mean() > 0.97


def test_template_is_a_clean_head_open_only_at_the_neck(template):
    check_clean_mesh(template.vertices, template.faces, template.cols)
    assert len(template.vertices) < 20000 and len(template.faces) < 40000   # light enough for a CPU
    lo, hi = template.vertices.min(0), template.vertices.max(0)
    assert 1.4 < hi[0] - lo[0] < 1.9 and 2.6 < hi[1] - lo[1] < 3.2 and 2.0 < hi[2] - lo[2] < 2.5


def test_uv_layout_in_range_and_not_folded(template):
    uv = template.uvs
    assert uv.min() >= 0 and uv.max() <= 1 and template.uv_faces.shape == template.faces.shape
    t = uv[template.uv_faces]
    signed = (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 1, 1] - t[:, 0, 1]) * (t[:, 2, 0] - t[:, 0, 0])
    assert (np.sign(signed) == np.sign(signed[len(signed) // 2])).all(), "a UV triangle is flipped"
    # the face's midline sits at u = 0.5: the nose tip's UV
    nose = template.anchors[30]
    corner = np.argwhere(template.faces == nose)[0]
    assert abs(template.uvs[template.uv_faces[corner[0], corner[1]], 0] - 0.5) < 0.01


def test_mirror_symmetric_with_anchors_on_the_generic_landmarks(template):
    v = template.vertices
    assert np.abs(v[template.mirror] * [-1, 1, 1] - v).max() < 1e-6
    assert np.abs(v[template.anchors] - TEMPLATE_68).max() < 1e-4
    assert len(set(template.anchors.tolist())) == 68
    # the scalp is above the face, the neck below it
    assert v[template.region == 1, 1].mean() > v[template.anchors[27], 1] > v[template.region == 3, 1].mean()


def test_template_is_deterministic_and_cached(template):
    from orchestrator.head_template.build import build_template

    again = build_template()
    np.testing.assert_allclose(again.vertices, template.vertices, atol=1e-9)
    assert (again.faces == template.faces).all() and (again.anchors == template.anchors).all()
