"""The package's layering, read from its source: no import cycle anywhere in gateway/, and nothing the
HTTP server reaches (the request path) imports the launcher, the control plane, the CLI or the composition
root. Every import counts: at module level, inside functions, and under `TYPE_CHECKING`."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "gateway"
ABOVE_THE_REQUEST_PATH = ("gateway.launch", "gateway.control", "gateway.cli", "gateway.app")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each gateway module -> the gateway modules it imports (a `from X import name` counts `X.name` when
    that is a module, else `X`)."""
    modules = {
        module_name(path): path
        for path in PACKAGE.rglob("*.py")
        if "_proto" not in path.relative_to(ROOT).parts
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                found.update(
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                )
        graph[name] = {imported for imported in found if imported in modules and imported != name}
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for imported in graph[todo.pop()]:
            if imported not in seen:
                seen.add(imported)
                todo.append(imported)
    return seen


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert {"gateway.frontdoor", "gateway.cycle"} <= graph["gateway.server"]
    assert "gateway.launch.deployment" in reachable(graph, "gateway.cli")


def test_no_import_cycle_in_the_package() -> None:
    graph = import_graph()
    cycles = sorted(
        (name, imported) for name in graph for imported in graph[name] if name in reachable(graph, imported)
    )
    assert cycles == [], f"modules that import each other, directly or through others: {cycles}"


def test_nothing_on_the_request_path_imports_what_sits_above_it() -> None:
    graph = import_graph()
    request_path = reachable(graph, "gateway.server")
    assert {"gateway.frontdoor", "gateway.cycle", "gateway.upstream", "gateway.backends.http"} <= request_path
    above = sorted(name for name in request_path if name.startswith(ABOVE_THE_REQUEST_PATH))
    assert above == [], f"the request path reaches {above}"
