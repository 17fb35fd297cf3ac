"""One tenant-capped, idle-expiring store for what a service holds between calls on a tenant's behalf:
the render service's scenes and staged assets, the inversion service's sessions.

Items are objects with `id`, `tenant` and `last_used` attributes (make the id with new_id()). Every
get() refreshes last_used (unless refresh_on_get is False: then an item lives idle_ttl_s from its
creation); an item idle for longer than idle_ttl_s is dropped at the next call. Caps, each optional and
named by the limit that sets it (error metadata "limit"): items per tenant, bytes per item, bytes per
tenant, bytes for the whole server. Errors (services.common.errors), with reasons built from the noun
("scene" -> SCENE_TOO_LARGE, TOO_MANY_SCENES, SCENE_NOT_FOUND): RESOURCE_EXHAUSTED for a cap, also
TENANT_MEMORY and SERVER_MEMORY; NOT_FOUND for an unknown, expired or closed id; PERMISSION_DENIED
(NOT_OWNER) for another tenant's item, or NOT_FOUND when hide_other_tenants is set (ids never leak).
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable, Generic, Iterator, Protocol, TypeVar

from services.common.errors import NotFound, PermissionDenied, ResourceExhausted, quoted


class Stored(Protocol):
    id: str
    tenant: str
    last_used: float


T = TypeVar("T", bound=Stored)
Cap = tuple[int, str]   # (value, the name of the limit that sets it)


@dataclass(frozen=True)
class StoreCaps:
    idle_ttl_s: float
    per_tenant: Cap | None = None
    item_bytes: Cap | None = None
    tenant_bytes: Cap | None = None
    total_bytes: Cap | None = None


def new_id() -> str:
    """An opaque random id (32 hex characters)."""
    return secrets.token_hex(16)


def _exhausted(message: str, reason: str, cap: Cap, got: int) -> ResourceExhausted:
    return ResourceExhausted(message, reason=reason,
                             metadata={"limit": cap[1], "value": str(cap[0]), "got": str(got)})


class TenantStore(Generic[T]):
    """Thread-safe items per tenant with caps and idle expiry (clock injectable for tests).

    noun: what the items are called in messages ("scene", "inversion session"); its last word names the
    reasons. size_of: an item's bytes now (scenes grow as they densify). close_hint: how a client frees
    items ("CloseScene"). held_elsewhere(tenant): bytes the tenant holds in another store that share
    the tenant_bytes cap (the render service's scenes and staged assets); called outside this store's
    lock, so two stores may count each other without a lock-order deadlock."""

    def __init__(self, noun: str, caps: StoreCaps, *, size_of: Callable[[T], int] = lambda item: 0,
                 clock: Callable[[], float] = time.monotonic, refresh_on_get: bool = True,
                 hide_other_tenants: bool = False, close_hint: str = "",
                 held_elsewhere: Callable[[str], int] = lambda tenant: 0):
        self.held_elsewhere = held_elsewhere
        self.noun = noun
        self.caps = caps
        self.size_of = size_of
        self.clock = clock
        self.refresh_on_get = refresh_on_get
        self.hide_other_tenants = hide_other_tenants
        self.close_hint = close_hint
        self._reason = noun.split()[-1].upper()
        self._items: dict[str, T] = {}
        self._lock = threading.Lock()

    # caps ---------------------------------------------------------------------------------------

    def reserve(self, tenant: str, nbytes: int, replacing: T | None = None) -> None:
        """RESOURCE_EXHAUSTED when a new item of nbytes would break a cap now (nothing is held): lets a
        service refuse before long work (or a large allocation) rather than after it. replacing: an item
        of the tenant that the new content replaces (its bytes and its place in the count are freed)."""
        self._check_item(nbytes)
        elsewhere = self.held_elsewhere(tenant)
        with self._lock:
            self._check_locked(tenant, nbytes, elsewhere, replacing)

    def _check_item(self, nbytes: int) -> None:
        cap = self.caps.item_bytes
        if cap and nbytes > cap[0]:
            raise _exhausted(f"the {self.noun} would hold {nbytes} bytes, over the per-{self.noun} cap of {cap[0]} "
                             f"({cap[1]})", f"{self._reason}_TOO_LARGE", cap, nbytes)

    def _check_locked(self, tenant: str, nbytes: int, elsewhere: int = 0, replacing: T | None = None) -> None:
        self._expire_locked()
        caps = self.caps
        mine = [s for s in self._items.values() if s.tenant == tenant and s is not replacing]
        if caps.per_tenant and len(mine) >= caps.per_tenant[0]:
            hint = f"close some ({self.close_hint}) or wait for expiry" if self.close_hint else "wait for expiry"
            raise _exhausted(f"tenant has {len(mine)} {self.noun}s, the cap is {caps.per_tenant[0]}; {hint}",
                             f"TOO_MANY_{self._reason}S", caps.per_tenant, len(mine) + 1)
        if caps.tenant_bytes:
            used = sum(self.size_of(s) for s in mine) + nbytes + elsewhere
            if used > caps.tenant_bytes[0]:
                raise _exhausted(f"the tenant's {self.noun}s would hold {used} bytes, over {caps.tenant_bytes[0]} "
                                 f"({caps.tenant_bytes[1]})", "TENANT_MEMORY", caps.tenant_bytes, used)
        if caps.total_bytes:
            total = sum(self.size_of(s) for s in self._items.values() if s is not replacing) + nbytes
            if total > caps.total_bytes[0]:
                raise _exhausted(f"the server's {self.noun}s would hold {total} bytes, over {caps.total_bytes[0]} "
                                 f"({caps.total_bytes[1]})", "SERVER_MEMORY", caps.total_bytes, total)

    # items --------------------------------------------------------------------------------------

    def add(self, item: T, nbytes: int | None = None) -> T:
        """Store an item (its id must be new); caps are checked again here, since they may have filled
        while the caller worked. nbytes: its size (default size_of(item))."""
        nbytes = self.size_of(item) if nbytes is None else nbytes
        self._check_item(nbytes)
        elsewhere = self.held_elsewhere(item.tenant)
        with self._lock:
            self._check_locked(item.tenant, nbytes, elsewhere)
            item.last_used = self.clock()
            self._items[item.id] = item
            return item

    def get(self, tenant: str, item_id: str) -> T:
        """The item, refreshed; NOT_FOUND (unknown / expired / closed) or PERMISSION_DENIED (another tenant's)."""
        with self._lock:
            self._expire_locked()
            item = self._items.get(item_id)
            if item is None or (item.tenant != tenant and self.hide_other_tenants):
                raise NotFound(f"no {self.noun} {quoted(item_id)} (unknown, expired or closed)",
                               reason=f"{self._reason}_NOT_FOUND")
            if item.tenant != tenant:
                raise PermissionDenied(f"{self.noun} {quoted(item_id)} belongs to another tenant", reason="NOT_OWNER")
            if self.refresh_on_get:
                item.last_used = self.clock()
            return item

    def close(self, tenant: str, item_id: str) -> None:
        """Drop an item (the same errors as get)."""
        item = self.get(tenant, item_id)
        with self._lock:
            self._items.pop(item.id, None)

    def tenant_bytes(self, tenant: str) -> int:
        """The bytes the tenant's live items hold now."""
        with self._lock:
            self._expire_locked()
            return sum(self.size_of(s) for s in self._items.values() if s.tenant == tenant)

    def count(self, tenant: str | None = None) -> int:
        with self._lock:
            self._expire_locked()
            return sum(1 for s in self._items.values() if tenant is None or s.tenant == tenant)

    def items(self, tenant: str | None = None) -> Iterator[T]:
        """A snapshot of the live items (of one tenant, or all)."""
        with self._lock:
            self._expire_locked()
            return iter([s for s in self._items.values() if tenant is None or s.tenant == tenant])

    def expires_at(self, item: T) -> float:
        return item.last_used + self.caps.idle_ttl_s

    def expires_in(self, item: T) -> float:
        return max(0.0, self.expires_at(item) - self.clock())

    def _expire_locked(self) -> None:
        now = self.clock()
        for sid in [s.id for s in self._items.values() if now - s.last_used > self.caps.idle_ttl_s]:
            del self._items[sid]
