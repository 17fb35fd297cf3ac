"""The StyleGAN2 / EG3D mapping network: (z, camera label c) -> w, with the tracked mean latent w_avg.

z (N, z_dim) ~ N(0, I); c (N, c_dim) the 25-float EG3D camera label (generator units); both are
normalised to unit second moment (c after the `embed` layer), concatenated and passed through
`num_layers` equalised-lr layers (lr_multiplier 0.01, lrelu). Output ws (N, num_ws, w_dim): w
broadcast to every synthesis layer. Official parameter names: embed, fc0..fc{L-1}, w_avg.
pose_dim > 0 (3DPortraitGAN): `embed` takes c_dim + pose_dim inputs, the label followed by pose
parameters; a c of c_dim columns gets zeros appended (the official mapping's p = 0 without a pose).
"""

from __future__ import annotations

import torch
from torch import nn

from services.inversion.generators.layers import FullyConnectedLayer, normalize_2nd_moment


class MappingNetwork(nn.Module):
    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int, num_layers: int = 2,
                 lr_multiplier: float = 0.01, w_avg_beta: float = 0.998, pose_dim: int = 0):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        self.w_avg_beta, self.pose_dim = w_avg_beta, pose_dim
        embed = w_dim if c_dim > 0 else 0
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim + pose_dim, embed)
        features = [z_dim + embed] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(features[i], features[i + 1], activation="lrelu",
                                                        lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None, truncation_psi: float = 1.0) -> torch.Tensor:
        """z (N, z_dim), c (N, c_dim) -> ws (N, num_ws, w_dim)."""
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            if self.pose_dim and c.shape[1] == self.c_dim:
                c = torch.cat([c, c.new_zeros(c.shape[0], self.pose_dim)], dim=1)
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if truncation_psi != 1:
            x = self.w_avg.lerp(x, truncation_psi)
        return x.unsqueeze(1).repeat([1, self.num_ws, 1])
