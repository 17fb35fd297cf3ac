"""The artifact store on the local filesystem and on fsspec's memory:// filesystem: atomic writes, ranged
reads, name validation, streamed file copies and deleting a job's artifacts."""

from __future__ import annotations

import hashlib
import uuid

import pytest

from orchestrator.jobs.artifacts import ArtifactStore, mime_type_of, validate_name
from services.common.errors import InvalidArgument, NotFound

DATA = bytes(range(256)) * 40


@pytest.fixture(params=["file", "memory"])
def arts(request, tmp_path):
    if request.param == "file":
        return ArtifactStore(str(tmp_path / "artifacts"))
    return ArtifactStore(f"memory://headforge-test-{uuid.uuid4().hex}")


def test_write_read_offsets_and_records(arts):
    rec = arts.write("job1", "export/head.ply", DATA, stage="export")
    assert rec.name == "export/head.ply" and rec.size_bytes == len(DATA) and rec.stage == "export"
    assert rec.sha256 == hashlib.sha256(DATA).hexdigest() and rec.mime_type == "application/ply" and rec.created_at
    assert arts.exists("job1", "export/head.ply") and not arts.exists("job1", "export/other.ply")
    assert arts.size("job1", "export/head.ply") == len(DATA)
    assert arts.read("job1", "export/head.ply") == DATA
    assert arts.read("job1", "export/head.ply", offset=1000, length=17) == DATA[1000:1017]
    assert arts.read("job1", "export/head.ply", offset=len(DATA) - 5) == DATA[-5:]
    assert arts.read("job1", "export/head.ply", offset=len(DATA)) == b""
    assert arts.write("job1", "export/head.ply", b"v2", stage="export").size_bytes == 2   # replaced
    assert arts.read("job1", "export/head.ply") == b"v2"
    assert arts.write("job1", "m.bin", b"", stage="s", mime_type="x/y").mime_type == "x/y"
    with pytest.raises(NotFound):
        arts.read("job1", "missing.png")
    with pytest.raises(NotFound):
        arts.size("job2", "export/head.ply")


def test_write_file_streams_and_hashes(arts, tmp_path):
    src = tmp_path / "big.glb"
    src.write_bytes(DATA * 300)       # ~3 MB: several copy chunks
    rec = arts.write_file("job1", "export/head.glb", src, stage="export")
    assert rec.size_bytes == len(DATA) * 300 and rec.sha256 == hashlib.sha256(DATA * 300).hexdigest()
    assert rec.mime_type == "model/gltf-binary" and arts.read("job1", "export/head.glb", 5, 3) == (DATA * 300)[5:8]


def test_failed_write_leaves_nothing_visible(arts, monkeypatch):
    arts.write("job1", "a.json", b"{}", stage="s")

    def broken_mv(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(arts.fs, "mv", broken_mv)
    with pytest.raises(OSError):
        arts.write("job1", "b.json", b'{"x": 1}', stage="s")
    with pytest.raises(OSError):
        arts.write("job1", "a.json", b"new", stage="s")
    assert not arts.exists("job1", "b.json") and arts.read("job1", "a.json") == b"{}"   # old content intact
    assert arts.fs.ls(f"{arts.root}/.partial", detail=False) == []                      # temp files removed


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "a/./b", "a\\b", "a/", ".",
                                  "x\x00y", "x" * 600])
def test_bad_names_are_invalid_argument(arts, name):
    with pytest.raises(InvalidArgument):
        arts.write("job1", name, b"x", stage="s")
    with pytest.raises(InvalidArgument):
        validate_name(name)


def test_bad_job_ids_and_delete_job(arts):
    for job_id in ("", "..", "a/b", ".partial"):
        with pytest.raises(InvalidArgument):
            arts.write(job_id, "a.png", b"x", stage="s")
    arts.write("job1", "a/b/c.png", b"x", stage="s")
    arts.write("job2", "c.png", b"y", stage="s")
    arts.delete_job("job1")
    arts.delete_job("never-written")
    assert not arts.exists("job1", "a/b/c.png") and arts.read("job2", "c.png") == b"y"


def test_mime_types():
    assert mime_type_of("eval/front.png") == "image/png" and mime_type_of("metrics.json") == "application/json"
    assert mime_type_of("export/head.glb") == "model/gltf-binary" and mime_type_of("x.unknownext") == \
        "application/octet-stream"
