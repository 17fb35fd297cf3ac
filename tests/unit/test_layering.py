"""The layering rule (ARCHITECTURE.md, README "Layout"), read from every import statement in the tree,
those inside functions included:

- services/common and services/core import only the generated protos (headforge.*), services.common
  and (core only) services.core;
- a service (services/<name>/) imports those and itself, never another service;
- the orchestrator imports services only through their `client` and `types` modules (plus
  services.common and services.core); the command line (orchestrator/cli/) may also import each
  service's `cli` module, which holds that service's `serve` arguments and model tools.

Third-party imports are not this test's business. A second test runs the checker on a small tree with
a forbidden import, so this test is known to fail when the rule is broken.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("face", "guidance", "inversion", "render")


def _imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file; relative imports resolved against its package;
    `from services.render import client` counts as importing services.render.client."""
    tree = ast.parse(path.read_text(), str(path))
    package = path.relative_to(root).with_suffix("").parts[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *([base] if base else [])])
            for a in node.names:
                out.append((node.lineno, f"{base}.{a.name}" if base.count(".") < 2 else base))
    return out


def _allowed(owner: str, module: str) -> bool:
    """Whether code in `owner` (a path relative to the root, posix) may import `module`."""
    if not module.startswith("services"):
        return True  # protos, orchestrator internals, the standard library and third-party packages
    parts = module.split(".")
    if parts == ["services"]:
        return False
    layer = parts[1]
    if owner.startswith("services/common/"):
        return layer == "common"
    if owner.startswith("services/core/"):
        return layer in ("common", "core")
    if owner.startswith("services/"):
        own = owner.split("/")[1]
        return layer in ("common", "core", own)
    if owner.startswith("orchestrator/"):
        if layer in ("common", "core"):
            return True
        if layer in SERVICES and len(parts) >= 3:
            allowed = {"client", "types"} | ({"cli"} if owner.startswith("orchestrator/cli/") else set())
            return parts[2] in allowed
        return False
    return True


def violations(root: Path) -> list[str]:
    found = []
    for top in ("services", "orchestrator"):
        for path in (root / top).rglob("*.py"):
            owner = path.relative_to(root).as_posix()
            if "_pb2" in owner:
                continue
            found += [f"{owner}:{line} imports {module}" for line, module in _imports(path, root)
                      if not _allowed(owner, module)]
    return sorted(set(found))


def test_no_layering_violations():
    found = violations(ROOT)
    assert not found, "layering violations:\n" + "\n".join(found)


def test_checker_catches_forbidden_imports(tmp_path):
    files = {
        "services/render/service.py": "from services.core import volume\nimport services.render.sessions\n",
        "services/inversion/generators/g.py": "def f():\n    from services.render.representations import fields\n",
        "services/guidance/types.py": "from services.face.types import AnalyzeOptions\n",
        "services/core/cameras.py": "from services.render import sessions\n",
        "orchestrator/stages/optimise.py": "from services.render.types import GradientTerm\n"
                                           "from services.render.service import RenderService\n",
        "orchestrator/cli/serve.py": "from services.render import cli\n",
        "orchestrator/local.py": "from services.render.cli import main\n",
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    found = violations(tmp_path)
    assert found == [
        "orchestrator/local.py:1 imports services.render.cli",
        "orchestrator/stages/optimise.py:2 imports services.render.service",
        "services/core/cameras.py:1 imports services.render.sessions",
        "services/guidance/types.py:1 imports services.face.types",
        "services/inversion/generators/g.py:2 imports services.render.representations",
    ]
