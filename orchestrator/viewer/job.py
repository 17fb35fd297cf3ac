"""A job's artifacts in a local cache folder, for `headforge view JOB_ID`: what the page shows (not the
checkpoints), fetched through the jobs client (sha256 checked); files already there with the same sha256
are not fetched again."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from orchestrator.viewer.result import SKIPPED_FOLDERS
from services.common.errors import FailedPrecondition


def default_cache_root() -> Path:
    """$XDG_CACHE_HOME/headforge/view, else ~/.cache/headforge/view."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "headforge" / "view"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fetch_job(client, job_id: str, cache_root: Path) -> tuple[Path, object]:
    """(cache_root/job_id holding the job's viewable artifacts, the JobRecord). FailedPrecondition when the
    job has none yet (queued, or failed before writing any); NotFound etc. from the client as they come."""
    job = client.get(job_id)
    wanted = [a for a in job.artifacts if a.name.split("/", 1)[0] not in SKIPPED_FOLDERS]
    if not wanted:
        raise FailedPrecondition(f"job {job_id} ({job.state}) has no artifacts to view yet", reason="NO_ARTIFACTS")
    folder = Path(cache_root) / job_id
    folder.mkdir(parents=True, exist_ok=True)
    stale = [a.name for a in wanted if not (folder / a.name).is_file() or _sha256(folder / a.name) != a.sha256]
    if stale:
        client.fetch(job_id, stale, folder)
    return folder, job
