"""The package's layers, as docs/architecture.md describes them: imports point down, never in a circle, and
no module grows past a screenful of screens."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers.commands import REPO

PACKAGE = REPO / "mnist_lightning"
# the layers, bottom first; a module may import its own subpackage and any lower layer, never a higher one
# (models and data are side by side: neither imports the other)
LAYERS = {
    "errors": 0, "schema": 0, "compat": 0, "legacy": 0, "run_layout": 0,
    "models": 1, "data": 1,
    "training": 2,
    "callbacks": 3,
    "cli": 4,
    "tools": 5,
}  # fmt: skip
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path) -> set[str]:
    """Every ``mnist_lightning`` module a file imports, at its top or inside a function (``from package
    import module`` counts as importing that module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "mnist_lightning":
                continue
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in MODULES else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("mnist_lightning."))
    return found


def layer_of(module: str) -> tuple[str, int] | None:
    part = module.split(".")[1] if "." in module else ""
    return (part, LAYERS[part]) if part in LAYERS else None


@pytest.mark.parametrize("module", [name for name in MODULES if layer_of(name)])
def test_imports_point_down_the_layers(module):
    own, rank = layer_of(module)
    upward = []
    for imported in imports_of(MODULES[module]):
        target = layer_of(imported)
        if target is not None and target[0] != own and target[1] >= rank:
            upward.append(imported)
    assert not upward, f"{module} (layer {own}) imports {upward}, which are not below it"


def test_no_import_cycle():
    graph = {
        name: {imported for imported in imports_of(path) if imported in MODULES}
        for name, path in MODULES.items()
    }
    done, path = set(), []

    def visit(name: str) -> None:
        if name in path:
            cycle = path[path.index(name) :] + [name]
            pytest.fail(f"import cycle: {' -> '.join(cycle)}")
        if name in done:
            return
        path.append(name)
        for imported in graph[name]:
            visit(imported)
        path.pop()
        done.add(name)

    for name in graph:
        visit(name)


def test_every_module_belongs_to_a_layer():
    loose = [name for name in MODULES if layer_of(name) is None and name.count(".") > 0]
    assert sorted(loose) == ["mnist_lightning.__main__"], "each module lives in a layer's package"


def test_no_module_is_over_400_lines():
    long = {
        name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules by concern: {long}"
