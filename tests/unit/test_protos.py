"""The committed stubs match the .proto files (stale stubs fail CI), and the API keeps its conventions."""

from __future__ import annotations

from services.common import protogen


def test_generated_stubs_are_fresh(tmp_path):
    written = protogen.generate(tmp_path)
    assert written, "no stubs generated"
    stale = [str(p) for p in written
             if (protogen.PROTO_ROOT / p).read_bytes() != (tmp_path / p).read_bytes()]
    missing = [str(p) for p in written if not (protogen.PROTO_ROOT / p).exists()]
    assert not missing and not stale, f"run `make protos`: stale {stale}, missing {missing}"
    committed = sorted((protogen.PROTO_ROOT / protogen.API_DIR).glob("*_pb2*.py*"))
    extra = {p.relative_to(protogen.PROTO_ROOT) for p in committed} - set(written)
    assert not extra, f"stubs without a .proto: {extra}"


def test_every_service_is_in_the_api():
    from headforge.v1 import face_pb2, guidance_pb2, inversion_pb2, jobs_pb2, render_pb2

    services = {s.full_name for mod in (face_pb2, guidance_pb2, inversion_pb2, jobs_pb2, render_pb2)
                for s in mod.DESCRIPTOR.services_by_name.values()}
    assert services == {"headforge.v1.FaceService", "headforge.v1.GuidanceService",
                        "headforge.v1.InversionService", "headforge.v1.RenderService", "headforge.v1.JobsService"}
    for mod in (face_pb2, guidance_pb2, inversion_pb2, jobs_pb2, render_pb2):
        for service in mod.DESCRIPTOR.services_by_name.values():
            assert any(m.name.endswith("Describe") for m in service.methods), service.full_name
