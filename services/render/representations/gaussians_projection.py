"""Gaussian maths for the 3DGS scene (gaussians.py has the conventions): the real spherical-harmonics
colour basis, quaternion rotations and 3D covariances, and the EWA projection of Gaussians into pinhole
cameras (2D means, conics, screen boxes) shared by the torch and gsplat rasterisers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

NEAR_PLANE = 0.01
EPS2D = 0.3  # px^2 added to the 2D covariance (anti-aliasing low-pass of 3DGS / gsplat)
ALPHA_MIN = 1.0 / 255.0
MAX_EXTEND = 3.33  # largest screen box half-size in standard deviations (gsplat)

# Real spherical-harmonics constants of the 3DGS basis (degree 0..3).
SH_C0 = 0.28209479177387814
_SH_C1 = 0.4886025119029199
_SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
          0.5462742152960396)
_SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
          -0.4570457994644658, 1.445305721320277, -0.5900435899266435)



def sh_basis(dirs: torch.Tensor, degree: int) -> torch.Tensor:
    """Real SH basis of 3DGS at unit directions dirs (..., 3) -> (..., (degree + 1)^2)."""
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, SH_C0)]
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
        return (SH_C0 * sh[:, 0] + 0.5).clamp_min(0.0).expand(centers.shape[0], -1, -1)
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


# The EWA Jacobian is evaluated with x/z, y/z clamped to this fraction of the half view beyond the image
# edges (3DGS, gsplat). It makes a Gaussian's footprint depend on the image's frustum: a patch camera
# (a crop of a larger view) draws Gaussians centred well outside it slightly differently from the crop.
JACOBIAN_CLAMP = 0.3


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
    tan_x, tan_y = JACOBIAN_CLAMP * 0.5 * width / fx, JACOBIAN_CLAMP * 0.5 * height / fy
    u_c = torch.minimum(torch.maximum(u, -(cx / fx + tan_x)), (width - cx) / fx + tan_x)
    v_c = torch.minimum(torch.maximum(v, -(cy / fy + tan_y)), (height - cy) / fy + tan_y)
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



def camera_normals(normals: torch.Tensor, world_to_camera: torch.Tensor, means_cam: torch.Tensor) -> torch.Tensor:
    """World normals (P, 3) -> camera-frame normals (C, P, 3) turned toward each camera (n . p_cam < 0,
    p_cam (C, P, 3) the camera-frame centres)."""
    n_cam = torch.einsum("cij,pj->cpi", world_to_camera[:, :3, :3], normals)
    away = (n_cam * means_cam).sum(-1, keepdim=True) > 0
    return torch.where(away, -n_cam, n_cam)
