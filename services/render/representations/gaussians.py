"""3D Gaussians (3DGS) for the render service: parameters, a pure-torch tile rasteriser, a gsplat path.

A scene is P anisotropic Gaussians with the 3DGS parameterisation (raw, un-activated tensors):
  means (P, 3) world units; scales (P, 3) log of the standard deviations (world units);
  quats (P, 4) rotation as (w, x, y, z), normalised when used; opacities (P,) logits;
  sh0 (P, 1, 3) and shN (P, K - 1, 3) spherical-harmonics colour coefficients, K = (degree + 1)^2,
  colour = max(0, sum_k sh_k Y_k(d) + 0.5) with d the unit direction camera centre -> mean and Y the
  real SH basis of 3DGS (degree <= 3).

Rendering (both backends, same inputs and outputs): EWA splatting. Each mean is projected with the
OpenCV pinhole (pixel centres at +0.5); its 2D covariance is J W S W^T J^T + 0.3 px^2 (the low-pass of
3DGS and gsplat). Gaussians behind the near plane (z <= 0.01) or whose screen box misses the image are
culled; the box is the 3-sigma box, widened or narrowed to where the Gaussian's alpha falls to 1/255
(at most 3.33 sigma), in whole pixels, as current gsplat does. The rest are sorted by camera z per
16x16 tile and alpha-composited front to back: alpha = min(alpha_max, o exp(-d^2 / 2)), contributions
below 1/255 skipped, a pixel finished before the Gaussian that would take its transmittance to <= 1e-4.
Outputs (render.proto): rgb over the background; alpha; depth = sum(w z) / alpha with z the camera z of
each Gaussian's centre (0 where alpha = 0); normal_camera = sum(w n) with n the Gaussian's shortest
axis turned toward the camera (alpha-weighted, not re-normalised: length <= alpha); normal_world the
same rotated into the world frame.

Backends:
  "torch"  `rasterize_torch`, the reference; runs anywhere. Each tile's depth-sorted Gaussians are
           packed into fixed-size chunks so the work is dense batched tensors; log-alpha is a quadratic
           polynomial per Gaussian evaluated for a whole tile by one matrix product; compositing has a
           hand-written backward that recomputes per-pixel terms in batches (no large saved tensors).
  "gsplat" `rasterize_gsplat`: `gsplat.rasterization` (CUDA; compiled on first use), chosen when the
           scene is on CUDA and gsplat is installed.
Expected agreement (float32, same scene and cameras; the gpu test checks it): gsplat clamps alpha at
0.999 where this reference uses 0.99 (3DGS), so compare with `alpha_max=0.999` on the torch side; then
rgb, alpha and normals agree to max |diff| <= 2e-3 and mean |diff| <= 1e-4, depth to 1e-3 relative where
alpha > 0.5, the differences coming from summation order, the CUDA fast exp and pixels at the edge of a
screen box (gsplat rounds the box from float32 maths). With the default 0.99, pixels whose first
Gaussian is near-opaque differ by up to 0.01.

Densification statistics: during backward the screen-space gradient of every visible Gaussian's 2D
mean is converted to NDC units (x W/2, y H/2) and multiplied by the number of cameras of the render
(as gsplat: the threshold assumes a loss averaged over the cameras); its norm is accumulated per
Gaussian with a visibility count (buffers grad2d_sum, grad2d_count) for gaussians_strategy.py.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Collection

import numpy as np
import torch
from torch import nn

from services.core.camera_batch import CameraBatch
from services.render.representations import gaussians_strategy as strategy_ops
from services.render.representations.base import Representation
from services.render.representations.gaussians_ply import read_ply, write_ply
from services.render.representations.gaussians_strategy import GaussianStrategy, GaussianStrategyConfig

GROUPS = ("means", "scales", "quats", "opacities", "sh0", "shN")
OUTPUTS = frozenset({"rgb", "alpha", "depth", "normal_camera", "normal_world"})
NEAR_PLANE = 0.01
EPS2D = 0.3  # px^2 added to the 2D covariance (anti-aliasing low-pass of 3DGS / gsplat)
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4  # transmittance at which a pixel is finished
TILE_SIZE = 16
MAX_EXTEND = 3.33  # largest screen box half-size in standard deviations (gsplat)
BATCH_ELEMENTS = 1 << 17  # per-pixel work items per compositing batch: ~0.5 MB temporaries (larger ones are
# page-faulted in anew by the allocator at every batch: 2x slower measured)
_LOG_FLOOR = -30.0  # exp() argument floor: e^-30 ~ 1e-13 is 0 for every purpose here

# Real spherical-harmonics constants of the 3DGS basis (degree 0..3).
_SH_C0 = 0.28209479177387814
_SH_C1 = 0.4886025119029199
_SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
          0.5462742152960396)
_SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
          -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


# ----------------------------------------------------------------------------------------------------
# Gaussian maths
# ----------------------------------------------------------------------------------------------------

def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Real SH basis of 3DGS at unit directions dirs (..., 3) -> (..., (degree + 1)^2)."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, _SH_C0)]
    if degree >= 1:
        out += [-_SH_C1 * y, _SH_C1 * z, -_SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [_SH_C2[0] * xy, _SH_C2[1] * yz, _SH_C2[2] * (2 * zz - xx - yy), _SH_C2[3] * xz,
                _SH_C2[4] * (xx - yy)]
    if degree >= 3:
        out += [_SH_C3[0] * y * (3 * xx - yy), _SH_C3[1] * xy * z, _SH_C3[2] * y * (4 * zz - xx - yy),
                _SH_C3[3] * z * (2 * zz - 3 * xx - 3 * yy), _SH_C3[4] * x * (4 * zz - xx - yy),
                _SH_C3[5] * z * (xx - yy), _SH_C3[6] * x * (xx - 3 * yy)]
    return torch.stack(out, -1)


def sh_to_colors(sh: torch.Tensor, means: torch.Tensor, centers: torch.Tensor, degree: int) -> torch.Tensor:
    """Colours (C, P, 3) >= 0 seen from C camera centres (C, 3), from SH coefficients sh (P, K, 3) of
    Gaussians at means (P, 3); only the first (degree + 1)^2 coefficients are used."""
    k = (degree + 1) ** 2
    if degree == 0:
        return (_SH_C0 * sh[:, 0] + 0.5).clamp_min(0.0).expand(centers.shape[0], -1, -1)
    dirs = means[None] - centers[:, None]
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis(dirs, degree)  # (C, P, k)
    return (torch.einsum("cpk,pkd->cpd", basis, sh[:, :k]) + 0.5).clamp_min(0.0)


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) from quaternions (..., 4) (w, x, y, z), normalised here."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    rows = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
    return torch.stack(rows, -1).reshape(*q.shape[:-1], 3, 3)


def covariances(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """World covariances (P, 3, 3) = R diag(s^2) R^T from quats (P, 4) and scales (P, 3) (world units,
    activated)."""
    m = quat_to_rotmat(quats) * scales[:, None, :]
    return m @ m.transpose(1, 2)


def shortest_axis_normals(quats: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """Unit world normals (P, 3): each Gaussian's axis of smallest scale (sign arbitrary)."""
    rot = quat_to_rotmat(quats)
    idx = log_scales.argmin(dim=1)
    return rot.gather(2, idx[:, None, None].expand(-1, 3, 1))[..., 0]


