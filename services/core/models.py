"""What a loaded model is, as every service reports it (Describe, report.json): role, backend, name and
a hash of its weights files, and where the weights come from (provenance).

Provenance: "" = real weights as configured; TEST_PRIOR = a closed-form test prior (the analytic guidance
backbone); RANDOM_WEIGHTS = random-initialised models such as `headforge models make-tiny` writes. The
tiny-model writers leave a RANDOM_WEIGHTS_MARKER file in every model folder they write
(mark_random_weights); the ordinary loaders read it (folder_provenance), so a tiny model is reported as such
whoever loads it. Formats with per-file metadata carry it there instead (ONNX metadata_props: PROVENANCE_KEY =
RANDOM_WEIGHTS, as the tiny InsightFace pack does). Output of a model with a provenance shows that the pipeline
runs, never a result."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

HASH_CHARS = 16  # hex characters of the SHA-256 that model records carry
TEST_PRIOR = "test_prior"
RANDOM_WEIGHTS = "random_weights"
PROVENANCES = ("", TEST_PRIOR, RANDOM_WEIGHTS)
RANDOM_WEIGHTS_MARKER = "HEADFORGE_RANDOM_WEIGHTS"
PROVENANCE_KEY = "headforge_provenance"   # the key in a weights file's own metadata (ONNX metadata_props)


@dataclass
class ModelRecord:
    """role: what the model does ("recognizer", "unet", "generator"); backend: what runs it; name: the
    file or folder it came from; sha256: the first HASH_CHARS hex of its weights' SHA-256, "" if unknown;
    provenance: one of PROVENANCES ("" = real weights as configured); license: the weights' licence as the
    backend knows it ("" = not stated; informational, e.g. "MIT" or "non-commercial research only")."""

    role: str
    backend: str
    name: str
    sha256: str = ""
    provenance: str = ""
    license: str = ""


def mark_random_weights(folder: str | Path, written_by: str) -> Path:
    """Write RANDOM_WEIGHTS_MARKER into `folder` (a model folder whose weights are random); returns its path."""
    path = Path(folder) / RANDOM_WEIGHTS_MARKER
    path.write_text(f"The weights in this folder are random (written by {written_by}); their outputs mean "
                    "nothing. HeadForge reports every model loaded from here as provenance random_weights.\n")
    return path


def folder_provenance(*folders: str | Path) -> str:
    """RANDOM_WEIGHTS when any of the folders holds RANDOM_WEIGHTS_MARKER, else "" (pass a weights file's
    folder, and the model root for a component inside one)."""
    return RANDOM_WEIGHTS if any((Path(f) / RANDOM_WEIGHTS_MARKER).is_file() for f in folders) else ""


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
