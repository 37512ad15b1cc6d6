"""The package's layers, as docs/architecture.md describes them: imports point down, never in a circle, and
no module grows past a screenful of screens."""

from __future__ import annotations

import ast
import functools
import importlib
from pathlib import Path

import pytest

from helpers.commands import REPO

PACKAGE = REPO / "mnist_lightning"
# the layers, bottom first; a module may import its own subpackage and any lower layer, never a higher one
# (models and data are side by side: neither imports the other)
LAYERS = {
    "errors": 0, "schema": 0, "compat": 0, "legacy": 0, "run_layout": 0,
    "run_states": 0,
    "models": 1, "data": 1,
    "checkpointing": 2,
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


# Lightning's loops are private classes (``_FitLoop``, ...) behind public attribute names
LIBRARY_INTERNALS = {"fit_loop", "validate_loop", "test_loop", "predict_loop"}
MODULE_SOURCES = ("pl_module", "lightning_module")  # how a callback names the model it is handed
DATA_SOURCES = ("datamodule",)


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@functools.cache
def own_private_names() -> frozenset[str]:
    """The private names the project defines itself (outside ``compat.py``): functions, classes, variables,
    attributes it assigns, arguments."""
    own = set()
    for name, path in MODULES.items():
        if name == "mnist_lightning.compat":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                own.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                own.add(node.attr)
            elif isinstance(node, ast.arg):
                own.add(node.arg)
    return frozenset(name for name in own if is_private(name))


def library_privates_used(source: str, own: frozenset[str]) -> list[str]:
    """Where ``source`` reaches into a library: an attribute ``x._name`` the project does not define, one of
    Lightning's loops, a private module or name imported, or a method that overrides a private one of a
    library class (a class's private method is looked up on its bases when the module is imported)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and (
            (is_private(node.attr) and node.attr not in own) or node.attr in LIBRARY_INTERNALS
        ):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "__future__" or node.module.startswith("mnist_lightning"):
                continue
            if any(map(is_private, node.module.split("."))) or any(is_private(a.name) for a in node.names):
                found.append(f"{node.lineno}: from {node.module} import ...")
    return found


def imported_names(tree: ast.Module) -> dict[str, str]:
    """What each name a module imports at its top stands for: ``L`` -> ``lightning``, ``Checkpoint`` ->
    ``lightning.pytorch.callbacks.Checkpoint``."""
    names = {}
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(
                {
                    a.asname or a.name.split(".")[0]: a.name if a.asname else a.name.split(".")[0]
                    for a in node.names
                }
            )
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    return names


def library_bases(tree: ast.Module, node: ast.ClassDef) -> list[type]:
    """The library classes a class of module ``tree`` derives from, found without importing the project's
    modules (only the library's): through the names its module imports, and the project's classes between."""
    names = imported_names(tree)
    local = {item.name: item for item in tree.body if isinstance(item, ast.ClassDef)}
    bases = []
    for base in map(ast.unparse, node.bases):
        head, _, rest = base.partition(".")
        if head in local:
            bases += library_bases(tree, local[head])
            continue
        owner, _, name = (names.get(head, head) + (f".{rest}" if rest else "")).rpartition(".")
        if owner in MODULES:
            owner_tree = ast.parse(MODULES[owner].read_text())
            bases += library_bases(
                owner_tree, next(c for c in owner_tree.body if getattr(c, "name", "") == name)
            )
        elif owner:
            bases.append(getattr(importlib.import_module(owner), name))
    return bases


def private_overrides(source: str) -> list[str]:
    """Methods of the classes of ``source`` that replace a private method of a library base class."""
    tree = ast.parse(source)
    overrides = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        methods = [
            item.name for item in node.body if isinstance(item, ast.FunctionDef) and is_private(item.name)
        ]
        if not methods:
            continue
        for base in library_bases(tree, node):
            overrides += [
                f"{node.lineno}: {node.name}.{method} overrides {base.__qualname__}.{method}"
                for method in methods
                if any(method in vars(cls) for cls in base.__mro__)
            ]
    return overrides


def test_only_compat_reaches_into_a_librarys_private_attributes():
    own = own_private_names()
    found = []
    for name, path in MODULES.items():
        if name != "mnist_lightning.compat":
            source = path.read_text()
            hits = library_privates_used(source, own) + private_overrides(source)
            found += [f"{name}:{hit}" for hit in hits]
    assert not found, "go through a function in mnist_lightning/compat.py:\n" + "\n".join(found)


def test_the_compat_check_finds_an_override_of_a_library_private_method():
    source = (
        "from mnist_lightning.cli.lightning_cli import MNISTLightningCLI\n\n\n"
        "class Probe(MNISTLightningCLI):\n    def _run_subcommand(self, subcommand):\n        pass\n\n"
        "    def _own(self):\n        pass\n"
    )
    assert private_overrides(source) == ["4: Probe._run_subcommand overrides LightningCLI._run_subcommand"]


@pytest.mark.parametrize(
    "source",
    [
        "def on_save_checkpoint(self, checkpoint):\n    return self._trainer",
        "def count(trainer):\n    return trainer.fit_loop.epoch_loop.batch_progress.current.completed",
        "from lightning.pytorch.utilities._pytree import tree_flatten",
    ],
)
def test_the_compat_check_finds_a_private_access(source):
    assert len(library_privates_used(source, own_private_names())) == 1


def attributes_read_of(tree: ast.AST, sources: tuple[str, ...]) -> set[str]:
    """The attributes a module reads of an object it names one of ``sources`` (``pl_module``,
    ``trainer.datamodule``, a local variable assigned from one of them), also through ``getattr(x, "a")``."""

    def names_source(node: ast.AST) -> bool:
        return (isinstance(node, ast.Name) and node.id in aliases) or (
            isinstance(node, ast.Attribute) and node.attr in sources
        )

    aliases = set(sources)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and names_source(node.value):
            aliases.update(target.id for target in node.targets if isinstance(target, ast.Name))
    read = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and names_source(node.value):
            read.add(node.attr)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr":
            if len(node.args) >= 2 and names_source(node.args[0]) and isinstance(node.args[1], ast.Constant):
                read.add(node.args[1].value)
    return read


CALLBACKS = {name: path for name, path in MODULES.items() if name.startswith("mnist_lightning.callbacks.")}


@pytest.mark.parametrize("module", sorted(CALLBACKS))
def test_callbacks_read_only_what_the_protocols_declare_of_the_model_and_data(module):
    """Beyond what every LightningModule and LightningDataModule has, a callback reads of the model and the
    data module only the members of ``callbacks/protocols.py``: so it works with any model."""
    import lightning as L

    from mnist_lightning.callbacks.protocols import DATA_ATTRIBUTES, MODEL_ATTRIBUTES

    tree = ast.parse(CALLBACKS[module].read_text())
    model = {a for a in attributes_read_of(tree, MODULE_SOURCES) if not hasattr(L.LightningModule, a)}
    data = {a for a in attributes_read_of(tree, DATA_SOURCES) if not hasattr(L.LightningDataModule, a)}
    assert model <= MODEL_ATTRIBUTES, f"declare in ReportedModel or do not read: {model - MODEL_ATTRIBUTES}"
    assert data <= DATA_ATTRIBUTES, f"declare in ReportedData or do not read: {data - DATA_ATTRIBUTES}"


def test_the_protocol_check_finds_an_undeclared_attribute():
    source = "def hook(trainer, pl_module):\n    dm = trainer.datamodule\n    return pl_module.net, dm.mean"
    tree = ast.parse(source)
    assert attributes_read_of(tree, MODULE_SOURCES) == {"net"}
    assert attributes_read_of(tree, DATA_SOURCES) == {"mean"}
