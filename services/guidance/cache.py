"""Per-subject cache of encoded conditions (text states, identity embeddings), keyed by caller-chosen keys
scoped to (tenant, backbone, kind). LRU with a size bound and idle expiry (guidance.proto Conditions)."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from services.common.errors import NotFound


class ConditionsCache:
    def __init__(self, max_entries: int = 4096, ttl_s: float = 3600.0, clock=time.monotonic):
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[tuple, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, scope: tuple, key: str, value: Any) -> None:
        with self._lock:
            full = (*scope, key)
            self._entries[full] = (self._clock(), value)
            self._entries.move_to_end(full)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get(self, scope: tuple, key: str, field: str) -> Any:
        """The cached value; NotFound (reason CONDITIONS_CACHE_MISS) when unknown, evicted or expired."""
        with self._lock:
            full = (*scope, key)
            entry = self._entries.get(full)
            now = self._clock()
            if entry is None or now - entry[0] > self.ttl_s:
                self._entries.pop(full, None)
                raise NotFound(f"{field} {key!r}: not in the conditions cache (unknown, evicted or expired); "
                               "resend the inputs with the key", reason="CONDITIONS_CACHE_MISS",
                               metadata={"key": key})
            self._entries[full] = (now, entry[1])
            self._entries.move_to_end(full)
            return entry[1]

    def __len__(self) -> int:
        return len(self._entries)
