"""Module paths of earlier releases, kept importable (deprecated) so their checkpoints and configs still load.

Checkpoints record the class paths of their model and network (``mnist_lightning.model.MNISTClassifier``,
``mnist_lightning.nets.MLP``) and saved ``config.yaml`` files name the class paths of their callbacks. When
the package was laid out in layers those modules moved. Importing an old path gives an alias module whose
attributes are those of the module that now holds the classes (the same class objects), with a
``DeprecationWarning`` that names ``python -m mnist_lightning upgrade``, which rewrites such a file to today's
paths (``tools/upgrade.py``). The module that moved is left as it is: its ``__spec__`` stays its own, so
``importlib.reload`` of it still works. (``mnist_lightning.data.MNISTDataModule`` needs no entry: ``data`` is
now the data layer's package and names it.) Installed by ``mnist_lightning/__init__.py``; nothing is imported
until asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import re
import sys
import warnings

# module of the flat layout (before the package was laid out in layers) -> module that holds its classes now
MOVED = {
    "mnist_lightning.model": "mnist_lightning.models.classifier",
    "mnist_lightning.nets": "mnist_lightning.models.nets",
    "mnist_lightning.metrics": "mnist_lightning.models.metrics",
    "mnist_lightning.datasets": "mnist_lightning.data.datasets",
    "mnist_lightning.augment": "mnist_lightning.data.augment",
    "mnist_lightning.quiet": "mnist_lightning.callbacks.progress",
    "mnist_lightning.fault_tolerance": "mnist_lightning.callbacks.interrupt",
    "mnist_lightning.run_folder": "mnist_lightning.callbacks.run_folder",
}
# an old module's name where it stands as a whole dotted name, alone or before ".ClassName"
_OLD_NAME = re.compile(
    r"(?<![\w.])(?P<module>" + "|".join(map(re.escape, MOVED)) + r")(?P<name>\.\w+)?(?!\w)"
)
UPGRADE_HINT = "python -m mnist_lightning upgrade FILE"


def current_class_path(class_path: str) -> str:
    """A class path of the flat layout as it is now (``mnist_lightning.nets.MLP`` ->
    ``mnist_lightning.models.nets.MLP``); any other class path as it is."""
    module, _, name = class_path.rpartition(".")
    return f"{MOVED[module]}.{name}" if module in MOVED else class_path


def with_current_paths(text: str) -> str:
    """``text`` with every old module path in it (alone or in a class path) replaced by today's."""
    return _OLD_NAME.sub(lambda match: MOVED[match["module"]] + (match["name"] or ""), text)


def old_names_in(text: str) -> set[str]:
    """The old module paths and class paths that ``text`` names (``{"mnist_lightning.nets.MLP"}``)."""
    return {match[0] for match in _OLD_NAME.finditer(text)}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a moved module's old name as an alias of the module that holds its classes now."""

    def find_spec(self, fullname, path, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None  # a new, empty module object of the old name: the moved module is not touched

    def exec_module(self, module) -> None:
        current = importlib.import_module(MOVED[module.__name__])
        warnings.warn(
            f"{module.__name__} is the old path of {current.__name__}; it will stop being importable in a "
            f"future release. Rewrite the checkpoint or config.yaml that names it with `{UPGRADE_HINT}`.",
            DeprecationWarning,
            stacklevel=2,
        )
        module.__getattr__ = lambda name: getattr(current, name)
        module.__dir__ = lambda: dir(current)


def install() -> None:
    """Make the old module paths importable (once per process)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
