"""A multiresolution hash-grid encoding (Instant-NGP style, Mueller et al. 2022), pure torch.

HashGrid(levels L, features F, log2_table_size T, base_resolution N0, growth b): level l in 0..L-1 is a
grid of N_l = floor(N0 * b^l) cells per side over the unit cube [0, 1]^3, its (N_l + 1)^3 corners each
owning F learnable features in a table of 2^T rows. Levels whose corners fit in the table index it
densely (one row per corner, no collision); finer levels use the spatial hash
  (i * 1) xor (j * 2654435761) xor (k * 805459861)  mod 2^T
of the integer corner (i, j, k). A point's level-l feature is the trilinear interpolation of its cell's 8
corner features, so the encoding is continuous and differentiable w.r.t. the tables (and piecewise
w.r.t. the point).

Shapes: forward(x (P, 3) in [0, 1] (clamped)) -> (P, L, F), same dtype as the tables. Tables: (L, 2^T, F)
float32, initialised uniform in [-init_scale, init_scale] (Instant-NGP: 1e-4, the default); memory L * 2^T * F * 4 bytes
(16 levels, 2 features, 2^19: 64 MiB).
"""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn

PRIMES = (1, 2654435761, 805459861)


def growth_factor(levels: int, base_resolution: int, finest_resolution: int) -> float:
    """b such that level L-1 has finest_resolution cells per side."""
    if levels <= 1:
        return 1.0
    return math.exp((math.log(finest_resolution) - math.log(base_resolution)) / (levels - 1))


class HashGrid(nn.Module):
    def __init__(self, levels: int = 16, features: int = 2, log2_table_size: int = 19, base_resolution: int = 16,
                 growth: float | None = None, finest_resolution: int = 2048, init_scale: float = 1e-4):
        """growth None: the factor that takes base_resolution to finest_resolution over the levels;
        init_scale: the tables start uniform in [-init_scale, init_scale]."""
        super().__init__()
        if not 1 <= levels <= 32:
            raise ValueError(f"hash grid levels must be in [1, 32], got {levels}")
        if not 1 <= features <= 8:
            raise ValueError(f"hash grid features per level must be in [1, 8], got {features}")
        if not 4 <= log2_table_size <= 24:
            raise ValueError(f"hash grid log2 table size must be in [4, 24], got {log2_table_size}")
        self.levels, self.features, self.log2_table_size = int(levels), int(features), int(log2_table_size)
        self.base_resolution = int(base_resolution)
        self.growth = float(growth if growth is not None else growth_factor(levels, base_resolution, finest_resolution))
        self.table_size = 1 << self.log2_table_size
        self.tables = nn.Parameter(torch.empty(self.levels, self.table_size, self.features).uniform_(-init_scale, init_scale))
        self.resolutions = [int(math.floor(self.base_resolution * self.growth ** l)) for l in range(self.levels)]
        self._corners = torch.tensor(list(itertools.product((0, 1), repeat=3)))          # (8, 3)

    @staticmethod
    def table_bytes(levels: int, features: int, log2_table_size: int) -> int:
        return levels * (1 << log2_table_size) * features * 4

    def _index(self, corner: torch.Tensor, level: int) -> torch.Tensor:
        """Table rows (...,) of integer corners (..., 3) at one level."""
        n = self.resolutions[level] + 1
        if n ** 3 <= self.table_size:
            return (corner[..., 0] * n + corner[..., 1]) * n + corner[..., 2]
        h = corner[..., 0] * PRIMES[0]
        h = h ^ (corner[..., 1] * PRIMES[1])
        h = h ^ (corner[..., 2] * PRIMES[2])
        return h & (self.table_size - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.tables.dtype).clamp(0, 1)
        corners = self._corners.to(x.device)
        out = []
        for level, res in enumerate(self.resolutions):
            pos = x * res
            cell = pos.floor().clamp(0, res - 1)
            frac = pos - cell                                                   # (P, 3) in [0, 1]
            c = cell.long()[:, None, :] + corners                               # (P, 8, 3)
            w = torch.where(corners.bool(), frac[:, None, :], 1 - frac[:, None, :]).prod(-1)   # (P, 8)
            feats = self.tables[level][self._index(c, level)]                   # (P, 8, F)
            out.append((feats * w[..., None]).sum(1))
        return torch.stack(out, 1)
