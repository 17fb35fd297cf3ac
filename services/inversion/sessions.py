"""Inversion sessions: the pivot latent, the optimised noise buffers and (with PTI) the per-subject tuned
generator of one inverted portrait, owned by the tenant that created it, with caps and idle expiry.

Caps (types.InversionLimits, reported by Describe): sessions per tenant, bytes per session (tuned weights +
latent + noise), bytes per tenant and for the whole server. Invert checks them before it starts
(reserve) with the bytes it will need, and again when it stores the result, so a full tenant is told at
once instead of after minutes of work. Idle sessions expire after session_idle_ttl_s; every call that
uses a session refreshes it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from services.core.stores import StoreCaps, TenantStore, new_id
from services.inversion.generators.triplane_generator import TriplaneGenerator
from services.inversion.types import InversionLimits


@dataclass
class Session:
    id: str
    tenant: str
    generator: str
    ws: torch.Tensor                      # (1, num_ws, w_dim)
    noise: dict[str, torch.Tensor]
    tuned: TriplaneGenerator | None
    label: np.ndarray                     # (25,) conditioning camera label
    nbytes: int
    last_used: float
    lock: threading.RLock = field(default_factory=threading.RLock)


def session_bytes(ws: torch.Tensor, noise: dict[str, torch.Tensor], tuned_bytes: int) -> int:
    return ws.numel() * ws.element_size() + sum(v.numel() * v.element_size() for v in noise.values()) + tuned_bytes


class SessionStore(TenantStore[Session]):
    """The tenant-capped session store (services.core.stores) with InversionLimits' caps."""

    def __init__(self, limits: InversionLimits, clock=time.monotonic):
        lim = limits
        super().__init__("inversion session", StoreCaps(
            lim.session_idle_ttl_s, per_tenant=(lim.max_sessions_per_tenant, "max_sessions_per_tenant"),
            item_bytes=(lim.max_session_bytes, "max_session_bytes"),
            tenant_bytes=(lim.max_tenant_bytes, "max_tenant_bytes"),
            total_bytes=(lim.max_total_bytes, "max_total_bytes")),
            size_of=lambda s: s.nbytes, clock=clock, close_hint="CloseSession")
        self.limits = limits

    def add_session(self, tenant: str, generator: str, ws, noise, tuned, label, nbytes: int) -> Session:
        return self.add(Session(new_id(), tenant, generator, ws, noise, tuned, label, nbytes, self.clock()))
