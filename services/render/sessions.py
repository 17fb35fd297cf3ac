"""Scene sessions: who owns which scene, how long it lives, how much memory it may hold, and the step
handles that keep autograd graphs between Render and ApplyGradients."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import torch

from services.common.metrics import RENDER_SCENES
from services.core.stores import StoreCaps, TenantStore, new_id
from services.render.optim import SceneOptimizer
from services.render.representations.base import Representation
from services.render.types import RenderLimits


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
    last_used: float = 0.0   # when it was staged: assets live asset_ttl_s from then, reads do not refresh


class SceneStore(TenantStore[Scene]):
    """The tenant-capped scene store (services.core.stores) plus the staged assets, with one clock."""

    def __init__(self, limits: RenderLimits, clock=time.monotonic):
        lim = limits
        super().__init__("scene", StoreCaps(lim.scene_idle_ttl_s,
                                            per_tenant=(lim.max_scenes_per_tenant, "max_scenes_per_tenant"),
                                            item_bytes=(lim.max_scene_bytes, "max_scene_bytes"),
                                            tenant_bytes=(lim.max_tenant_bytes, "max_tenant_bytes")),
                         size_of=lambda s: s.rep.memory_bytes(), clock=clock, close_hint="CloseScene",
                         held_elsewhere=lambda tenant: self.assets.tenant_bytes(tenant))
        self.limits = limits
        # staged assets count against the same per-tenant byte cap as the tenant's scenes
        self.assets: TenantStore[Asset] = TenantStore(
            "asset", StoreCaps(lim.asset_ttl_s, item_bytes=(lim.max_asset_bytes, "max_asset_bytes"),
                               tenant_bytes=(lim.max_tenant_bytes, "max_tenant_bytes")),
            size_of=lambda a: len(a.data), clock=lambda: self.clock(), refresh_on_get=False,
            hide_other_tenants=True, held_elsewhere=self.tenant_bytes)
        RENDER_SCENES.set_function(self.count)   # the newest store in a process reports

    def add_scene(self, tenant: str, kind: str, label: str, rep: Representation, optimizer: SceneOptimizer) -> Scene:
        return self.add(Scene(new_id(), tenant, kind, label, rep, optimizer, self.clock()))

    def check_replacement(self, scene: Scene, nbytes: int) -> None:
        """RESOURCE_EXHAUSTED when `scene` holding nbytes instead of its current bytes breaks a cap."""
        self.reserve(scene.tenant, nbytes, replacing=scene)

    def add_asset(self, tenant: str, data: bytes, fmt: str) -> Asset:
        return self.assets.add(Asset(new_id(), tenant, data, fmt))

    def get_asset(self, tenant: str, asset_id: str) -> Asset:
        return self.assets.get(tenant, asset_id)
