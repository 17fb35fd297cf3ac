"""Dynamic batching (Triton-style): requests from any caller wait in one bounded queue; a single worker
thread per model copy takes the highest-priority, oldest request, gathers queued requests with the same
group key up to max_batch_images images, waits up to max_queue_delay for more partners, and runs them as
one batch. Expired requests are dropped with DEADLINE_EXCEEDED before they cost compute; a full queue
answers RESOURCE_EXHAUSTED; a batch that fails is re-run request by request, so one bad request fails
alone and never poisons its partners."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable

from services.common.errors import DeadlineExceeded, HeadForgeError, Internal, ResourceExhausted
from services.common.metrics import BATCH_IMAGES, BATCH_REQUESTS, QUEUE_DEPTH

log = logging.getLogger(__name__)

RunBatch = Callable[[list[Any]], list[Any]]


@dataclass
class BatchStats:
    batches: int = 0
    requests: int = 0
    images: int = 0
    largest_batch_requests: int = 0
    expired: int = 0
    rejected: int = 0
    batch_sizes: list[int] = field(default_factory=list, repr=False)  # images per batch, last 1000


@dataclass
class _Item:
    key: Hashable
    size: int
    priority: int
    deadline: float | None        # time.monotonic()
    payload: Any
    run: RunBatch
    order: int
    enqueued: float
    future: Future = field(default_factory=Future)


class DynamicBatcher:
    """submit(key, size, payload, run) -> Future of run([...payloads...])[i] for this payload.

    `run` receives the payloads of one batch (same key, in queue order) and returns one result per payload;
    a result that is an exception fails only that request."""

    def __init__(self, *, max_batch_images: int = 16, max_queue_delay_ms: float = 5.0, max_queue_depth: int = 64,
                 name: str = "guidance"):
        self.max_batch_images = max_batch_images
        self.max_queue_delay_s = max_queue_delay_ms / 1000.0
        self.max_queue_depth = max_queue_depth
        self.name = name
        self.stats = BatchStats()
        self._queue: list[_Item] = []
        self._cv = threading.Condition()
        self._counter = itertools.count()
        self._closed = False
        self._worker = threading.Thread(target=self._loop, name=f"{name}-batcher", daemon=True)
        self._worker.start()

    def depth(self) -> int:
        with self._cv:
            return len(self._queue)

    def submit(self, key: Hashable, size: int, payload: Any, run: RunBatch, *, priority: int = 0,
               deadline: float | None = None) -> Future:
        with self._cv:
            if self._closed:
                raise HeadForgeError("the batcher is shut down", reason="SHUTTING_DOWN")
            if len(self._queue) >= self.max_queue_depth:
                self.stats.rejected += 1
                raise ResourceExhausted(f"guidance queue full ({len(self._queue)} requests waiting); retry with backoff",
                                        reason="QUEUE_FULL", metadata={"queue_depth": str(len(self._queue))})
            now = time.monotonic()
            item = _Item(key, size, priority, deadline, payload, run, next(self._counter), now)
            self._queue.append(item)
            QUEUE_DEPTH.labels(self.name, "batch").set(len(self._queue))
            self._cv.notify_all()
        return item.future

    def withdraw(self, future: Future) -> None:
        """Drop a queued request (its caller gave up); a request already running finishes unobserved."""
        with self._cv:
            self._queue = [i for i in self._queue if i.future is not future]
            QUEUE_DEPTH.labels(self.name, "batch").set(len(self._queue))
        future.cancel()

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._worker.join(timeout=5)

    # -- worker ---------------------------------------------------------------------------------------------
    def _drop_expired(self, now: float) -> None:
        for item in [i for i in self._queue if i.deadline is not None and i.deadline <= now]:
            self._queue.remove(item)
            self.stats.expired += 1
            item.future.set_exception(DeadlineExceeded("deadline passed while queued for the GPU",
                                                       reason="DEADLINE_IN_QUEUE"))

    def _gather(self, head: _Item) -> list[_Item]:
        batch, images = [head], head.size
        for item in sorted(self._queue, key=lambda i: (-i.priority, i.order)):
            if item is not head and item.key == head.key and images + item.size <= self.max_batch_images:
                batch.append(item)
                images += item.size
        return batch

    def _next_batch(self) -> list[_Item] | None:
        with self._cv:
            while True:
                if self._closed:
                    for item in self._queue:
                        item.future.set_exception(HeadForgeError("server shutting down", reason="SHUTTING_DOWN"))
                    self._queue.clear()
                    return None
                self._drop_expired(time.monotonic())
                if not self._queue:
                    self._cv.wait(timeout=0.5)
                    continue
                head = min(self._queue, key=lambda i: (-i.priority, i.order))
                batch = self._gather(head)
                wait = head.enqueued + self.max_queue_delay_s - time.monotonic()
                if sum(i.size for i in batch) >= self.max_batch_images or wait <= 0:
                    for item in batch:
                        self._queue.remove(item)
                    QUEUE_DEPTH.labels(self.name, "batch").set(len(self._queue))
                    return batch
                self._cv.wait(timeout=wait)

    def _loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            live = [i for i in batch if i.future.set_running_or_notify_cancel()]
            if live:
                self._run(live)

    def _run(self, batch: list[_Item], retry: bool = False) -> None:
        if not retry:
            s, images = self.stats, sum(i.size for i in batch)
            s.batches += 1
            s.requests += len(batch)
            s.images += images
            s.largest_batch_requests = max(s.largest_batch_requests, len(batch))
            s.batch_sizes = (s.batch_sizes + [images])[-1000:]
            BATCH_IMAGES.labels(self.name).observe(images)
            BATCH_REQUESTS.labels(self.name).observe(len(batch))
        try:
            results = batch[0].run([i.payload for i in batch])
        except Exception as e:  # noqa: BLE001 - isolate the failing request below
            if len(batch) == 1:
                batch[0].future.set_exception(_as_error(e))
                return
            log.warning("batch of %d failed (%s); re-running its requests one by one", len(batch), e)
            for item in batch:
                self._run([item], retry=True)
            return
        for item, result in zip(batch, results):
            if isinstance(result, BaseException):
                item.future.set_exception(_as_error(result))
            else:
                item.future.set_result(result)


def _as_error(e: BaseException) -> BaseException:
    if isinstance(e, HeadForgeError):
        return e
    log.exception("guidance batch failed", exc_info=e)
    return Internal(f"guidance computation failed: {type(e).__name__}: {e}", reason="BATCH_FAILED")