@dataclass
class Projection:
    """Gaussians projected into C cameras (P Gaussians).

    means2d (C, P, 2) pixels (x right, y down; pixel centres at +0.5); conics (C, P, 3) the inverse 2D
    covariance (a, b, c) of [[a, b], [b, c]] in 1/px^2; means_cam (C, P, 3) camera-frame centres (z is
    the depth); radii (C, P, 2) half sizes of the screen box in pixels (no gradient); visible (C, P).
    """

    means2d: torch.Tensor
    conics: torch.Tensor
    means_cam: torch.Tensor
    radii: torch.Tensor
    visible: torch.Tensor


def project_gaussians(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                      K: torch.Tensor, world_to_camera: torch.Tensor, width: int, height: int) -> Projection:
    """EWA projection of Gaussians (means (P, 3), quats (P, 4), activated scales (P, 3) and opacities
    (P,)) into cameras K (C, 3, 3), world_to_camera (C, 4, 4) of width x height pixels.

    The screen box of a Gaussian is its 3-sigma box widened or narrowed to where its alpha falls to
    1/255, at most 3.33 sigma, rounded up to whole pixels (gsplat's opacity-aware box): pixels outside
    it would be skipped anyway, and the tile coverage is then the same as gsplat's."""
    rot, trans = world_to_camera[:, :3, :3], world_to_camera[:, :3, 3]
    p_cam = torch.einsum("cij,pj->cpi", rot, means) + trans[:, None]
    z = p_cam[..., 2]
    in_front = z > NEAR_PLANE
    # culled entries must stay finite: their (zero) gradients would otherwise turn into NaN
    z_safe = torch.where(in_front, z, torch.ones_like(z))
    fx, fy, cx, cy = (K[:, 0, 0, None], K[:, 1, 1, None], K[:, 0, 2, None], K[:, 1, 2, None])
    u, v = p_cam[..., 0] / z_safe, p_cam[..., 1] / z_safe
    means2d = torch.stack([fx * u + cx, fy * v + cy], -1)
    # Jacobian evaluated with x/z, y/z clamped a little outside the view (as 3DGS/gsplat): keeps the
    # footprints of Gaussians far off-screen from exploding
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    u_c = torch.minimum(torch.maximum(u, -(cx / fx + 0.3 * tan_x)), (width - cx) / fx + 0.3 * tan_x)
    v_c = torch.minimum(torch.maximum(v, -(cy / fy + 0.3 * tan_y)), (height - cy) / fy + 0.3 * tan_y)
    zeros = torch.zeros_like(z)
    J = torch.stack([torch.stack([fx / z_safe, zeros, -fx * u_c / z_safe], -1),
                     torch.stack([zeros, fy / z_safe, -fy * v_c / z_safe], -1)], -2)  # (C, P, 2, 3)
    cov_cam = rot[:, None] @ covariances(quats, scales)[None] @ rot[:, None].transpose(-1, -2)
    cov2d = J @ cov_cam @ J.transpose(-1, -2)
    a = cov2d[..., 0, 0] + EPS2D
    b = cov2d[..., 0, 1]
    c = cov2d[..., 1, 1] + EPS2D
    det = a * c - b * b
    ok = in_front & (det > 1e-12)
    det = torch.where(ok, det, torch.ones_like(det))
    conics = torch.stack([c / det, -b / det, a / det], -1)
    with torch.no_grad():
        o = opacities.detach()
        extend = torch.sqrt(2 * torch.log(o.clamp_min(ALPHA_MIN) / ALPHA_MIN)).clamp_max(MAX_EXTEND)
        radii = torch.ceil(extend[:, None] * torch.stack([a, c], -1).detach().clamp_min(0).sqrt())
        m = means2d.detach()
        on_image = ((m[..., 0] + radii[..., 0] > 0) & (m[..., 0] - radii[..., 0] < width)
                    & (m[..., 1] + radii[..., 1] > 0) & (m[..., 1] - radii[..., 1] < height))
        visible = ok & on_image & torch.isfinite(m).all(-1) & (o >= ALPHA_MIN) & (radii > 0).all(-1)
        radii = torch.where(visible[..., None], radii, torch.zeros_like(radii))
    return Projection(means2d, conics, p_cam, radii, visible)


# ----------------------------------------------------------------------------------------------------
# Tile binning
# ----------------------------------------------------------------------------------------------------

@dataclass
class TileBins:
    """Visible (camera, Gaussian) pairs assigned to the tiles their screen box touches, sorted by tile
    then depth and packed into chunks of `chunk` slots (the last chunk of a tile is padded).

    slot_src (Q * chunk,) index into the flattened (C * P) per-camera arrays, C * P for padding;
    chunk_tile (Q,) global tile id (camera * tiles_y * tiles_x + row * tiles_x + col) of each chunk;
    chunk_first (Q,) index of the first chunk of the same tile; chunk_origin (Q, 2) pixel coordinates
    of the tile's top-left corner.
    """

    tile: int
    tiles_x: int
    tiles_y: int
    num_tiles: int
    chunk: int
    slot_src: torch.Tensor
    chunk_tile: torch.Tensor
    chunk_first: torch.Tensor
    chunk_origin: torch.Tensor


def _depth_ranks(depths: torch.Tensor) -> torch.Tensor:
    """Rank (C, P) int64 of each Gaussian in its camera's front-to-back order."""
    order = depths.argsort(dim=1, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order).contiguous())
    return ranks


