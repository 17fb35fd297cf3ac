"""Scene sessions: who owns which scene, how long it lives, how much memory it may hold, and the step
handles that keep autograd graphs between Render and ApplyGradients."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, Field

from services.common.errors import NotFound, PermissionDenied, ResourceExhausted
from services.common.metrics import RENDER_SCENES
from services.render.optim import SceneOptimizer
from services.render.representations.base import Representation


class RenderLimits(BaseModel):
    """Limits a render server enforces (Describe reports them)."""

    scene_idle_ttl_s: float = Field(1800, gt=0)
    step_handle_ttl_s: float = Field(60, gt=0)
    max_pending_steps_per_scene: int = Field(8, ge=1)
    max_scenes_per_tenant: int = Field(16, ge=1)
    max_scene_bytes: int = Field(4 << 30, ge=1)
    max_tenant_bytes: int = Field(8 << 30, ge=1)
    max_render_pixels: int = Field(16 << 20, ge=1, description="N x H x W per Render call")
    max_gaussians: int = Field(2_000_000, ge=1)
    max_triangles: int = Field(2_000_000, ge=1)
    max_asset_bytes: int = Field(512 << 20, ge=1)
    asset_ttl_s: float = Field(600, gt=0)


@dataclass
class StepHandle:
    id: str
    version: int                       # the scene's parameter version it was rendered from
    outputs: dict[str, torch.Tensor]   # with autograd graph
    expires_at: float


@dataclass
class Scene:
    id: str
    tenant: str
    kind: str
    label: str
    rep: Representation
    optimizer: SceneOptimizer
    last_used: float
    version: int = 0
    handles: dict[str, StepHandle] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def step(self) -> int:
        return self.optimizer.step_count

    def drop_expired_handles(self, now: float) -> None:
        for hid in [h.id for h in self.handles.values() if h.expires_at <= now]:
            del self.handles[hid]

    def parameters_changed(self) -> None:
        """After a step, SetState or densification: every pending handle is stale."""
        self.version += 1
        self.handles.clear()


@dataclass
class Asset:
    id: str
    tenant: str
    data: bytes
    fmt: str
    expires_at: float


class SceneStore:
    """Thread-safe registry of scenes and staged assets, per tenant, with caps and idle expiry."""

    def __init__(self, limits: RenderLimits, clock=time.monotonic):
        self.limits = limits
        self.clock = clock
        self._scenes: dict[str, Scene] = {}
        self._assets: dict[str, Asset] = {}
        self._lock = threading.Lock()
        RENDER_SCENES.set_function(self.count)   # the newest store in a process reports

    # scenes
    def add(self, tenant: str, kind: str, label: str, rep: Representation, optimizer: SceneOptimizer) -> Scene:
        size = rep.memory_bytes()
        if size > self.limits.max_scene_bytes:
            raise ResourceExhausted(f"scene needs {size} bytes, over the per-scene cap of {self.limits.max_scene_bytes}",
                                    reason="SCENE_TOO_LARGE", metadata={"limit": "max_scene_bytes"})
        with self._lock:
            self._expire_locked()
            mine = [s for s in self._scenes.values() if s.tenant == tenant]
            if len(mine) >= self.limits.max_scenes_per_tenant:
                raise ResourceExhausted(f"tenant has {len(mine)} scenes, the cap is {self.limits.max_scenes_per_tenant}; "
                                        "close some (CloseScene)", reason="TOO_MANY_SCENES",
                                        metadata={"limit": "max_scenes_per_tenant"})
            used = sum(s.rep.memory_bytes() for s in mine)
            if used + size > self.limits.max_tenant_bytes:
                raise ResourceExhausted(f"tenant memory {used + size} bytes would exceed {self.limits.max_tenant_bytes}",
                                        reason="TENANT_MEMORY", metadata={"limit": "max_tenant_bytes"})
            scene = Scene(secrets.token_hex(16), tenant, kind, label, rep, optimizer, self.clock())
            self._scenes[scene.id] = scene
            return scene

    def get(self, tenant: str, scene_id: str) -> Scene:
        """The scene, refreshed; NotFound (unknown/expired/closed) or PermissionDenied (other tenant)."""
        with self._lock:
            self._expire_locked()
            scene = self._scenes.get(scene_id)
            if scene is None:
                raise NotFound(f"no scene {scene_id!r} (unknown, expired or closed)", reason="SCENE_NOT_FOUND")
            if scene.tenant != tenant:
                raise PermissionDenied(f"scene {scene_id!r} belongs to another tenant", reason="NOT_OWNER")
            scene.last_used = self.clock()
            return scene

    def close(self, tenant: str, scene_id: str) -> None:
        scene = self.get(tenant, scene_id)
        with self._lock:
            self._scenes.pop(scene.id, None)

    def count(self, tenant: str | None = None) -> int:
        with self._lock:
            return sum(1 for s in self._scenes.values() if tenant is None or s.tenant == tenant)

    def expires_at(self, scene: Scene) -> float:
        return scene.last_used + self.limits.scene_idle_ttl_s

    def _expire_locked(self) -> None:
        now = self.clock()
        for sid in [s.id for s in self._scenes.values() if now - s.last_used > self.limits.scene_idle_ttl_s]:
            del self._scenes[sid]
        for aid in [a.id for a in self._assets.values() if a.expires_at <= now]:
            del self._assets[aid]

    # assets
    def add_asset(self, tenant: str, data: bytes, fmt: str) -> Asset:
        if len(data) > self.limits.max_asset_bytes:
            raise ResourceExhausted(f"asset of {len(data)} bytes exceeds {self.limits.max_asset_bytes}",
                                    reason="ASSET_TOO_LARGE", metadata={"limit": "max_asset_bytes"})
        with self._lock:
            self._expire_locked()
            asset = Asset(secrets.token_hex(16), tenant, data, fmt, self.clock() + self.limits.asset_ttl_s)
            self._assets[asset.id] = asset
            return asset

    def get_asset(self, tenant: str, asset_id: str) -> Asset:
        with self._lock:
            self._expire_locked()
            asset = self._assets.get(asset_id)
            if asset is None or asset.tenant != tenant:  # other tenants' ids do not leak
                raise NotFound(f"no asset {asset_id!r} (unknown or expired)", reason="ASSET_NOT_FOUND")
            return asset
