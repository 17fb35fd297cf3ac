"""The pure-torch Gaussian rasteriser ("torch" backend, the reference; runs anywhere): tile binning of
projected Gaussians, then front-to-back alpha compositing with a hand-written backward. Each tile's
depth-sorted Gaussians are packed into fixed-size chunks so the work is dense batched tensors; log-alpha
is a quadratic polynomial per Gaussian evaluated for a whole tile by one matrix product; the backward
recomputes per-pixel terms in batches (no large saved tensors). Conventions: gaussians.py."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from services.core.camera_batch import CameraBatch
from services.render.representations.gaussians_projection import ALPHA_MIN, Projection, camera_normals, project_gaussians

T_MIN = 1e-4  # transmittance at which a pixel is finished
TILE_SIZE = 16
BATCH_ELEMENTS = 1 << 17  # per-pixel work items per compositing batch: ~0.5 MB temporaries (larger ones are
# page-faulted in anew by the allocator at every batch: 2x slower measured)
_LOG_FLOOR = -30.0  # exp() argument floor: e^-30 ~ 1e-13 is 0 for every purpose here


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



def rasterize_torch(means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor, opacities: torch.Tensor,
                    colors: torch.Tensor, cameras: CameraBatch, normals: torch.Tensor | None = None,
                    alpha_max: float = 0.99, tile: int = TILE_SIZE, chunk: int = 32,
                    extra: torch.Tensor | None = None) -> dict[str, Any]:
    """Pure-torch reference. means (P, 3), quats (P, 4), activated scales (P, 3) and opacities (P,),
    colors (C, P, 3), optional world normals (P, 3), optional extra features (C, P, K) -> dict with
    "rgb" (C, 3, H, W) premultiplied (no background), "alpha" (C, 1, H, W), "depth" (C, 1, H, W) expected
    camera z (0 where alpha = 0), "normal_camera" (C, 3, H, W) when normals are given, "extra"
    (C, K, H, W) premultiplied when extra is given, and for statistics "means2d" (C, P, 2) px and
    "visible" (C, P)."""
    W, H = cameras.width, cameras.height
    proj = project_gaussians(means, quats, scales, opacities, cameras.K, cameras.world_to_camera, W, H)
    feats = [colors, proj.means_cam[..., 2:3]]
    if normals is not None:
        feats.append(camera_normals(normals, cameras.world_to_camera, proj.means_cam))
    if extra is not None:
        feats.append(extra)
    bins = bin_gaussians(proj, W, H, tile, chunk)
    img, alpha = composite_tiles(bins, proj.means2d, proj.conics, opacities, torch.cat(feats, -1), W, H,
                                 alpha_max)
    out = {"rgb": img[:, :3], "alpha": alpha, "depth": img[:, 3:4] / alpha.clamp_min(1e-10),
           "means2d": proj.means2d, "visible": proj.visible}
    start = 4
    if normals is not None:
        out["normal_camera"] = img[:, 4:7]
        start = 7
    if extra is not None:
        out["extra"] = img[:, start:start + extra.shape[-1]]
    return out
