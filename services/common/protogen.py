"""Generate the Python gRPC stubs under protos/ from the .proto files (`make protos`).

`python -m services.common.protogen` writes them in place; `generate(out_dir)` writes them elsewhere so a
test can compare a fresh generation with the committed files.
"""

from __future__ import annotations

import sys
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parents[2] / "protos"
API_DIR = Path("headforge") / "v1"


def proto_files() -> list[Path]:
    """The .proto sources, relative to PROTO_ROOT, sorted."""
    return sorted(p.relative_to(PROTO_ROOT) for p in (PROTO_ROOT / API_DIR).glob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (grpc_tools) over every .proto; returns the generated files, relative to out_dir."""
    from grpc_tools import protoc
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p) for p in proto_files()],
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed: " + " ".join(args))
    return sorted(p.relative_to(out_dir) for p in (out_dir / API_DIR).glob("*_pb2*.py*"))


def main() -> int:
    written = generate(PROTO_ROOT)
    print(f"generated {len(written)} files under {PROTO_ROOT / API_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
