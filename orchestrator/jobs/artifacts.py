"""Artifact files: `<root>/<job_id>/<name>` on the local filesystem or any fsspec URL (file://, s3://,
gs://, memory:// in tests).

Writes are atomic: the bytes go to a temporary name under `<root>/.partial/` first and are moved into
place once complete, so a reader never sees half an artifact. The job store records an artifact (and
the jobs service serves it) only after write() returned its ArtifactRecord.
"""

from __future__ import annotations

import hashlib
import mimetypes
import posixpath
import secrets
import time
from pathlib import Path

import fsspec

from orchestrator.jobs.types import ArtifactRecord
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, quoted

_MIME = {
    ".glb": "model/gltf-binary", ".gltf": "model/gltf+json", ".obj": "model/obj", ".mtl": "model/mtl",
    ".ply": "application/ply", ".npz": "application/octet-stream", ".npy": "application/octet-stream",
    ".json": "application/json", ".yaml": "application/yaml", ".yml": "application/yaml",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
    ".mp4": "video/mp4", ".zip": "application/zip", ".txt": "text/plain", ".csv": "text/csv",
    ".ckpt": "application/octet-stream", ".pt": "application/octet-stream",
    ".safetensors": "application/octet-stream",
}
MAX_NAME_CHARS = 512
_COPY_CHUNK = 1 << 20


def mime_type_of(name: str) -> str:
    ext = posixpath.splitext(name)[1].lower()
    return _MIME.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def validate_name(name: str, field: str = "name") -> str:
    """An artifact name: a relative path with "/" separators, no "." or ".." parts, no empty parts."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(field, "artifact name is empty", reason="BAD_ARTIFACT_NAME")
    if len(name) > MAX_NAME_CHARS:
        raise InvalidArgument(field, f"artifact name longer than {MAX_NAME_CHARS} characters",
                              reason="BAD_ARTIFACT_NAME")
    if name.startswith("/"):
        raise InvalidArgument(field, f"{name!r}: must be relative (no leading '/')", reason="BAD_ARTIFACT_NAME")
    if "\\" in name or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidArgument(field, f"{name!r}: use '/' separators and printable characters only",
                              reason="BAD_ARTIFACT_NAME")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise InvalidArgument(field, f"{name!r}: empty, '.' or '..' path parts are not allowed",
                                  reason="BAD_ARTIFACT_NAME")
    return name


def _validate_job_id(job_id: str) -> str:
    if not job_id or "/" in job_id or "\\" in job_id or job_id in (".", "..") or job_id.startswith("."):
        raise InvalidArgument("job_id", f"{quoted(job_id)} is not a job id")
    return job_id


class ArtifactStore:
    """Artifacts of every job under one root (a path or fsspec URL)."""

    def __init__(self, root_url: str, **storage_options):
        self.root_url = str(root_url)
        try:
            self.fs, root = fsspec.core.url_to_fs(self.root_url, **storage_options)
        except ImportError as e:   # fsspec names the missing package, e.g. s3fs for s3://
            raise FailedPrecondition(f"artifact root {self.root_url}: {e}. For s3:// install the s3 extra "
                                     "(pip install 'headforge[s3]'); for another scheme, the package named here",
                                     reason="FSSPEC_BACKEND_MISSING") from None
        self.root = root.rstrip("/") or "/"
        self.fs.makedirs(self.root, exist_ok=True)

    def path(self, job_id: str, name: str) -> str:
        return f"{self.root}/{_validate_job_id(job_id)}/{validate_name(name)}"

    def _partial(self, job_id: str, name: str) -> str:
        tmp_dir = f"{self.root}/.partial"
        self.fs.makedirs(tmp_dir, exist_ok=True)
        return f"{tmp_dir}/{job_id}-{secrets.token_hex(8)}-{posixpath.basename(name)}"

    def _commit(self, tmp: str, final: str) -> None:
        self.fs.makedirs(posixpath.dirname(final), exist_ok=True)
        self.fs.mv(tmp, final)

    def write(self, job_id: str, name: str, data: bytes, stage: str, mime_type: str | None = None) -> ArtifactRecord:
        """Write (or replace) an artifact atomically; its record for JobStore.add_artifact."""
        final = self.path(job_id, name)
        data = bytes(data)
        tmp = self._partial(job_id, name)
        try:
            self.fs.pipe_file(tmp, data)
            self._commit(tmp, final)
        except BaseException:
            self._discard(tmp)
            raise
        return ArtifactRecord(name=name, size_bytes=len(data), mime_type=mime_type or mime_type_of(name),
                              sha256=hashlib.sha256(data).hexdigest(), stage=stage, created_at=time.time())

    def write_file(self, job_id: str, name: str, path: str | Path, stage: str,
                   mime_type: str | None = None) -> ArtifactRecord:
        """Copy a local file in as an artifact (streamed, hashed on the way), atomically."""
        final = self.path(job_id, name)
        tmp = self._partial(job_id, name)
        digest, size = hashlib.sha256(), 0
        try:
            with open(path, "rb") as src, self.fs.open(tmp, "wb") as dst:
                while chunk := src.read(_COPY_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    dst.write(chunk)
            self._commit(tmp, final)
        except BaseException:
            self._discard(tmp)
            raise
        return ArtifactRecord(name=name, size_bytes=size, mime_type=mime_type or mime_type_of(name),
                              sha256=digest.hexdigest(), stage=stage, created_at=time.time())

    def _discard(self, tmp: str) -> None:
        try:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
        except OSError:
            pass

    def exists(self, job_id: str, name: str) -> bool:
        return self.fs.isfile(self.path(job_id, name))

    def size(self, job_id: str, name: str) -> int:
        path = self.path(job_id, name)
        try:
            return int(self.fs.size(path))
        except FileNotFoundError:
            raise NotFound(f"job {quoted(job_id)} has no artifact {name!r}", reason="ARTIFACT_NOT_FOUND") from None

    def read(self, job_id: str, name: str, offset: int = 0, length: int = -1) -> bytes:
        """Bytes [offset, offset + length) of an artifact (to the end when length < 0)."""
        path = self.path(job_id, name)
        if offset < 0:
            raise InvalidArgument("offset", f"must be >= 0, got {offset}")
        try:
            with self.fs.open(path, "rb") as f:
                if offset:
                    f.seek(offset)
                return f.read() if length < 0 else f.read(length)
        except FileNotFoundError:
            raise NotFound(f"job {quoted(job_id)} has no artifact {name!r}", reason="ARTIFACT_NOT_FOUND") from None

    def delete_job(self, job_id: str) -> None:
        """Remove every artifact of a job (retention)."""
        path = f"{self.root}/{_validate_job_id(job_id)}"
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)
