"""No import cycle between orchestrator modules, read from every import statement (those inside
functions included, as tests/unit/test_layering.py reads them). An edge goes to the module named:
`from orchestrator.a import b` is an edge to orchestrator.a.b when that is a module, else to
orchestrator.a, and to the packages it runs on the way (orchestrator/a/__init__.py). A second test runs the checker on a small tree with a cycle, so it is known to fail."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, top: str = "orchestrator") -> dict[str, set[str]]:
    """module -> the `top` modules it imports."""
    paths = {_module_name(p, root): p for p in (root / top).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*pkg, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            else:
                continue
            # importing a.b.c runs the __init__ of a and a.b first: edges to those packages too (but not
            # to this module's own packages, which are already being imported)
            own = {".".join(name.split(".")[:k]) for k in range(1, name.count(".") + 2)}
            parents = {".".join(t.split(".")[:k]) for t in targets for k in range(1, t.count(".") + 1)}
            edges |= {t for t in {*targets, *parents} if t in paths and t not in own}
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle_inside_the_orchestrator():
    assert cycles(import_graph(ROOT)) == []


def test_the_checker_finds_a_cycle(tmp_path):
    pkg = tmp_path / "orchestrator"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from orchestrator.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\n")
    (pkg / "c.py").write_text("import orchestrator.a\n")
    assert cycles(import_graph(tmp_path)) == [["orchestrator.a", "orchestrator.sub.b"]]