@torch.no_grad()
def bin_gaussians(proj: Projection, width: int, height: int, tile: int = TILE_SIZE,
                  chunk: int = 32) -> TileBins:
    """Assign visible Gaussians to tiles (16x16 pixels by default) and pack each tile's depth-sorted
    list into chunks of `chunk` slots."""
    C, P = proj.visible.shape
    device = proj.means2d.device
    tx, ty = math.ceil(width / tile), math.ceil(height / tile)
    num_tiles = C * tx * ty
    cam, gid = proj.visible.nonzero(as_tuple=True)
    m = proj.means2d.detach()[cam, gid].float()
    r = proj.radii[cam, gid].float()
    x0 = ((m[:, 0] - r[:, 0]) / tile).floor().clamp(0, tx - 1).long()
    x1 = ((m[:, 0] + r[:, 0]) / tile).floor().clamp(0, tx - 1).long()
    y0 = ((m[:, 1] - r[:, 1]) / tile).floor().clamp(0, ty - 1).long()
    y1 = ((m[:, 1] + r[:, 1]) / tile).floor().clamp(0, ty - 1).long()
    nx = x1 - x0 + 1
    counts = nx * (y1 - y0 + 1)
    owner = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
    local = torch.arange(len(owner), device=device) - (counts.cumsum(0) - counts)[owner]
    col = x0[owner] + local % nx[owner]
    row = y0[owner] + local // nx[owner]
    tile_id = (cam[owner] * ty + row) * tx + col
    rank = _depth_ranks(proj.means_cam[..., 2].detach())[cam, gid][owner]
    tile_id, perm = (tile_id * P + rank).sort()
    tile_id = tile_id // P
    src = (cam * P + gid)[owner][perm]

    per_tile = torch.bincount(tile_id, minlength=num_tiles)
    tile_start = per_tile.cumsum(0) - per_tile
    chunks_per_tile = (per_tile + chunk - 1) // chunk
    chunk_start = chunks_per_tile.cumsum(0) - chunks_per_tile
    pos = torch.arange(len(tile_id), device=device) - tile_start[tile_id]
    slot = chunk_start[tile_id] * chunk + pos
    num_chunks = int(chunks_per_tile.sum())
    slot_src = torch.full((num_chunks * chunk,), C * P, dtype=torch.long, device=device)
    slot_src[slot] = src
    chunk_tile = torch.repeat_interleave(torch.arange(num_tiles, device=device), chunks_per_tile)
    chunk_first = chunk_start[chunk_tile]
    local_tile = chunk_tile % (tx * ty)
    origin = torch.stack([(local_tile % tx) * tile, (local_tile // tx) * tile], -1)
    return TileBins(tile, tx, ty, num_tiles, chunk, slot_src, chunk_tile, chunk_first,
                    origin.to(proj.means2d.dtype))


# ----------------------------------------------------------------------------------------------------
# Compositing (hand-written backward)
# ----------------------------------------------------------------------------------------------------

def _segment_exclusive_cumsum(x: torch.Tensor, first: torch.Tensor) -> torch.Tensor:
    """Exclusive prefix sums of x (Q, ...) along dim 0, restarted at each segment; first (Q,) is the index
    of each row's segment start (segments contiguous). Summed in float64: the running sum across
    segments grows large and the subtraction would cancel in float32."""
    c = x.double().cumsum(0)
    excl = c - x.double()
    return (excl - excl[first]).to(x.dtype)


def _pixel_monomials(tile: int, dtype, device) -> torch.Tensor:
    """(tile * tile, 6) monomials (1, x, y, x^2, x y, y^2) of the pixel centres of a tile, row-major, with
    (x, y) in pixels relative to the tile centre."""
    r = torch.arange(tile, dtype=dtype, device=device) + 0.5 - tile / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    x, y = xx.reshape(-1), yy.reshape(-1)
    return torch.stack([torch.ones_like(x), x, y, x * x, x * y, y * y], -1)


def gaussian_log_alpha_coeffs(rel: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor) -> torch.Tensor:
    """Coefficients (..., 6) of log(o exp(-d^2 / 2)) as a quadratic polynomial in the pixel position
    (monomials of `_pixel_monomials`), from rel (..., 2) the 2D mean relative to the tile centre (px),
    conics (..., 3) and opacities (...) > 0. A polynomial makes the per-pixel evaluation one batched
    matrix product instead of a dozen element-wise passes."""
    rx, ry = rel.unbind(-1)
    ca, cb, cc = conics.unbind(-1)
    k0 = torch.log(opacities) - 0.5 * ca * rx * rx - cb * rx * ry - 0.5 * cc * ry * ry
    return torch.stack([k0, ca * rx + cb * ry, cb * rx + cc * ry, -0.5 * ca, -cb, -0.5 * cc], -1)


def _chunk_alphas(coeffs: torch.Tensor, mono: torch.Tensor, alpha_max: float):
    """Alphas per (chunk, pixel, slot): coeffs (Q, S, 6), mono (T, 6) -> the unclamped a_raw = o exp(power)
    and the composited a = min(a_raw, alpha_max), 0 below 1/255 (Q, T, S)."""
    # the floor keeps exp() out of denormals (slow on CPU); such alphas are below 1/255 anyway
    a_raw = torch.matmul(mono, coeffs.transpose(1, 2)).clamp_min_(_LOG_FLOOR).exp_()
    # 3DGS skips alpha < 1/255; threshold() is one fused pass (keeps x > t, else 0)
    a = torch.nn.functional.threshold(a_raw, ALPHA_MIN, 0.0).clamp_max_(alpha_max)
    return a_raw, a


def _chunk_weights(a: torch.Tensor, log_t_offset: torch.Tensor):
    """Blending weights w = a T (Q, T, S) from alphas a and the log-transmittance (Q, T) in front of each
    chunk; also T before each entry and the mask of entries composited before the pixel finished
    (T after them > T_MIN, the early stop of 3DGS/gsplat) is returned as its complement `done`."""
    log1m = torch.log1p(-a)
    log_t = log1m.cumsum(2).add_(log_t_offset[..., None])
    done = log_t <= math.log(T_MIN)
    t_excl = log_t.sub_(log1m).clamp_min_(_LOG_FLOOR).exp_()
    w = (a * t_excl).masked_fill_(done, 0.0)
    return w, t_excl, done


def _batches(num_chunks: int, per_chunk: int, budget: int | None = None):
    """Slices of chunks with about `budget` (default BATCH_ELEMENTS) (chunk x pixel x slot) elements each:
    small temporaries are reused by the allocator instead of being page-faulted in anew."""
    step = max(1, (budget or BATCH_ELEMENTS) // per_chunk)
    return [slice(s, min(num_chunks, s + step)) for s in range(0, num_chunks, step)]


class _TileComposite(torch.autograd.Function):
    """Front-to-back compositing of chunked tile lists. Inputs per chunk slot: coeffs (Q, S, 6) of each
    Gaussian's log-alpha polynomial, feats (Q, S, F). Outputs per tile pixel: sum_i w_i feats_i
    (num_tiles, T, F) and alpha = sum_i w_i (num_tiles, T).

    Chunks are processed in batches in tile order carrying each tile's log-transmittance forward; the
    backward walks the batches in reverse carrying the suffix sums sum_{k>i} w_k dL/dw_k, recomputing
    the per-pixel terms from the inputs and the saved per-chunk log-transmittance offsets (Q, T)."""

    @staticmethod
    def forward(ctx, coeffs, feats, chunk_tile, chunk_first, num_tiles, tile, alpha_max):
        mono = _pixel_monomials(tile, coeffs.dtype, coeffs.device)
        Q, S = coeffs.shape[:2]
        T = mono.shape[0]
        kw = dict(dtype=coeffs.dtype, device=coeffs.device)
        out = torch.zeros(num_tiles, T, feats.shape[-1], **kw)
        alpha = torch.zeros(num_tiles, T, **kw)
        carry = torch.zeros(num_tiles, T, **kw)
        offsets = torch.empty(Q, T, **kw)
        for sl in _batches(Q, T * S):
            a = _chunk_alphas(coeffs[sl], mono, alpha_max)[1]
            log1m = torch.log1p(-a)
            log_t = log1m.cumsum(2)
            tot = log_t[:, :, -1]
            ct = chunk_tile[sl]
            off = carry.index_select(0, ct) + _segment_exclusive_cumsum(tot, (chunk_first[sl] - sl.start).clamp_min(0))
            carry.index_add_(0, ct, tot)
            offsets[sl] = off
            log_t.add_(off[..., None])
            done = log_t <= math.log(T_MIN)
            w = log_t.sub_(log1m).clamp_min_(_LOG_FLOOR).exp_().mul_(a).masked_fill_(done, 0.0)
            out.index_add_(0, ct, torch.bmm(w, feats[sl]))
            alpha.index_add_(0, ct, w.sum(2))
        ctx.save_for_backward(coeffs, feats, chunk_tile, chunk_first, offsets)
        ctx.num_tiles, ctx.tile, ctx.alpha_max = num_tiles, tile, alpha_max
        return out, alpha

    @staticmethod
    def backward(ctx, g_out, g_alpha):
        coeffs, feats, chunk_tile, chunk_first, offsets = ctx.saved_tensors
        mono = _pixel_monomials(ctx.tile, coeffs.dtype, coeffs.device)
        Q, S = coeffs.shape[:2]
        T = mono.shape[0]
        g_out, g_alpha = g_out.contiguous(), g_alpha.contiguous()
        g_coeffs, g_feats = torch.zeros_like(coeffs), torch.zeros_like(feats)
        carry = torch.zeros(ctx.num_tiles, T, dtype=coeffs.dtype, device=coeffs.device)
        for sl in reversed(_batches(Q, T * S)):
            a_raw, a = _chunk_alphas(coeffs[sl], mono, ctx.alpha_max)
            w, t_excl, done = _chunk_weights(a, offsets[sl])
            ct = chunk_tile[sl]
            g_out_c = g_out.index_select(0, ct)  # (B, T, F)
            g_feats[sl] = torch.bmm(w.transpose(1, 2), g_out_c)
            # v = dL/dw_i = feats_i . g_out + g_alpha
            v = torch.bmm(g_out_c, feats[sl].transpose(1, 2)).add_(g_alpha.index_select(0, ct)[..., None])
            # w_i = a_i prod_{j<i}(1 - a_j)  =>  dL/da_i = T_i v_i - (sum_{k>i} w_k v_k) / (1 - a_i)
            prefix = w.mul_(v).cumsum(2)
            tot = prefix[:, :, -1].clone()
            prefix += _segment_exclusive_cumsum(tot, (chunk_first[sl] - sl.start).clamp_min(0))[..., None]
            batch_tot = torch.zeros_like(carry).index_add_(0, ct, tot)
            suffix = prefix.neg_().add_((carry + batch_tot).index_select(0, ct)[..., None])
            carry += batch_tot
            # no gradient where skipped (< 1/255), clamped (alpha_max) or after the pixel finished
            dead = done.logical_or_(a_raw < ALPHA_MIN).logical_or_(a_raw >= ctx.alpha_max)
            d_a = t_excl.mul_(v).sub_(suffix.div_(1 - a)).masked_fill_(dead, 0.0)
            # a = a_raw = exp(power) where alive: dL/dpower = dL/da * a_raw; power = mono . coeffs
            g_coeffs[sl] = torch.matmul(mono.t(), d_a.mul_(a_raw)).transpose(1, 2)
        return g_coeffs, g_feats, None, None, None, None, None


def composite_tiles(bins: TileBins, means2d: torch.Tensor, conics: torch.Tensor, opacities: torch.Tensor,
                    feats: torch.Tensor, width: int, height: int,
                    alpha_max: float = 0.99) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite per-camera Gaussian attributes through the tile bins.

    means2d (C, P, 2) px, conics (C, P, 3), opacities (P,) in (0, 1], feats (C, P, F) -> images
    sum w feats (C, F, H, W) and alpha (C, 1, H, W)."""
    C, P = means2d.shape[:2]
    F = feats.shape[-1]
    t = bins.tile

    def gather(x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:  # (C*P, D) -> (Q, S, D)
        x = torch.cat([x, pad[None].to(x.dtype)])
        return x.index_select(0, bins.slot_src).reshape(-1, bins.chunk, x.shape[1])

    params = torch.cat([means2d, conics, opacities[None, :, None].expand(C, P, 1)], -1).reshape(C * P, 6)
    # padding slots: a Gaussian of negligible opacity (alpha < 1/255 everywhere, so skipped)
    g = gather(params, params.new_tensor([0.0, 0.0, 1.0, 0.0, 1.0, 1e-30]))
    centre = bins.chunk_origin + t / 2
    coeffs = gaussian_log_alpha_coeffs(g[..., :2] - centre[:, None], g[..., 2:5], g[..., 5])
    fts = gather(feats.reshape(C * P, F), feats.new_zeros(F))
    out, alpha = _TileComposite.apply(coeffs, fts, bins.chunk_tile, bins.chunk_first, bins.num_tiles, t,
                                      alpha_max)
    img = torch.cat([out, alpha[..., None]], -1).reshape(C, bins.tiles_y, bins.tiles_x, t, t, F + 1)
    img = img.permute(0, 5, 1, 3, 2, 4).reshape(C, F + 1, bins.tiles_y * t, bins.tiles_x * t)
    img = img[:, :, :height, :width]
    return img[:, :F], img[:, F:]


# ----------------------------------------------------------------------------------------------------
# Rasterisers
# ----------------------------------------------------------------------------------------------------

def camera_normals(normals: torch.Tensor, world_to_camera: torch.Tensor, means_cam: torch.Tensor) -> torch.Tensor:
    """World normals (P, 3) -> camera-frame normals (C, P, 3) turned toward each camera (n . p_cam < 0,
    p_cam (C, P, 3) the camera-frame centres)."""
    n_cam = torch.einsum("cij,pj->cpi", world_to_camera[:, :3, :3], normals)
    away = (n_cam * means_cam).sum(-1, keepdim=True) > 0
    return torch.where(away, -n_cam, n_cam)


def rasterize_torch(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                    colors: torch.Tensor, cameras: CameraBatch, normals: torch.Tensor | None = None,
                    alpha_max: float = 0.99, tile: int = TILE_SIZE, chunk: int = 32) -> dict[str, Any]:
    """Pure-torch reference. means (P, 3), quats (P, 4), activated scales (P, 3) and opacities (P,),
    colors (C, P, 3), optional world normals (P, 3) -> dict with "rgb" (C, 3, H, W) premultiplied (no
    background), "alpha" (C, 1, H, W), "depth" (C, 1, H, W) expected camera z (0 where alpha = 0),
    "normal_camera" (C, 3, H, W) when normals are given, and for statistics "means2d" (C, P, 2) px and
    "visible" (C, P)."""
    W, H = cameras.width, cameras.height
    proj = project_gaussians(means, quats, scales, opacities, cameras.K, cameras.world_to_camera, W, H)
    feats = [colors, proj.means_cam[..., 2:3]]
    if normals is not None:
        feats.append(camera_normals(normals, cameras.world_to_camera, proj.means_cam))
    bins = bin_gaussians(proj, W, H, tile, chunk)
    img, alpha = composite_tiles(bins, proj.means2d, proj.conics, opacities, torch.cat(feats, -1), W, H,
                                 alpha_max)
    out = {"rgb": img[:, :3], "alpha": alpha, "depth": img[:, 3:4] / alpha.clamp_min(1e-10),
           "means2d": proj.means2d, "visible": proj.visible}
    if normals is not None:
        out["normal_camera"] = img[:, 4:7]
    return out


def gsplat_available() -> bool:
    """True when CUDA and the gsplat package are both present."""
    import importlib.util

    return torch.cuda.is_available() and importlib.util.find_spec("gsplat") is not None


def rasterize_gsplat(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                     colors: torch.Tensor, cameras: CameraBatch, normals: torch.Tensor | None = None) -> dict[str, Any]:
    """`rasterize_torch` on gsplat's CUDA rasteriser (same arguments and results; CUDA float32 tensors).
    Colours are evaluated here (per camera), so gsplat composites plain feature channels: rgb, then the
    oriented camera normals, then depth (render_mode "RGB+ED": expected depth = sum w z / alpha)."""
    from gsplat import rasterization

    W, H = cameras.width, cameras.height
    w2c, K = cameras.world_to_camera.contiguous(), cameras.K.contiguous()
    feats = [colors]
    if normals is not None:
        means_cam = torch.einsum("cij,pj->cpi", w2c[:, :3, :3], means) + w2c[:, None, :3, 3]
        feats.append(camera_normals(normals, w2c, means_cam))
    img, alpha, meta = rasterization(means, quats, scales, opacities, torch.cat(feats, -1).contiguous(), w2c, K,
                                     W, H, near_plane=NEAR_PLANE, eps2d=EPS2D, packed=False, tile_size=TILE_SIZE,
                                     render_mode="RGB+ED", rasterize_mode="classic")
    img = img.permute(0, 3, 1, 2)  # (C, H, W, D + 1) -> (C, D + 1, H, W)
    radii = meta["radii"]
    visible = (radii > 0).all(-1) if radii.dim() == 3 else radii > 0  # (C, P, 2) in newer gsplat
    out = {"rgb": img[:, :3], "alpha": alpha.permute(0, 3, 1, 2), "depth": img[:, -1:],
           "means2d": meta["means2d"], "visible": visible}
    if normals is not None:
        out["normal_camera"] = img[:, 3:6]
    return out


# ----------------------------------------------------------------------------------------------------
# The representation
# ----------------------------------------------------------------------------------------------------

@dataclass
class GaussiansConfig:
    """How to create a Gaussian scene: headforge.v1.GaussiansInit with its defaults filled in, plus the
    CreateScene options of this kind.

    num_points random means uniform in a ball of `radius` (world units) when `points` is None; points
    (P, 3) and optional colors (P, 3) in [0, 1] (None = grey) otherwise; sh_degree 0..3; opacity in
    (0, 1). extent: scene size in world units for the means learning rate and the densification
    thresholds, 0 = from the init (the ball radius, or the largest distance of a point from the points'
    centroid). backend "auto" (gsplat on CUDA when installed, else torch), "torch" or "gsplat".
    tile_size: tile side of the torch rasteriser, 16 as gsplat. The image does not depend on it (beyond
    float rounding: every contribution >= 1/255 lies inside the screen boxes); 8 is about twice as
    fast on CPU."""

    num_points: int = 100_000
    radius: float = 1.0
    points: Any = None
    colors: Any = None
    sh_degree: int = 0
    opacity: float = 0.1
    strategy: GaussianStrategyConfig = field(default_factory=GaussianStrategyConfig)
    extent: float = 0.0
    backend: str = "auto"
    tile_size: int = TILE_SIZE

    @classmethod
    def from_proto(cls, msg, options: dict[str, str] | None = None) -> "GaussiansConfig":
        """From a headforge.v1.GaussiansInit (zeros take the defaults) and CreateScene options
        ("backend", "tile_size", "extent"); tensors are validated (InvalidArgument names the field)."""
        from services.common.errors import InvalidArgument
        from services.common.tensors import from_proto, require_finite

        d, options = cls(), dict(options or {})
        unknown = set(options) - {"backend", "tile_size", "extent"}
        if unknown:
            raise InvalidArgument("options", f"unknown options {sorted(unknown)} for gaussians")
        try:
            tile_size, extent = int(options.get("tile_size", TILE_SIZE)), float(options.get("extent", 0.0))
        except ValueError as e:
            raise InvalidArgument("options", f"tile_size must be an integer and extent a number: {e}")
        if not 1 <= tile_size <= 64 or not (math.isfinite(extent) and extent >= 0):
            raise InvalidArgument("options", "tile_size must be in 1..64 and extent >= 0")
        if options.get("backend", "auto") not in ("auto", "torch", "gsplat"):
            raise InvalidArgument("options.backend", "must be auto, torch or gsplat")
        points = colors = None
        if msg.HasField("points") and len(msg.points.shape):
            points = np.array(from_proto(msg.points, "gaussians.points", ndim=2), dtype=np.float32)
            if points.shape[1] != 3 or len(points) == 0:
                raise InvalidArgument("gaussians.points.shape", f"expected (P, 3), got {list(points.shape)}")
            require_finite(points, "gaussians.points")
            if msg.HasField("colors") and len(msg.colors.shape):
                colors = np.array(from_proto(msg.colors, "gaussians.colors", ndim=2), dtype=np.float32)
                if colors.shape != points.shape:
                    raise InvalidArgument("gaussians.colors.shape", f"expected {list(points.shape)}")
                require_finite(colors, "gaussians.colors")
        if not 0 <= msg.sh_degree <= 3:
            raise InvalidArgument("gaussians.sh_degree", f"must be 0..3, got {msg.sh_degree}")
        if not 0 <= msg.opacity < 1:
            raise InvalidArgument("gaussians.opacity", f"must be in (0, 1), got {msg.opacity}")
        if msg.num_points < 0 or msg.radius < 0:
            raise InvalidArgument("gaussians.num_points", "num_points and radius must be >= 0")
        return cls(num_points=int(msg.num_points) or d.num_points, radius=float(msg.radius) or d.radius,
                   points=points, colors=colors, sh_degree=int(msg.sh_degree),
                   opacity=float(msg.opacity) or d.opacity,
                   strategy=GaussianStrategyConfig.from_proto(msg.strategy),
                   extent=extent, backend=options.get("backend", "auto"), tile_size=tile_size)


@dataclass
class DensifyResult:
    """Gaussians after a densification pass, how many were added (clones + net splits) and removed."""

    num_gaussians: int
    densified: int
    pruned: int


def _knn_mean_distance(points: torch.Tensor, k: int = 3) -> torch.Tensor:
    """(P,) mean distance of each point to its k nearest other points (scipy's KD-tree when present)."""
    P = points.shape[0]
    if P <= 1:
        return torch.ones(P, dtype=points.dtype)
    k = min(k, P - 1)
    try:
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(points.double().numpy()).query(points.double().numpy(), k=k + 1)
        return torch.as_tensor(dist[:, 1:].mean(1), dtype=points.dtype)
    except ImportError:  # quadratic fallback, in blocks
        out = []
        for block in points.split(4096):
            d = torch.cdist(block, points)
            out.append(d.topk(k + 1, largest=False).values[:, 1:].mean(1))
        return torch.cat(out)


def _random_ball(n: int, radius: float, generator: torch.Generator) -> torch.Tensor:
    """n points (n, 3) uniform in the ball of `radius` around the origin."""
    d = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    d = d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)
    r = radius * torch.rand(n, 1, generator=generator, dtype=torch.float64) ** (1 / 3)
    return (d * r).float()


def _check_backend(name: str) -> str:
    if name not in ("auto", "torch", "gsplat"):
        raise ValueError(f"unknown Gaussian backend {name!r} (auto, torch, gsplat)")
    if name == "gsplat" and not gsplat_available():
        from services.common.errors import FailedPrecondition

        raise FailedPrecondition("the gsplat backend needs CUDA and the gsplat package",
                                 reason="BACKEND_UNAVAILABLE")
    return name


class GaussianScene(Representation):
    """P 3D Gaussians (module docstring for the parameterisation and rendering). Parameter groups:
    means, scales, quats, opacities, sh0, shN; buffers grad2d_sum, grad2d_count (P,) the densification
    statistics. default_lrs are those of 3DGS with the means rate for a scene extent of 1; an instance's
    default_lrs scales it by its extent (the 3DGS position schedule 1.6e-4 -> 1.6e-6 x extent over 30k
    steps is a caller's LrSchedule)."""

    kind: ClassVar[str] = "gaussians"
    outputs: ClassVar[frozenset[str]] = OUTPUTS
    default_lrs: ClassVar[dict[str, float]] = {"means": 1.6e-4, "scales": 5e-3, "quats": 1e-3,
                                               "opacities": 5e-2, "sh0": 2.5e-3, "shN": 2.5e-3 / 20}

    def __init__(self, num_gaussians: int = 0, sh_degree: int = 0, *, extent: float = 1.0,
                 strategy: GaussianStrategyConfig | None = None, backend: str = "auto",
                 tile_size: int = TILE_SIZE, seed: int = 0):
        super().__init__()
        if not 0 <= sh_degree <= 3:
            raise ValueError(f"sh_degree must be 0..3, got {sh_degree}")
        if extent <= 0:
            raise ValueError(f"extent must be > 0, got {extent}")
        P, K = int(num_gaussians), (sh_degree + 1) ** 2
        self.sh_degree = sh_degree
        self.extent = float(extent)
        self.seed = int(seed)
        self.tile_size = int(tile_size)
        self.requested_backend = _check_backend(backend)
        self.strategy = GaussianStrategy(strategy, self.extent, self.seed)
        self.default_lrs = {**type(self).default_lrs, "means": type(self).default_lrs["means"] * self.extent}
        quats = torch.zeros(P, 4)
        quats[:, 0] = 1
        self.means = nn.Parameter(torch.zeros(P, 3))
        self.scales = nn.Parameter(torch.full((P, 3), -3.0))
        self.quats = nn.Parameter(quats)
        self.opacities = nn.Parameter(torch.zeros(P))
        self.sh0 = nn.Parameter(torch.zeros(P, 1, 3))
        self.shN = nn.Parameter(torch.zeros(P, K - 1, 3))
        self.register_buffer("grad2d_sum", torch.zeros(P))
        self.register_buffer("grad2d_count", torch.zeros(P))
        self.last_densify = DensifyResult(P, 0, 0)

    # ---- construction ----------------------------------------------------------------------------

    @classmethod
    def create(cls, init: GaussiansConfig, seed: int = 0) -> "GaussianScene":
        """A new scene from an init config; `seed` drives the random points and later split samples (the
        caller turns the proto's seed 0 into a random one). Scales start at the mean distance to the 3
        nearest points, rotations at identity, colours as given (grey otherwise)."""
        gen = torch.Generator().manual_seed(int(seed))
        if init.points is not None:
            means = torch.as_tensor(np.asarray(init.points), dtype=torch.float32).reshape(-1, 3)
            extent = init.extent or float((means - means.mean(0)).norm(dim=1).max().clamp_min(1e-6))
        else:
            means = _random_ball(int(init.num_points), float(init.radius), gen)
            extent = init.extent or float(init.radius)
        P = means.shape[0]
        colors = torch.full((P, 3), 0.5)
        if init.colors is not None:
            colors = torch.as_tensor(np.asarray(init.colors), dtype=torch.float32).reshape(P, 3)
        scene = cls(P, init.sh_degree, extent=extent, strategy=init.strategy, backend=init.backend,
                    tile_size=init.tile_size, seed=seed)
        with torch.no_grad():
            scene.means.copy_(means)
            scene.scales.copy_(_knn_mean_distance(means).clamp_min(1e-7).log()[:, None].expand(P, 3))
            scene.opacities.fill_(math.log(init.opacity / (1 - init.opacity)))
            scene.sh0.copy_(((colors - 0.5) / _SH_C0)[:, None])
        return scene

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], **kwargs) -> "GaussianScene":
        """A scene from raw group arrays {means, scales, quats, opacities, sh0, shN} (shapes as the
        parameters); kwargs as __init__ (extent defaults to the points' largest distance from their
        centroid)."""
        t = {k: torch.as_tensor(np.asarray(arrays[k]), dtype=torch.float32) for k in GROUPS}
        degree = int(round(math.sqrt(t["shN"].shape[1] + 1))) - 1
        if "extent" not in kwargs:
            m = t["means"]
            kwargs["extent"] = float((m - m.mean(0)).norm(dim=1).max().clamp_min(1e-6)) if len(m) else 1.0
        scene = cls(0, degree, **kwargs)
        scene.load_state_tensors(t)
        return scene

    @classmethod
    def from_ply(cls, data: bytes, **kwargs) -> "GaussianScene":
        """A scene from standard 3DGS PLY bytes (gaussians_ply.py); ValueError when it is not one."""
        return cls.from_arrays(read_ply(data), **kwargs)

    @classmethod
    def from_npz(cls, data: bytes, **kwargs) -> "GaussianScene":
        """A scene from the NPZ written by export("npz")."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            missing = [k for k in GROUPS if k not in z.files]
            if missing:
                raise ValueError(f"NPZ lacks Gaussian groups {missing}")
            return cls.from_arrays({k: z[k] for k in GROUPS}, **kwargs)

    # ---- Representation API -----------------------------------------------------------------------

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[0])

    @property
    def backend(self) -> str:
        """The renderer render() uses now: gsplat when allowed, installed and the scene is on CUDA."""
        if self.requested_backend != "torch" and self.means.is_cuda and gsplat_available():
            return "gsplat"
        return "torch"

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        return {name: [getattr(self, name)] for name in GROUPS}

    def render(self, cameras: CameraBatch, outputs: Collection[str] = ("rgb", "alpha"),
               background: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Render `outputs` (rgb, alpha, depth, normal_camera, normal_world) for N cameras. background:
        (3,), (N, 3), (3, H, W) or (N, 3, H, W) in [0, 1]; default white."""
        outputs = list(outputs)
        unknown = set(outputs) - OUTPUTS
        if unknown:
            raise ValueError(f"gaussians cannot render {sorted(unknown)}")
        cams = cameras.to(device=self.means.device, dtype=self.means.dtype)
        want_normals = bool({"normal_camera", "normal_world"} & set(outputs))
        sh = torch.cat([self.sh0, self.shN], 1)
        colors = sh_to_colors(sh, self.means, cams.centers, self.sh_degree)
        normals = shortest_axis_normals(self.quats, self.scales) if want_normals else None
        args = (self.means, self.quats, self.scales.exp(), torch.sigmoid(self.opacities), colors, cams, normals)
        raw = rasterize_gsplat(*args) if self.backend == "gsplat" else rasterize_torch(*args, tile=self.tile_size)
        self._track_screen_grads(raw["means2d"], raw["visible"], cams.width, cams.height)
        out = {}
        alpha = raw["alpha"]
        if "rgb" in outputs:
            out["rgb"] = raw["rgb"] + (1 - alpha) * self._background(background, cams, alpha)
        if "alpha" in outputs:
            out["alpha"] = alpha
        if "depth" in outputs:
            out["depth"] = raw["depth"]
        if "normal_camera" in outputs:
            out["normal_camera"] = raw["normal_camera"]
        if "normal_world" in outputs:
            c2w = cams.world_to_camera[:, :3, :3].transpose(1, 2)
            out["normal_world"] = torch.einsum("cij,cjhw->cihw", c2w, raw["normal_camera"])
        return out

    @staticmethod
    def _background(background: torch.Tensor | None, cams: CameraBatch, like: torch.Tensor) -> torch.Tensor:
        """Background broadcastable to (N, 3, H, W)."""
        if background is None:
            return like.new_ones(1, 3, 1, 1)
        bg = torch.as_tensor(background).to(like)
        shapes = {1: lambda b: b.reshape(1, 3, 1, 1), 2: lambda b: b.reshape(-1, 3, 1, 1),
                  3: lambda b: b[None], 4: lambda b: b}
        if bg.dim() not in shapes or bg.shape[-3 if bg.dim() >= 3 else -1] != 3:
            raise ValueError(f"background of shape {list(bg.shape)}; expected (3,), (N, 3), (3, H, W) or "
                             f"(N, 3, H, W)")
        return shapes[bg.dim()](bg)

    def _track_screen_grads(self, means2d: torch.Tensor, visible: torch.Tensor, width: int, height: int) -> None:
        """Accumulate |dL/d mean2d| in NDC units (x cameras, see module docstring) per visible Gaussian
        when the render is back-propagated."""
        if not (torch.is_grad_enabled() and means2d.requires_grad):
            return
        C, P = visible.shape
        scale = means2d.new_tensor([0.5 * width * C, 0.5 * height * C])
        seen = visible.detach().to(means2d.dtype)

        def hook(grad: torch.Tensor) -> None:
            if self.grad2d_sum.shape[0] != P:  # the Gaussians changed since this render
                return
            norms = (grad.detach() * scale).norm(dim=-1) * seen
            self.grad2d_sum += norms.sum(0).to(self.grad2d_sum)
            self.grad2d_count += seen.sum(0).to(self.grad2d_count)

        means2d.register_hook(hook)

    def after_step(self, step: int, optimizer) -> bool:
        """The automatic densification schedule (gaussians_strategy.py) after optimiser step `step`;
        `last_densify` then holds what it did."""
        changed = self.strategy.step(self, step, optimizer)
        self.last_densify = DensifyResult(self.num_gaussians, self.strategy.last_densified,
                                          self.strategy.last_pruned)
        return changed

    def densify_now(self, optimizer=None, *, grad_threshold: float = 0.0, prune_opacity: float = 0.0,
                    prune_max_scale: float = 0.0, reset_opacity: float = 0.0,
                    max_gaussians: int | None = None) -> "DensifyResult":
        """One explicit pass (DensifyGaussians): densify where the mean screen gradient >= grad_threshold
        (> 0), prune opacity < prune_opacity and largest scale > prune_max_scale (world units), then clamp
        opacities to at most reset_opacity (each 0 = skip). max_gaussians None = the strategy's cap.
        Errors: InvalidArgument (negative values, reset_opacity >= 1), FailedPrecondition (no gradient
        statistics for densification), ResourceExhausted (the result would exceed max_gaussians)."""
        from services.common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted

        for name, value in (("grad_threshold", grad_threshold), ("prune_opacity", prune_opacity),
                            ("prune_max_scale", prune_max_scale), ("reset_opacity", reset_opacity)):
            if not (math.isfinite(value) and value >= 0):
                raise InvalidArgument(name, f"must be a number >= 0, got {value}")
        if reset_opacity >= 1:
            raise InvalidArgument("reset_opacity", f"must be in (0, 1), got {reset_opacity}")
        cap = self.strategy.config.max_gaussians if max_gaussians is None else max_gaussians
        if grad_threshold > 0:
            if float(self.grad2d_count.sum()) == 0:
                raise FailedPrecondition("no gradient statistics yet: apply gradients to a render first",
                                         reason="NO_GRADIENT_STATISTICS")
            total = self.num_gaussians + int((strategy_ops.mean_screen_grads(self) >= grad_threshold).sum())
            if cap > 0 and total > cap:
                raise ResourceExhausted(f"densifying would give {total} Gaussians, above {cap}",
                                        reason="MAX_GAUSSIANS", metadata={"limit": str(cap), "got": str(total)})
        added, removed = self.strategy.refine(self, optimizer, 0, grad_threshold, prune_opacity, prune_max_scale)
        if reset_opacity > 0:
            strategy_ops.reset_opacity(self, optimizer, reset_opacity)
        self.last_densify = DensifyResult(self.num_gaussians, added, removed)
        return self.last_densify

    def regularizers(self) -> dict[str, "callable"]:
        """opacity_entropy: mean binary entropy of the opacities (pushes them to 0 or 1); scale: mean
        largest scale (world units)."""
        def opacity_entropy() -> torch.Tensor:
            o = torch.sigmoid(self.opacities).clamp(1e-6, 1 - 1e-6)
            return -(o * o.log() + (1 - o) * (1 - o).log()).mean()

        def scale() -> torch.Tensor:
            return self.scales.exp().amax(1).mean()

        return {"opacity_entropy": opacity_entropy, "scale": scale}

    def export(self, fmt: str, scale: float = 1.0) -> bytes:
        """"ply" (standard 3DGS layout, gaussians_ply.py) or "npz" (raw groups); positions and scales
        multiplied by `scale`."""
        a = {k: getattr(self, k).detach().cpu().float().numpy() for k in GROUPS}
        if scale != 1.0:
            a["means"] = a["means"] * scale
            a["scales"] = a["scales"] + math.log(scale)
        if fmt == "ply":
            return write_ply(**a)
        if fmt == "npz":
            buf = io.BytesIO()
            np.savez(buf, **a)
            return buf.getvalue()
        raise ValueError(f"gaussians cannot be exported as {fmt}")

    def config(self) -> dict:
        return {"num_gaussians": self.num_gaussians, "sh_degree": self.sh_degree, "extent": self.extent,
                "seed": self.seed, "tile_size": self.tile_size, "backend": self.requested_backend,
                "strategy": self.strategy.config.to_dict()}

    @classmethod
    def from_config(cls, config: dict) -> "GaussianScene":
        c = dict(config)
        return cls(int(c.get("num_gaussians", 0)), int(c.get("sh_degree", 0)), extent=float(c.get("extent", 1.0)),
                   strategy=GaussianStrategyConfig.from_dict(c.get("strategy")),
                   backend=c.get("backend", "auto"), tile_size=int(c.get("tile_size", TILE_SIZE)),
                   seed=int(c.get("seed", 0)))

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Replace the parameters (any number of Gaussians) and statistics (zeros when absent). The
        parameters are new objects: build the optimiser after this."""
        unknown = set(tensors) - set(GROUPS) - set(strategy_ops.STAT_BUFFERS)
        missing = set(GROUPS) - set(tensors)
        if unknown or missing:
            raise ValueError(f"Gaussian state: unknown {sorted(unknown)}, missing {sorted(missing)}")
        P = int(tensors["means"].shape[0])
        shapes = {"means": (P, 3), "scales": (P, 3), "quats": (P, 4), "opacities": (P,), "sh0": (P, 1, 3),
                  "shN": (P, (self.sh_degree + 1) ** 2 - 1, 3), "grad2d_sum": (P,), "grad2d_count": (P,)}
        for k, t in tensors.items():
            if tuple(t.shape) != shapes[k]:
                raise ValueError(f"Gaussian state {k}: shape {list(t.shape)}, expected {list(shapes[k])}")
        like = self.means
        for name in GROUPS:
            setattr(self, name, nn.Parameter(tensors[name].detach().to(like).clone(),
                                             requires_grad=getattr(self, name).requires_grad))
        for name in strategy_ops.STAT_BUFFERS:
            t = tensors.get(name)
            setattr(self, name, torch.zeros(P, dtype=self.grad2d_sum.dtype, device=like.device) if t is None
                    else t.detach().to(self.grad2d_sum).clone())
