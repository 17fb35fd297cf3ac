"""The exact pins outside requirements.lock agree with it: the GPU kit's wheel list (tests/gpu) installs the
versions the suite is tested with, and the exact pins in pyproject's extras match the lock."""

from __future__ import annotations

import re
import tomllib

from services.common.process import ROOT


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;#]+)\s*(#.*)?", line)
        if m:
            out[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return out


def test_gpu_kit_and_extras_pin_the_locked_versions():
    lock = _pins((ROOT / "requirements.lock").read_text().splitlines())
    kit = _pins((ROOT / "tests" / "gpu" / "requirements.txt").read_text().splitlines())
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    exact = _pins(req for reqs in extras.values() for req in reqs)
    assert {"gsplat", "diffusers", "pydantic", "protobuf", "grpcio"} <= set(kit)
    for where, pins in (("tests/gpu/requirements.txt", kit), ("pyproject.toml extras", exact)):
        for name, version in pins.items():
            if name in lock:
                assert version == lock[name], f"{name}: {version} in {where}, {lock[name]} in requirements.lock"
    assert lock["torch"] == "2.13.0"
