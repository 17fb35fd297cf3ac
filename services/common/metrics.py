"""Prometheus metrics shared by every service (served on --metrics-port when given)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RPC_CALLS = Counter("headforge_rpc_calls_total", "RPCs handled, by final status code",
                    ["service", "method", "code"])
RPC_ERRORS = Counter("headforge_rpc_errors_total", "RPCs that ended with a non-OK status",
                     ["service", "method", "code"])
RPC_LATENCY = Histogram("headforge_rpc_latency_seconds", "Handler time per RPC", ["service", "method"],
                        buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
RPC_IN_FLIGHT = Gauge("headforge_rpc_in_flight", "RPCs admitted and not finished", ["service", "method"])
QUEUE_DEPTH = Gauge("headforge_queue_depth",
                    "Work items waiting in a service queue (requests waiting for a worker or a batch)",
                    ["service", "queue"])
BATCH_IMAGES = Histogram("headforge_batch_images", "Images per executed batch (dynamic batching)", ["service"],
                         buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64))
BATCH_REQUESTS = Histogram("headforge_batch_requests", "Requests (callers) per executed batch", ["service"],
                           buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32))
RENDER_SCENES = Gauge("headforge_render_scenes", "Open scene sessions in the render service (all tenants)")
