"""The tree is the architecture: which folder may import which, and no import cycles.

Parsed from the source (no imports run), so a new module that breaks a rule fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# What each layer must not import (module prefixes). The engine and storage know nothing of
# HTTP or of the API; the core knows nothing of the server, the web or metrics.
FORBIDDEN = {
    "packcache_core": ("server", "fastapi", "starlette", "pydantic", "prometheus_client"),
    "server.engine": ("server.api", "server.entry", "server.storage", "fastapi", "starlette"),
    "server.storage": ("server.api", "server.entry", "fastapi", "starlette"),
    "server.errors": ("fastapi", "starlette", "server"),
}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    paths = [*ROOT.glob("server/**/*.py"), *ROOT.glob("packcache_core/**/*.py")]
    return {_module(p): _imports(p) for p in paths}


def test_layers_import_only_downward() -> None:
    broken = [
        f"{module} imports {name}"
        for module, names in _graph().items()
        for layer, banned in FORBIDDEN.items()
        if module == layer or module.startswith(layer + ".")
        for name in names
        if any(name == b or name.startswith(b + ".") for b in banned)
    ]
    assert not broken, broken


def test_no_import_cycles() -> None:
    graph = _graph()
    edges = {m: {n for n in names if n in graph and n != m} for m, names in graph.items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> list[str] | None:
        state[module] = 1
        for nxt in sorted(edges[module]):
            if state.get(nxt) == 1:
                return [*path, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[module] = 2
        return None

    for module in sorted(edges):
        if module not in state:
            cycle = visit(module, [module])
            assert cycle is None, " -> ".join(cycle)


def test_every_server_folder_is_a_package() -> None:
    folders = {p.parent for p in ROOT.glob("server/**/*.py")}
    assert all((f / "__init__.py").exists() for f in folders), folders
