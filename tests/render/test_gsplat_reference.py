"""The torch Gaussian rasteriser against gsplat's own pure-torch reference code, on CPU.

gsplat ships `gsplat.cuda._torch_impl`: plain-torch versions of its projection, tile intersection,
depth sort and spherical harmonics, which gsplat's own tests hold its CUDA kernels to. Those functions
run without CUDA, so here they give an independent implementation of the conventions (pixel centres,
EWA Jacobian clamp, the 0.3 px^2 blur, tile lists, SH basis and the +0.5 offset) to compare with.
Only the per-pixel compositing of the CUDA kernel (RasterizeToPixels3DGSFwd.cu in gsplat 1.5.3:
alpha = min(0.999, o exp(-sigma)), skipped below 1/255 or for sigma < 0, the pixel finished before the
Gaussian that takes T to <= 1e-4) is written out below, because gsplat's torch version of that step
calls a CUDA kernel. The GPU half of the check, against gsplat's CUDA rasteriser itself, is
test_gaussians.py::test_gsplat_matches_torch_reference.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch

from services.core.cameras import orbit_camera
from services.core.camera_batch import CameraBatch
from services.render.representations import gaussians_projection as GP, gaussians_raster as GR
from services.render.representations.gaussians import GaussianScene

gsplat_ref = pytest.importorskip("gsplat.cuda._torch_impl", reason="gsplat (dev extra) not installed")
gsplat_export = pytest.importorskip("gsplat.exporter")

ALPHA_CLAMP = 0.999  # gsplat's kernels; the torch reference takes it as alpha_max
SIZE_W, SIZE_H = 72, 56


def _cameras(dtype=torch.float64) -> CameraBatch:
    """Three cameras of a non-square image, one with an off-centre principal point and fx != fy."""
    pins = [orbit_camera(a, e, r, fov_deg=f, width=SIZE_W, height=SIZE_H)
            for a, e, r, f in ((20, 10, 3.0, 40), (160, -15, 2.4, 35), (-70, 30, 3.5, 50))]
    cams = CameraBatch.from_pinholes(pins, dtype=dtype)
    K = cams.K.clone()
    K[2, 0, 2] += 9.0
    K[2, 1, 2] -= 5.0
    K[2, 1, 1] *= 1.1
    return CameraBatch(K, cams.world_to_camera, SIZE_W, SIZE_H)


def _gaussians(P: int, seed: int, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """Activated parameters of P random Gaussians around the origin: some far off-screen, some
    faint (opacity < 1/255), a quarter above the 0.999 alpha clamp (so pixels also finish early)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(P, 3, generator=g, dtype=dtype) * 0.5
    means[:5] *= 12.0  # far out: off-screen or behind a camera
    return {"means": means,
            "quats": torch.randn(P, 4, generator=g, dtype=dtype),
            "scales": torch.empty(P, 3, dtype=dtype).uniform_(0.03, 0.2, generator=g),
            "opacities": torch.cat([torch.full((3,), 1e-3, dtype=dtype),
                                    torch.empty(P // 4, dtype=dtype).uniform_(0.992, 0.9999, generator=g),
                                    torch.empty(P - 3 - P // 4, dtype=dtype).uniform_(0.05, 0.98, generator=g)]),
            "colors": torch.rand(P, 3, generator=g, dtype=dtype)}


def _gsplat_projection(p: dict[str, torch.Tensor], cams: CameraBatch):
    covars, _ = gsplat_ref._quat_scale_to_covar_preci(p["quats"], p["scales"], True, False, triu=False)
    return gsplat_ref._fully_fused_projection(p["means"], covars, cams.world_to_camera, cams.K, cams.width,
                                              cams.height, eps2d=GP.EPS2D, near_plane=GP.NEAR_PLANE)


def _kernel_radii(conics: torch.Tensor, opacities: torch.Tensor) -> torch.Tensor:
    """Screen-box half sizes as gsplat's CUDA projection computes them (ProjectionEWA3DGSFused.cu): the
    opacity-aware extent min(3.33, sqrt(2 ln(255 o))) sigma, rounded up. gsplat's torch projection uses
    3.33 sigma for every Gaussian, so it is recomputed here from its conics."""
    a, b, c = conics.unbind(-1)
    det = a * c - b * b
    sigma = torch.stack([c / det, a / det], -1).sqrt()  # sqrt of the 2D covariance's diagonal
    extend = torch.sqrt(2 * torch.log(opacities.clamp_min(GP.ALPHA_MIN) / GP.ALPHA_MIN)).clamp_max(3.33)
    return torch.ceil(extend[None, :, None] * sigma)


def test_projection_matches_gsplat_reference():
    """Means, conics and depths equal gsplat's projection (float64, 1e-9 relative); the culled set and
    the screen boxes are the CUDA kernel's."""
    p = _gaussians(400, seed=0)
    cams = _cameras()
    ours = GP.project_gaussians(p["means"], p["quats"], p["scales"], p["opacities"], cams.K,
                               cams.world_to_camera, cams.width, cams.height)
    radii, means2d, depths, conics, _ = _gsplat_projection(p, cams)
    theirs_valid = (radii > 0).all(-1) & (p["opacities"] >= GP.ALPHA_MIN)[None]
    # gsplat's torch box (3.33 sigma) is never smaller than the kernel's opacity-aware one: every
    # Gaussian we keep, it keeps; the ones it alone keeps have their box entirely off the image
    assert bool((ours.visible <= theirs_valid).all())
    v = ours.visible
    assert int(v.sum()) > 600 and int((~v).sum()) > 20, "the scene must exercise both sides of the culling"
    torch.testing.assert_close(ours.means2d[v], means2d[v], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.conics[v], conics[v], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ours.means_cam[..., 2], depths, rtol=1e-12, atol=1e-12)
    kernel = _kernel_radii(conics, p["opacities"])
    torch.testing.assert_close(ours.radii[v], kernel[v], rtol=0, atol=0)
    m, r = means2d, kernel
    on_image = ((m[..., 0] + r[..., 0] > 0) & (m[..., 0] - r[..., 0] < cams.width)
                & (m[..., 1] + r[..., 1] > 0) & (m[..., 1] - r[..., 1] < cams.height))
    kernel_valid = theirs_valid & on_image
    assert torch.equal(ours.visible, kernel_valid)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_colours_match_gsplat_reference(degree):
    """sh_to_colors = gsplat's spherical_harmonics(dirs = mean - camera centre) + 0.5, clamped at 0 (what
    gsplat.rasterization does with sh_degree set)."""
    g = torch.Generator().manual_seed(degree)
    P = 300
    sh = torch.randn(P, 16, 3, generator=g, dtype=torch.float64) * 0.6
    means = torch.randn(P, 3, generator=g, dtype=torch.float64)
    centers = _cameras().centers
    ours = GP.sh_to_colors(sh, means, centers, degree)
    dirs = means[None] - centers[:, None]
    coeffs = sh[:, :(degree + 1) ** 2].expand(len(centers), -1, -1, -1)
    theirs = (gsplat_ref._spherical_harmonics(degree, dirs, coeffs) + 0.5).clamp_min(0.0)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def _composite_like_gsplat_kernel(p: dict[str, torch.Tensor], cams: CameraBatch, feats: torch.Tensor,
                                  tile: int = 16) -> tuple[torch.Tensor, torch.Tensor, int]:
    """gsplat's pipeline on CPU: its projection, its tile intersection and depth sort
    (_isect_tiles / _isect_offset_encode), then per tile the CUDA kernel's compositing rules in
    autograd-able torch. feats (C, P, F) -> premultiplied features (C, F, H, W), alpha (C, 1, H, W) and
    the number of pixels that finished early (T <= 1e-4 before their list ran out)."""
    C, W, H = len(cams), cams.width, cams.height
    radii, means2d, depths, conics, _ = _gsplat_projection(p, cams)
    radii = torch.where((p["opacities"] >= GP.ALPHA_MIN)[None, :, None], radii, torch.zeros_like(radii))
    tx, ty = math.ceil(W / tile), math.ceil(H / tile)
    _, isect_ids, flatten_ids = gsplat_ref._isect_tiles(means2d.float(), radii, depths.float(), tile, tx, ty)
    offsets = gsplat_ref._isect_offset_encode(isect_ids, C, tx, ty).flatten().tolist() + [len(flatten_ids)]
    P, F = feats.shape[1], feats.shape[2]
    m2d, con, col = means2d.reshape(C * P, 2), conics.reshape(C * P, 3), feats.reshape(C * P, F)
    opac = p["opacities"].repeat(C)
    img = [[[None] * tx for _ in range(ty)] for _ in range(C)]
    alpha_img = [[[None] * tx for _ in range(ty)] for _ in range(C)]
    finished_early = 0
    for t in range(C * tx * ty):
        cam, row, colm = t // (tx * ty), (t % (tx * ty)) // tx, t % tx
        ids = flatten_ids[offsets[t]:offsets[t + 1]].long()
        ys, xs = torch.meshgrid(torch.arange(row * tile, min(H, row * tile + tile), dtype=m2d.dtype),
                                torch.arange(colm * tile, min(W, colm * tile + tile), dtype=m2d.dtype),
                                indexing="ij")
        px = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1) + 0.5  # (Np, 2)
        d = m2d[ids][None] - px[:, None]  # (Np, n, 2), as the kernel: mean - pixel
        c = con[ids][None]
        sigma = 0.5 * (c[..., 0] * d[..., 0] ** 2 + c[..., 2] * d[..., 1] ** 2) + c[..., 1] * d[..., 0] * d[..., 1]
        alpha = torch.clamp_max(opac[ids][None] * torch.exp(-sigma), ALPHA_CLAMP)
        alpha = torch.where((sigma < 0) | (alpha < GP.ALPHA_MIN), torch.zeros_like(alpha), alpha)
        t_after = torch.cumprod(1 - alpha, -1)
        stopped = torch.cumsum((t_after <= 1e-4).to(torch.int64), -1) > 0  # that one and every later one
        finished_early += int((stopped & (alpha > 0)).any(-1).sum())
        alpha = torch.where(stopped, torch.zeros_like(alpha), alpha)
        t_before = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], -1), -1)
        w = alpha * t_before
        shape = (ys.shape[0], ys.shape[1])
        img[cam][row][colm] = (w @ col[ids]).T.reshape(F, *shape)
        alpha_img[cam][row][colm] = w.sum(-1).reshape(1, *shape)

    def assemble(tiles):
        return torch.stack([torch.cat([torch.cat(r, -1) for r in per_cam], -2) for per_cam in tiles])

    return assemble(img), assemble(alpha_img), finished_early


