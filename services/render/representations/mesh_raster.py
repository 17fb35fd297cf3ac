"""Differentiable triangle rasterisation, the pure-torch reference for CPU machines (the nvdiffrast path
for CUDA, with the same inputs and outputs, and the choice between them: mesh_nvdiffrast.py).

Conventions (protos/headforge/v1/common.proto): OpenCV pinhole cameras, world-to-camera extrinsics,
pixel centres at integer + 0.5, images NCHW with row 0 at the top. Both sides of every triangle are
drawn (no culling); triangles with a vertex closer than `near` to the camera plane are dropped whole
(no clipping), which is harmless for orbit cameras around a head.

The torch path, in three steps:
  1. `rasterize_screen`: which triangle is nearest at each pixel centre (z-buffer, no gradient). Each
     (camera, triangle) pair enumerates exactly the pixel centres of its bounding box (no padding to a
     common box size), in chunks of at most `budget` candidates; depth and triangle index are packed in
     one int64 key so a single scatter-min resolves visibility and ties deterministically.
  2. `pixel_barycentrics`: for the visible triangle of each covered pixel, perspective-correct
     barycentrics are recomputed from the projected vertices with autograd, so anything interpolated
     with them (depth, normals, UVs, colours) is differentiable w.r.t. vertex positions and attributes.
  3. `antialias`: analytic silhouette anti-aliasing in the spirit of nvdiffrast's `antialias`. For two
     neighbouring pixels showing different triangles, the triangle nearer to the camera is tested for a
     silhouette edge (a mesh boundary, or an edge whose other triangle faces the other way on screen)
     crossing the segment between the two pixel centres. If it crosses at a fraction t from the nearer
     pixel's centre, the pixel on the far side of the midpoint is blended towards the other pixel's
     colour by |t - 1/2|. The blend weight is a differentiable function of the edge's projected
     vertices: this is what lets image losses move silhouettes. The result is continuous as an edge
     sweeps across a pixel centre (both sides give a 50/50 blend there).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from services.core.camera_batch import CameraBatch

DEFAULT_NEAR = 1e-3
# candidate (pixel, triangle) pairs evaluated at once by the torch z-buffer; ~40 bytes each
DEFAULT_BUDGET = 1 << 21


# --------------------------------------------------------------------------------------------------
# geometry helpers shared by both backends

def project_vertices(vertices: torch.Tensor, cameras: CameraBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """World vertices (V, 3) or (N, V, 3) -> pixel positions (N, V, 2) and camera-frame depth z (N, V),
    world units along the camera's +z. Differentiable w.r.t. vertices."""
    R = cameras.world_to_camera[:, :3, :3].to(vertices)
    t = cameras.world_to_camera[:, :3, 3].to(vertices)
    K = cameras.K.to(vertices)
    if vertices.dim() == 2:
        cam = torch.einsum("nij,vj->nvi", R, vertices) + t[:, None]
    else:
        cam = torch.einsum("nij,nvj->nvi", R, vertices) + t[:, None]
    z = cam[..., 2]
    zs = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    x = cam[..., 0] / zs
    y = cam[..., 1] / zs
    u = K[:, 0, 0, None] * x + K[:, 0, 1, None] * y + K[:, 0, 2, None]
    v = K[:, 1, 1, None] * y + K[:, 1, 2, None]
    return torch.stack([u, v], -1), z


