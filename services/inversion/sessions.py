"""Inversion sessions: the pivot latent, the optimised noise buffers and (with PTI) the per-subject tuned
generator of one inverted portrait, owned by the tenant that created it, with caps and idle expiry.

Caps (InversionLimits, reported by Describe): sessions per tenant, bytes per session (tuned weights +
latent + noise), bytes per tenant and for the whole server. Invert checks them before it starts
(reserve) with the bytes it will need, and again when it stores the result, so a full tenant is told at
once instead of after minutes of work. Idle sessions expire after session_idle_ttl_s; every call that
uses a session refreshes it.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, Field

from services.common.errors import NotFound, PermissionDenied, ResourceExhausted
from services.inversion.generators.triplane_generator import TriplaneGenerator


class InversionLimits(BaseModel):
    """Limits an inversion server enforces (Describe reports them)."""

    session_idle_ttl_s: float = Field(1800, gt=0)
    max_sessions_per_tenant: int = Field(8, ge=1)
    max_session_bytes: int = Field(2 << 30, ge=1)
    max_tenant_bytes: int = Field(4 << 30, ge=1)
    max_total_bytes: int = Field(16 << 30, ge=1, description="all tenants together")
    max_concurrent_inversions: int = Field(2, ge=1, description="Invert calls running at once; more: RESOURCE_EXHAUSTED")
    max_render_pixels: int = Field(16 << 20, ge=1, description="N x S x S per Render call")
    max_mesh_resolution: int = Field(512, ge=32, le=1024, description="ExtractMesh grid side the server allows")


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


class SessionStore:
    """Thread-safe sessions per tenant (clock injectable for tests)."""

    def __init__(self, limits: InversionLimits, clock=time.monotonic):
        self.limits = limits
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def _expire_locked(self) -> None:
        now = self.clock()
        for sid in [s.id for s in self._sessions.values() if now - s.last_used > self.limits.session_idle_ttl_s]:
            del self._sessions[sid]

    def reserve(self, tenant: str, nbytes: int) -> None:
        """RESOURCE_EXHAUSTED when a new session of nbytes would break a cap (nothing is held)."""
        lim = self.limits
        if nbytes > lim.max_session_bytes:
            raise ResourceExhausted(f"the session would hold {nbytes} bytes, over the per-session cap of "
                                    f"{lim.max_session_bytes}", reason="SESSION_TOO_LARGE",
                                    metadata={"limit": "max_session_bytes", "value": str(lim.max_session_bytes),
                                              "got": str(nbytes)})
        with self._lock:
            self._check_locked(tenant, nbytes)

    def _check_locked(self, tenant: str, nbytes: int) -> None:
        lim = self.limits
        self._expire_locked()
        mine = [s for s in self._sessions.values() if s.tenant == tenant]
        if len(mine) >= lim.max_sessions_per_tenant:
            raise ResourceExhausted(f"tenant has {len(mine)} inversion sessions, the cap is "
                                    f"{lim.max_sessions_per_tenant}; close some (CloseSession) or wait for expiry",
                                    reason="TOO_MANY_SESSIONS",
                                    metadata={"limit": "max_sessions_per_tenant",
                                              "value": str(lim.max_sessions_per_tenant)})
        used = sum(s.nbytes for s in mine)
        if used + nbytes > lim.max_tenant_bytes:
            raise ResourceExhausted(f"tenant sessions would hold {used + nbytes} bytes, over {lim.max_tenant_bytes}",
                                    reason="TENANT_MEMORY", metadata={"limit": "max_tenant_bytes",
                                                                      "value": str(lim.max_tenant_bytes)})
        total = sum(s.nbytes for s in self._sessions.values())
        if total + nbytes > lim.max_total_bytes:
            raise ResourceExhausted(f"the server's sessions would hold {total + nbytes} bytes, over "
                                    f"{lim.max_total_bytes}", reason="SERVER_MEMORY",
                                    metadata={"limit": "max_total_bytes", "value": str(lim.max_total_bytes)})

    def add(self, tenant: str, generator: str, ws, noise, tuned, label, nbytes: int) -> Session:
        self.reserve(tenant, nbytes)
        with self._lock:
            self._check_locked(tenant, nbytes)  # caps may have filled while the inversion ran
            s = Session(secrets.token_hex(16), tenant, generator, ws, noise, tuned, label, nbytes, self.clock())
            self._sessions[s.id] = s
            return s

    def get(self, tenant: str, session_id: str) -> Session:
        """The session, refreshed; NotFound (unknown / expired / closed) or PermissionDenied."""
        with self._lock:
            self._expire_locked()
            s = self._sessions.get(session_id)
            if s is None:
                raise NotFound(f"no inversion session {session_id!r} (unknown, expired or closed)",
                               reason="SESSION_NOT_FOUND")
            if s.tenant != tenant:
                raise PermissionDenied(f"inversion session {session_id!r} belongs to another tenant", reason="NOT_OWNER")
            s.last_used = self.clock()
            return s

    def close(self, tenant: str, session_id: str) -> None:
        s = self.get(tenant, session_id)
        with self._lock:
            self._sessions.pop(s.id, None)

    def count(self, tenant: str | None = None) -> int:
        with self._lock:
            self._expire_locked()
            return sum(1 for s in self._sessions.values() if tenant is None or s.tenant == tenant)

    def expires_in(self, session: Session) -> float:
        return max(0.0, session.last_used + self.limits.session_idle_ttl_s - self.clock())
