"""Physically based shading under an environment map (shading "pbr" of mesh and DMTet scenes), pure torch.

Conventions
  Environment map: equirectangular, float32 (3, He, We), LINEAR radiance (not sRGB), >= 0. World +Y up.
  Pixel (row i, column j) looks along polar angle theta = pi (i + 0.5) / He from +Y (row 0 is the sky,
  +Y; the last row -Y) and azimuth phi = 2 pi ((j + 0.5) / We - 0.5), the direction
  d = (sin theta sin phi, cos theta, sin theta cos phi): the centre column is +Z (azimuth 0, the face
  side of a HeadForge head), three quarters across is +X, the left and right edges are -Z.
  rotation_y_deg rotates the map about world +Y by that angle (right-handed, +Z towards +X):
  L_rotated(d) = L(R_y(-angle) d).
  Materials: albedo sRGB in [0, 1] (render.proto's texture convention); it is linearised
  (srgb_to_linear), shaded in linear radiance, and the result encoded back (linear_to_srgb after
  clamping to [0, 1]). roughness is perceptual roughness in [0, 1] (GGX alpha = roughness^2), metallic
  in [0, 1]; both linear (glTF's metallicRoughness convention).

Shading model (split sum, as Karis 2013 / Filament)
  diffuse  = albedo_lin (1 - metallic) E(n) / pi, E the irradiance from the order-2 (9 coefficient)
             spherical-harmonics projection of the map (Ramamoorthi & Hanrahan 2001);
  specular = prefiltered(reflect(-v, n), roughness) * (F0 A + B) * (1 + F0 (1 / (A + B) - 1)),
             F0 = lerp(0.04, albedo_lin, metallic); (A, B) Karis' analytic mobile fit of the GGX DFG term;
             the last factor is Filament's multiple-scattering energy compensation, so that a white
             furnace (constant radiance 1) reflects 1 from a metal of albedo 1 at any roughness.
  The prefiltered map: level 0 the map itself (mirror), levels k = 1..LEVELS-1 at roughness k/(LEVELS-1)
  the GGX-weighted mean (D(n.h) (n.l) over the sphere, n = v = r as split-sum assumes) on a
  PREFILTER_H x 2 PREFILTER_H grid; roughness in between blends the two nearest levels linearly.
Everything is differentiable w.r.t. albedo, roughness, metallic, normals and view directions (not the map).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LEVELS = 6            # prefiltered roughness levels 0, 0.2, ..., 1
PREFILTER_H = 32      # rows of the convolved levels (columns 2x)
DIELECTRIC_F0 = 0.04


# ----------------------------------------------------------------------------------------------- colour

def srgb_to_linear(c: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded values in [0, 1] -> linear (IEC 61966-2-1), any shape."""
    c = c.clamp(0, 1)
    return torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055).clamp_min(1e-8) ** 2.4)


def linear_to_srgb(c: torch.Tensor) -> torch.Tensor:
    """Linear values -> sRGB in [0, 1] (clamped to [0, 1] first), any shape."""
    c = c.clamp(0, 1)
    return torch.where(c <= 0.0031308, c * 12.92, 1.055 * c.clamp_min(1e-8) ** (1 / 2.4) - 0.055)


# ----------------------------------------------------------------------------------------------- geometry