def _cross2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """z component of the 2D cross product of (..., 2) vectors."""
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def edge_neighbors(faces: torch.Tensor) -> torch.Tensor:
    """(F, 3) index of the triangle across edge k = (faces[f, k], faces[f, (k + 1) % 3]); -1 for boundary
    edges and for non-manifold edges (shared by more than two triangles), which the anti-aliasing then
    treats as silhouettes."""
    faces = faces.long()
    F_ = faces.shape[0]
    a = faces
    b = faces.roll(-1, dims=1)
    lo, hi = torch.minimum(a, b).reshape(-1), torch.maximum(a, b).reshape(-1)
    nv = int(faces.max().item()) + 1 if F_ else 1
    keys = lo * nv + hi
    order = torch.argsort(keys)
    sk = keys[order]
    _, inverse, counts = torch.unique_consecutive(sk, return_inverse=True, return_counts=True)
    cnt = counts[inverse]
    pair = (sk[1:] == sk[:-1]) & (cnt[:-1] == 2)
    h1, h2 = order[:-1][pair], order[1:][pair]
    nbr = torch.full((3 * F_,), -1, dtype=torch.long, device=faces.device)
    nbr[h1] = h2 // 3
    nbr[h2] = h1 // 3
    return nbr.view(F_, 3)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (V, 3) of a mesh whose faces are counter-clockwise from outside.
    Differentiable w.r.t. vertices; vertices on no triangle get (0, 0, 0)."""
    fn = face_normals(vertices, faces, normalize=False)
    n = torch.zeros_like(vertices)
    idx = faces.long()
    for k in range(3):
        n = n.index_add(0, idx[:, k], fn)
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def face_normals(vertices: torch.Tensor, faces: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """(F, 3) face normals (unit, or with length = twice the area when normalize=False)."""
    v = vertices[faces.long()]
    n = torch.linalg.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-20) if normalize else n


# --------------------------------------------------------------------------------------------------
# torch z-buffer

@torch.no_grad()
def rasterize_screen(screen: torch.Tensor, z: torch.Tensor, faces: torch.Tensor, height: int, width: int,
                     near: float = DEFAULT_NEAR, budget: int = DEFAULT_BUDGET) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest triangle at each pixel centre. screen (N, V, 2) pixel positions, z (N, V) depth (> near
    to be drawn), faces (F, 3). Returns triangle index (N, H, W) int64 (-1 where none) and depth
    (N, H, W) of that surface (inf where none). Not differentiable."""
    N = screen.shape[0]
    faces = faces.long()
    device = screen.device
    HW = height * width
    INF_KEY = torch.iinfo(torch.int64).max
    zbuf = torch.full((N * HW,), INF_KEY, dtype=torch.int64, device=device)
    F_ = faces.shape[0]
    if F_ > 0:
        q_all = torch.nan_to_num(screen[:, faces], nan=-1e30)      # (N, F, 3, 2)
        lo, hi = q_all.amin(-2), q_all.amax(-2)
        j0 = torch.ceil(lo[..., 0] - 0.5).clamp(0, width).long()
        j1 = torch.floor(hi[..., 0] - 0.5).clamp(-1, width - 1).long()
        i0 = torch.ceil(lo[..., 1] - 0.5).clamp(0, height).long()
        i1 = torch.floor(hi[..., 1] - 0.5).clamp(-1, height - 1).long()
        bw = (j1 - j0 + 1).clamp_min(0).reshape(-1)
        count = bw * (i1 - i0 + 1).clamp_min(0).reshape(-1)
        prim = count.nonzero().squeeze(1)                          # flat n * F + f, >= 1 pixel centre
        q = q_all.reshape(-1, 3, 2)[prim]
        w = z[(prim // F_)[:, None], faces[prim % F_]]
        area = _cross2(q[:, 1] - q[:, 0], q[:, 2] - q[:, 0])
        ok = (w > near).all(-1) & (area != 0) & torch.isfinite(q).all(-1).all(-1)
        prim, q, w, area = prim[ok], q[ok], w[ok], area[ok]
        _zbuffer_chunks(zbuf, prim, q, w, area, count[prim], j0.reshape(-1)[prim], i0.reshape(-1)[prim],
                        bw[prim], F_, height, width, budget)
    hit = zbuf != INF_KEY
    tri = torch.where(hit, zbuf & 0xFFFFFFFF, torch.full_like(zbuf, -1))
    depth = (zbuf >> 32).to(torch.int32).view(torch.float32)
    depth = torch.where(hit, depth, torch.full_like(depth, float("inf")))
    return tri.view(N, height, width), depth.view(N, height, width)


def _zbuffer_chunks(zbuf, prim, q, w, area, cnt, j0, i0, bw, num_faces, height, width, budget) -> None:
    """Scatter-min depth|triangle keys of every covered candidate pixel into zbuf (N*H*W,) int64.
    q (P, 3, 2) projected corners, w (P, 3) depths, area (P,) signed doubled area, cnt/j0/i0/bw (P,) the
    bounding box (pixel count, first column, first row, width) of each (camera, triangle) primitive."""
    if prim.numel() == 0:
        return
    device = zbuf.device
    ends = torch.cumsum(cnt, 0)
    starts = ends - cnt
    total = int(ends[-1])
    pn, pf = prim // num_faces, prim % num_faces
    sgn = torch.sign(area)
    c0 = 0
    while c0 < total:
        # primitives whose candidates start in [c0, c0 + budget); a huge single one goes alone
        p_lo = int(torch.searchsorted(starts, torch.tensor(c0, device=device)))
        p_hi = max(int(torch.searchsorted(starts, torch.tensor(c0 + budget, device=device))), p_lo + 1)
        rep = torch.repeat_interleave(torch.arange(p_lo, p_hi, device=device), cnt[p_lo:p_hi])
        local = torch.arange(int(starts[p_lo]), int(ends[p_hi - 1]), device=device) - starts[rep]
        px = j0[rep] + local % bw[rep]
        py = i0[rep] + local // bw[rep]
        p = torch.stack([px, py], -1).to(q.dtype) + 0.5
        qc = q[rep] - p[:, None]                                   # corners relative to the pixel centre
        # e_k = cross(q_{k+1} - p, q_{k+2} - p): exactly negated for the twin half-edge of a neighbour,
        # so shared edges are watertight without any epsilon
        e = torch.stack([_cross2(qc[:, (k + 1) % 3], qc[:, (k + 2) % 3]) for k in range(3)], -1)
        s = sgn[rep]
        inside = ((e * s[:, None]) >= 0).all(-1)
        invz = (e / w[rep]).sum(-1) / area[rep]                    # sum_k b_k / z_k
        inside &= invz > 0
        depth = (1.0 / invz).float()
        pix = pn[rep] * (height * width) + py * width + px
        key = (depth.view(torch.int32).long() << 32) | pf[rep]
        zbuf.scatter_reduce_(0, pix[inside], key[inside], reduce="amin")
        c0 = int(ends[p_hi - 1])


def pixel_barycentrics(screen: torch.Tensor, z: torch.Tensor, faces: torch.Tensor, tri_id: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Perspective-correct barycentrics of each covered pixel centre w.r.t. its visible triangle.

    screen (N, V, 2), z (N, V), faces (F, 3), tri_id (N, H, W) from rasterize_screen. Returns the flat
    pixel index into N*H*W (P,), the camera index (P,), and barycentrics (P, 3) that sum to 1 and are
    differentiable w.r.t. screen and z (so w.r.t. the vertices)."""
    N, H, W = tri_id.shape
    flat = tri_id.reshape(-1)
    pix = (flat >= 0).nonzero().squeeze(1)
    f = flat[pix]
    n = pix // (H * W)
    rem = pix % (H * W)
    c = torch.stack([(rem % W).to(screen.dtype) + 0.5, (rem // W).to(screen.dtype) + 0.5], -1)   # (P, 2)
    vid = faces.long()[f]                                   # (P, 3)
    q = screen[n[:, None], vid]                             # (P, 3, 2)
    w = z[n[:, None], vid]                                  # (P, 3)
    area = _cross2(q[:, 1] - q[:, 0], q[:, 2] - q[:, 0])
    b = torch.stack([_cross2(q[:, (k + 1) % 3] - c, q[:, (k + 2) % 3] - c) for k in range(3)], -1) / area[:, None]
    pw = b / w
    return pix, n, pw / pw.sum(-1, keepdim=True)


def antialias(image: torch.Tensor, tri_id: torch.Tensor, depth: torch.Tensor, screen: torch.Tensor,
              faces: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
    """Silhouette anti-aliasing (see the module docstring). image (N, C, H, W), tri_id and depth
    (N, H, W) from rasterize_screen, screen (N, V, 2) projected vertices (gradients flow into them),
    faces (F, 3), neighbors (F, 3) from edge_neighbors. Returns (N, C, H, W)."""
    N, C, H, W = image.shape
    flat = image.permute(0, 2, 3, 1).reshape(-1, C)
    tri = tri_id.reshape(-1)
    zflat = depth.reshape(-1)
    faces = faces.long()
    sd = screen.detach()

    def facing(n: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """Whether triangle f is counter-clockwise on screen in camera n (which side faces it)."""
        q = sd[n[:, None], faces[f]]
        return _cross2(q[:, 1] - q[:, 0], q[:, 2] - q[:, 0]) > 0

    out = flat
    for dx, dy in ((1, 0), (0, 1)):
        a = tri_id[:, :H - dy, :W - dx]
        b = tri_id[:, dy:, dx:]
        n, i, j = (a != b).nonzero(as_tuple=True)
        if n.numel() == 0:
            continue
        ia = n * H * W + i * W + j
        ib = ia + dy * W + dx
        a_front = zflat[ia] <= zflat[ib]
        fg = torch.where(a_front, ia, ib)
        bg = torch.where(a_front, ib, ia)
        T = tri[fg]
        sgn = torch.where(a_front, 1.0, -1.0).to(screen.dtype)
        d = torch.stack([sgn * dx, sgn * dy], -1)                  # unit step from fg towards bg
        rem = fg % (H * W)
        cf = torch.stack([(rem % W).to(screen.dtype) + 0.5, (rem // W).to(screen.dtype) + 0.5], -1)
        with torch.no_grad():
            q = screen.detach()[n[:, None], faces[T]]               # (K, 3, 2)
            ts, ok = [], []
            for k in range(3):
                e0, ev = q[:, k], q[:, (k + 1) % 3] - q[:, k]
                den = _cross2(d, ev)
                safe = torch.where(den.abs() > 1e-12, den, torch.ones_like(den))
                t = _cross2(e0 - cf, ev) / safe
                s = _cross2(e0 - cf, d) / safe
                # each edge is handled by the pair direction closer to its normal (horizontal pairs for
                # steep edges, vertical pairs for flat ones), so no edge is blended twice
                steep = ev[:, 1].abs() >= ev[:, 0].abs()
                along = steep if dx else ~steep
                ok.append(along & (den.abs() > 1e-12) & (t >= -1e-6) & (t <= 1 + 1e-6) & (s >= 0) & (s <= 1))
                ts.append(torch.where(ok[-1], t, torch.full_like(t, float("inf"))))
            ts = torch.stack(ts, -1)
            k = ts.argmin(-1)
            found = torch.stack(ok, -1).any(-1)
            nb = neighbors[T, k]
            sil = found & ((nb < 0) | (facing(n, nb.clamp_min(0)) != facing(n, T)))
        if not bool(sil.any()):
            continue
        n, fg, bg, T, k, d, cf = n[sil], fg[sil], bg[sil], T[sil], k[sil], d[sil], cf[sil]
        vid = faces[T]
        e0 = screen[n, vid.gather(1, k[:, None]).squeeze(1)]
        e1 = screen[n, vid.gather(1, ((k + 1) % 3)[:, None]).squeeze(1)]
        ev = e1 - e0
        t = _cross2(e0 - cf, ev) / _cross2(d, ev)
        col_f, col_b = flat[fg], flat[bg]
        w_f = (0.5 - t).clamp_min(0)[:, None]     # edge inside fg pixel's half: fg pixel partly background
        w_b = (t - 0.5).clamp_min(0)[:, None]     # edge beyond the midpoint: bg pixel partly foreground
        out = out.index_add(0, fg, w_f * (col_b - col_f)).index_add(0, bg, w_b * (col_f - col_b))
    return out.view(N, H, W, C).permute(0, 3, 1, 2)


# --------------------------------------------------------------------------------------------------
# backends

@dataclass
class Fragments:
    """One rasterisation of a mesh from N cameras of H x W pixels.

    tri_id (N, H, W) int64, -1 where no triangle; faces (F, 3) the geometry triangles. The other fields
    are backend-specific (projected vertices, per-pixel barycentrics, or nvdiffrast's buffers)."""

    tri_id: torch.Tensor
    faces: torch.Tensor
    size: tuple[int, int, int]
    extra: dict = field(default_factory=dict)


class TorchRasterizer:
    """Pure-torch rasteriser (CPU or GPU, any float dtype; float64 for gradient checks)."""

    name = "torch"

    def __init__(self, near: float = DEFAULT_NEAR, budget: int = DEFAULT_BUDGET):
        self.near = near
        self.budget = budget

    def rasterize(self, vertices: torch.Tensor, faces: torch.Tensor, cameras: CameraBatch) -> Fragments:
        """vertices (V, 3) or (N, V, 3) world, faces (F, 3) -> Fragments."""
        screen, z = project_vertices(vertices, cameras)
        N, H, W = len(cameras), cameras.height, cameras.width
        tri_id, depth = rasterize_screen(screen, z, faces, H, W, self.near, self.budget)
        pix, cam, bary = pixel_barycentrics(screen, z, faces, tri_id)
        return Fragments(tri_id, faces.long(), (N, H, W),
                         dict(screen=screen, z=z, depth=depth, pix=pix, cam=cam, bary=bary))

    def interpolate(self, frags: Fragments, attr: torch.Tensor, faces: torch.Tensor | None = None) -> torch.Tensor:
        """Perspective-correct interpolation of vertex attributes attr (V', C) or (N, V', C) indexed by
        faces (F, 3) (default: the geometry faces; pass e.g. UV faces for a separate UV topology).
        Returns (N, C, H, W), 0 where no triangle."""
        faces = frags.faces if faces is None else faces.long()
        e = frags.extra
        pix, cam, bary = e["pix"], e["cam"], e["bary"]
        vid = faces[frags.tri_id.reshape(-1)[pix]]                 # (P, 3)
        vals = attr[vid] if attr.dim() == 2 else attr[cam[:, None], vid]
        vals = (vals * bary.to(vals.dtype)[..., None]).sum(1)       # (P, C)
        N, H, W = frags.size
        out = vals.new_zeros(N * H * W, vals.shape[-1]).index_put((pix,), vals)
        return out.view(N, H, W, -1).permute(0, 3, 1, 2)

    def barycentrics(self, frags: Fragments) -> torch.Tensor:
        """Perspective-correct barycentrics (N, 3, H, W) of each pixel centre w.r.t. its triangle's
        vertices faces[triangle_id] in order; 0 where no triangle. Differentiable w.r.t. vertices."""
        N, H, W = frags.size
        e = frags.extra
        out = e["bary"].new_zeros(N * H * W, 3).index_put((e["pix"],), e["bary"])
        return out.view(N, H, W, 3).permute(0, 3, 1, 2)

    def antialias(self, frags: Fragments, image: torch.Tensor, neighbors: torch.Tensor) -> torch.Tensor:
        e = frags.extra
        return antialias(image, frags.tri_id, e["depth"], e["screen"], frags.faces, neighbors)

    def texture(self, texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
        """Bilinear lookup of texture (T, T, C) at uv (N, 2, H, W) (v down, texel centres at
        (i + 0.5) / T, clamped at the border). Returns (N, C, H, W), differentiable in both."""
        N, _, H, W = uv.shape
        grid = (uv.permute(0, 2, 3, 1) * 2 - 1).to(texture.dtype)
        tex = texture.permute(2, 0, 1)[None].expand(N, -1, -1, -1)
        return F.grid_sample(tex, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def depth(self, frags: Fragments) -> torch.Tensor:
        """Camera-frame depth (N, 1, H, W), differentiable, 0 where no triangle."""
        z = frags.extra["z"]
        return self.interpolate(frags, z[..., None])
