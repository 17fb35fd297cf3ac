"""What a loaded model is, as every service reports it (Describe, report.json): role, backend, name and
a hash of its weights files."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

HASH_CHARS = 16  # hex characters of the SHA-256 that model records carry


@dataclass
class ModelRecord:
    """role: what the model does ("recognizer", "unet", "generator"); backend: what runs it; name: the
    file or folder it came from; sha256: the first HASH_CHARS hex of its weights' SHA-256, "" if unknown."""

    role: str
    backend: str
    name: str
    sha256: str = ""


def file_sha256(*paths: str | Path) -> str:
    """First HASH_CHARS hex of the SHA-256 of the files' bytes, concatenated in the given order. Cached
    per (path, size, mtime): a model folder is hashed once per process, and again when a file changes."""
    resolved = tuple(str(Path(p).resolve()) for p in paths)
    stamps = tuple((s.st_size, s.st_mtime_ns) for s in map(os.stat, resolved))
    return _hash_files(resolved, stamps)


@lru_cache(maxsize=None)
def _hash_files(paths: tuple[str, ...], stamps: tuple[tuple[int, int], ...]) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:HASH_CHARS]
