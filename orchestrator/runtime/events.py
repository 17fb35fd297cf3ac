"""Applying a running job's events (orchestrator.runtime.execute) to the job store."""

from __future__ import annotations


def apply_event(store, job_id: str, event: dict) -> None:
    kind = event["kind"]
    if kind == "stage":
        store.set_stage_state(job_id, event["stage"], event["state"])
    elif kind == "resumed":
        store.add_resume(job_id, event["stage"])
    elif kind == "progress":
        store.record_progress(job_id, event["progress"])
    elif kind == "artifact":
        store.add_artifact(job_id, event["record"])
    elif kind == "done":
        store.set_job_state(job_id, event["state"], event.get("error_message", ""), event.get("error_reason", ""))
    else:
        raise ValueError(f"unknown event kind {kind!r}")
