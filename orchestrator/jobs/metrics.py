"""Prometheus metrics of the jobs process (served on `headforge serve jobs --metrics-port`).

Gauges are read from the store at scrape time, so they count what every process wrote (the jobs process,
Ray actors' events relayed through it, another jobs replica on the same database):
  headforge_jobs{state, tenant}                 jobs by state
  headforge_jobs_oldest_queued_age_seconds       how long the oldest QUEUED job has waited (0: none)
Histograms are observed by the store where the transitions happen (in the process that makes them):
  headforge_job_queue_wait_seconds{recipe}       submission -> first start
  headforge_job_duration_seconds{recipe, state}  submission -> terminal state (SUCCEEDED/FAILED/CANCELLED)
  headforge_stage_duration_seconds{stage, state} a stage's first start -> its terminal state (resumes included)
"""

from __future__ import annotations

import threading
import time

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

JOB_QUEUE_WAIT = Histogram("headforge_job_queue_wait_seconds", "Time from submission to a job's first start",
                           ["recipe"], buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600))
JOB_DURATION = Histogram("headforge_job_duration_seconds", "Time from submission to a terminal state",
                         ["recipe", "state"], buckets=(10, 30, 60, 300, 900, 1800, 3600, 2 * 3600, 6 * 3600,
                                                       24 * 3600))
STAGE_DURATION = Histogram("headforge_stage_duration_seconds",
                           "Time from a stage's first start to its terminal state (resumes included)",
                           ["stage", "state"], buckets=(0.1, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600))


class _StoreCollector(Collector):
    """The gauges above, from the store this process serves (one per process: the last one bound)."""

    def __init__(self):
        self.store = None

    def collect(self):
        store = self.store
        if store is None:
            return
        counts, oldest_queued = store.state_summary()
        jobs = GaugeMetricFamily("headforge_jobs", "Jobs in the store by state and tenant", labels=["state", "tenant"])
        for (state, tenant), n in sorted(counts.items()):
            jobs.add_metric([state, tenant], n)
        yield jobs
        age = max(0.0, time.time() - oldest_queued) if oldest_queued is not None else 0.0
        yield GaugeMetricFamily("headforge_jobs_oldest_queued_age_seconds",
                                "How long the oldest QUEUED job has waited (0 when none is queued)", value=age)


_COLLECTOR = _StoreCollector()
_REGISTERED = threading.Lock()
_registered = False


def export_store_gauges(store) -> None:
    """Serve headforge_jobs and headforge_jobs_oldest_queued_age_seconds from `store` (a JobStore) on this
    process's /metrics."""
    global _registered
    with _REGISTERED:
        if not _registered:
            REGISTRY.register(_COLLECTOR)
            _registered = True
        _COLLECTOR.store = store