def test_image_and_gradients_match_gsplat_pipeline():
    """rasterize_torch(alpha_max=0.999) against gsplat's own projection, binning and depth order with the
    kernel's compositing: images to 1e-9 and every parameter gradient to 1e-7 relative (float64; the
    torch side's backward is hand-written, the other side's is autograd)."""
    p = _gaussians(160, seed=3)
    cams = _cameras()
    p = {k: v.clone().requires_grad_(True) for k, v in p.items()}
    feats = torch.cat([p["colors"][None].expand(len(cams), -1, -1),
                       (torch.einsum("cij,pj->cpi", cams.world_to_camera[:, :3, :3], p["means"])
                        + cams.world_to_camera[:, None, :3, 3])[..., 2:3]], -1)
    weights = torch.rand(len(cams), 5, SIZE_H, SIZE_W, generator=torch.Generator().manual_seed(9), dtype=torch.float64)

    def grads(rgb, depth_premult, alpha):
        loss = (torch.cat([rgb, depth_premult, alpha], 1) * weights).sum()
        return torch.autograd.grad(loss, [p[k] for k in ("means", "quats", "scales", "opacities", "colors")])

    ours = GR.rasterize_torch(p["means"], p["quats"], p["scales"], p["opacities"],
                             p["colors"][None].expand(len(cams), -1, -1), cams, alpha_max=ALPHA_CLAMP)
    feat_img, alpha, finished_early = _composite_like_gsplat_kernel(p, cams, feats)
    assert float((alpha > ALPHA_CLAMP - 1e-6).float().mean()) > 0.05 and finished_early > 50, "opaque pixels"
    assert float((alpha < 1e-6).float().mean()) > 0.05, "empty pixels"
    torch.testing.assert_close(ours["rgb"], feat_img[:, :3], rtol=0, atol=1e-9)
    torch.testing.assert_close(ours["alpha"], alpha, rtol=0, atol=1e-9)
    covered = alpha > 1e-3
    expected_depth = feat_img[:, 3:4] / alpha.clamp_min(1e-10)
    torch.testing.assert_close(ours["depth"][covered], expected_depth[covered], rtol=1e-9, atol=1e-9)

    g_ours = grads(ours["rgb"], ours["depth"] * ours["alpha"], ours["alpha"])
    g_ref = grads(feat_img[:, :3], feat_img[:, 3:4], alpha)
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), g_ours, g_ref):
        scale = float(b.abs().max())
        assert scale > 0, name
        assert float((a - b).abs().max()) <= 1e-7 * scale, (name, float((a - b).abs().max()), scale)