def equirect_directions(h: int, w: int, dtype=torch.float32, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit directions (h, w, 3) of the texel centres of an h x w equirect map (module conventions) and
    each texel's solid angle (h, w) in steradians (summing to 4 pi)."""
    theta = (torch.arange(h, dtype=dtype, device=device) + 0.5) * math.pi / h
    phi = ((torch.arange(w, dtype=dtype, device=device) + 0.5) / w - 0.5) * 2 * math.pi
    t, p = torch.meshgrid(theta, phi, indexing="ij")
    d = torch.stack([t.sin() * p.sin(), t.cos(), t.sin() * p.cos()], -1)
    area = t.sin() * (math.pi / h) * (2 * math.pi / w)
    return d, area * (4 * math.pi / area.sum())


def rotate_y(d: torch.Tensor, degrees: float) -> torch.Tensor:
    """R_y(degrees) d for directions (..., 3): +Z turns towards +X for positive angles."""
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    x, y, z = d.unbind(-1)
    return torch.stack([c * x + s * z, y, -s * x + c * z], -1)


def _lookup(level: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Bilinear radiance (..., 3) of an equirect map (3, h, w) along unit directions d (..., 3), wrapping
    in azimuth."""
    shape = d.shape[:-1]
    d = d.reshape(-1, 3)
    theta = torch.acos(d[:, 1].clamp(-1 + 1e-6, 1 - 1e-6))
    phi = torch.atan2(d[:, 0], d[:, 2])
    h, w = level.shape[1:]
    padded = torch.cat([level[:, :, -1:], level, level[:, :, :1]], 2)            # wrap one column each side
    x = (phi / (2 * math.pi) + 0.5) * w + 1                                     # texel units in padded
    y = theta / math.pi * h
    gx = x / (w + 2) * 2 - 1                                                    # align_corners=False
    gy = y / h * 2 - 1
    grid = torch.stack([gx, gy], -1).view(1, 1, -1, 2).to(level)
    out = F.grid_sample(padded[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0, :, 0].T.reshape(*shape, 3)


# ----------------------------------------------------------------------------------------------- SH

def _sh9(d: torch.Tensor) -> torch.Tensor:
    """Real spherical harmonics up to order 2 at unit directions (..., 3) -> (..., 9)."""
    x, y, z = d.unbind(-1)
    return torch.stack([0.282095 * torch.ones_like(x), 0.488603 * y, 0.488603 * z, 0.488603 * x,
                        1.092548 * x * y, 1.092548 * y * z, 0.315392 * (3 * z * z - 1),
                        1.092548 * x * z, 0.546274 * (x * x - y * y)], -1)


_SH_BAND = (math.pi, *(2 * math.pi / 3,) * 3, *(math.pi / 4,) * 5)   # clamped-cosine convolution per band


@dataclass
class Environment:
    """A prepared environment map: SH irradiance coefficients and prefiltered specular levels.

    sh: (9, 3) irradiance coefficients (already convolved: E(n) = sh9(n) @ sh); levels: LEVELS maps
    (3, h, w) of linear radiance, level 0 the map itself; rotation_y_deg as in the module doc."""

    sh: torch.Tensor
    levels: list[torch.Tensor]
    rotation_y_deg: float = 0.0

    @classmethod
    def from_map(cls, radiance: torch.Tensor, rotation_y_deg: float = 0.0) -> "Environment":
        """radiance (3, He, We) linear, >= 0 (module conventions). Cost: one pass for the SH and a
        (PREFILTER_H * 2 PREFILTER_H)^2 weighted sum per convolved level."""
        radiance = radiance.detach().float()
        dev = radiance.device
        He, We = radiance.shape[1:]
        d, area = equirect_directions(He, We, device=dev)
        coeff = torch.einsum("hwk,hw,chw->kc", _sh9(d), area, radiance)
        sh = coeff * torch.tensor(_SH_BAND, device=dev)[:, None]
        h = min(PREFILTER_H, He)
        small = F.interpolate(radiance[None], size=(h, 2 * h), mode="area")[0] if (He, We) != (h, 2 * h) else radiance
        ds, a_s = equirect_directions(h, 2 * h, device=dev)
        ds, a_s, flat = ds.reshape(-1, 3), a_s.reshape(-1), small.reshape(3, -1)
        cos = ds @ ds.T                                                          # (out r, in l)
        n_h2 = ((1 + cos) / 2).clamp_min(0)                                      # (r.h)^2, h = (r + l) / |r + l|
        lit = cos.clamp_min(0) * a_s[None]
        levels = [radiance]
        for k in range(1, LEVELS):
            a2 = (k / (LEVELS - 1)) ** 4                                         # alpha^2, alpha = roughness^2
            wgt = lit * (a2 / (math.pi * (n_h2 * (a2 - 1) + 1) ** 2))
            levels.append(((wgt @ flat.T) / wgt.sum(1, keepdim=True).clamp_min(1e-12)).T.reshape(3, h, 2 * h))
        return cls(sh, levels, float(rotation_y_deg))

    def to_map_frame(self, d: torch.Tensor) -> torch.Tensor:
        """World directions (..., 3) -> the unrotated map's frame (R_y(-rotation) d)."""
        return rotate_y(d, -self.rotation_y_deg) if self.rotation_y_deg else d

    def irradiance(self, n: torch.Tensor) -> torch.Tensor:
        """Irradiance E (..., 3) (W/m^2 for radiance in W/(m^2 sr)) at world normals n (..., 3)."""
        return (_sh9(self.to_map_frame(n)) @ self.sh.to(n)).clamp_min(0)

    def specular(self, r: torch.Tensor, roughness: torch.Tensor) -> torch.Tensor:
        """Prefiltered radiance (..., 3) along world reflection directions r (..., 3) at roughness (..., 1)."""
        d = self.to_map_frame(r)
        pos = roughness.clamp(0, 1) * (LEVELS - 1)
        lo = pos.detach().floor().clamp(0, LEVELS - 2)
        f = pos - lo                                                             # differentiable in roughness
        out = torch.zeros_like(d)
        for k in range(LEVELS - 1):
            sel = lo == k
            if not bool(sel.any()):
                continue
            a, b = _lookup(self.levels[k].to(d), d), _lookup(self.levels[k + 1].to(d), d)
            out = out + sel * (a * (1 - f) + b * f)
        return out


def env_brdf_approx(n_dot_v: torch.Tensor, roughness: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Karis' analytic fit of the split-sum DFG term (Unreal mobile): (A, B) (..., 1) with
    specular = F0 A + B. Error against the tabulated integral: a few per cent of A + B."""
    c0 = torch.tensor([-1.0, -0.0275, -0.572, 0.022], device=roughness.device, dtype=roughness.dtype)
    c1 = torch.tensor([1.0, 0.0425, 1.04, -0.04], device=roughness.device, dtype=roughness.dtype)
    r = roughness * c0 + c1
    a004 = torch.minimum(r[..., :1] * r[..., :1], torch.exp2(-9.28 * n_dot_v)) * r[..., :1] + r[..., 1:2]
    return -1.04 * a004 + r[..., 2:3], 1.04 * a004 + r[..., 3:4]


def pbr_terms(albedo_lin: torch.Tensor, roughness: torch.Tensor, metallic: torch.Tensor, normal: torch.Tensor,
              view_dir: torch.Tensor, env: Environment) -> tuple[torch.Tensor, torch.Tensor]:
    """(diffuse, specular) linear radiance (..., 3). albedo_lin (..., 3) LINEAR in [0, 1]; roughness,
    metallic (..., 1) in [0, 1]; normal (..., 3) unit world normals; view_dir (..., 3) unit world
    directions from the surface towards the camera."""
    metallic = metallic.clamp(0, 1)
    roughness = roughness.clamp(0, 1)
    diffuse = albedo_lin * (1 - metallic) * env.irradiance(normal) / math.pi
    n_dot_v = (normal * view_dir).sum(-1, keepdim=True)
    refl = 2 * n_dot_v * normal - view_dir
    n_dot_v = n_dot_v.clamp(1e-4, 1)
    f0 = DIELECTRIC_F0 + (albedo_lin - DIELECTRIC_F0) * metallic
    A, B = env_brdf_approx(n_dot_v, roughness)
    energy = 1 + f0 * (1 / (A + B).clamp_min(1e-3) - 1)
    specular = env.specular(refl, roughness) * (f0 * A + B) * energy
    return diffuse, specular


def shade_pbr(albedo: torch.Tensor, roughness: torch.Tensor, metallic: torch.Tensor, normal_world: torch.Tensor,
              view_dir: torch.Tensor, env: Environment, diffuse_only: bool = False) -> torch.Tensor:
    """sRGB colour (..., 3) in [0, 1] of surfaces under `env`. albedo (..., 3) sRGB in [0, 1] (linearised
    here); roughness, metallic (..., 1) in [0, 1]; normal_world (..., 3) unit; view_dir (..., 3) unit,
    surface -> camera. The linear result is clamped to [0, 1] and sRGB-encoded (no tone mapping).
    diffuse_only (shading "pbr_diffuse"): the diffuse lobe of a dielectric (metallic 0, no specular), so
    roughness and metallic take no part (ID-to-3D's first texture phase learns the diffuse term alone)."""
    if diffuse_only:
        return linear_to_srgb(srgb_to_linear(albedo) * env.irradiance(normal_world) / math.pi)
    diffuse, specular = pbr_terms(srgb_to_linear(albedo), roughness, metallic, normal_world, view_dir, env)
    return linear_to_srgb(diffuse + specular)