def test_ply_reads_gsplat_exporter_file_and_matches_its_layout():
    """gsplat's exporter writes the same properties as our PLY minus the unused normals (nx, ny, nz),
    with identical values; our reader takes gsplat's file and renders the same scene."""
    scene = GaussianScene(80, 2)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for t in scene.parameters():
            t.copy_(torch.randn(t.shape, generator=g) * 0.4)
    raw = {k: getattr(scene, k).detach() for k in ("means", "scales", "quats", "opacities", "sh0", "shN")}
    theirs = gsplat_export.export_splats(**raw, format="ply")
    ours = scene.export("ply")

    def table(data: bytes) -> dict[str, np.ndarray]:
        head, body = data.split(b"end_header\n", 1)
        names = [line.split()[2] for line in head.decode().splitlines() if line.startswith("property")]
        assert all(line.split()[1] == "float" for line in head.decode().splitlines() if line.startswith("property"))
        rows = np.frombuffer(body, dtype="<f4").reshape(-1, len(names))
        return {n: rows[:, i] for i, n in enumerate(names)}

    t_ours, t_theirs = table(ours), table(theirs)
    assert [n for n in t_ours if n not in ("nx", "ny", "nz")] == list(t_theirs)
    for name, values in t_theirs.items():
        np.testing.assert_array_equal(t_ours[name], values, err_msg=name)
    back = GaussianScene.from_ply(theirs)
    cams = _cameras(torch.float32)
    torch.testing.assert_close(back.render(cams, ["rgb", "alpha"])["rgb"], scene.render(cams, ["rgb"])["rgb"],
                               rtol=0, atol=1e-6)
    assert io.BytesIO(theirs).read(3) == b"ply"
