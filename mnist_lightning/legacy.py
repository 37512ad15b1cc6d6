"""Module paths of earlier releases, kept importable so their checkpoints and configs still load.

Checkpoints record the class paths of their model and network (``mnist_lightning.model.MNISTClassifier``,
``mnist_lightning.nets.MLP``) and saved ``config.yaml`` files name the class paths of their callbacks. When
the package was laid out in layers those modules moved; importing an old path gives the module that now
holds those classes (``mnist_lightning.data.MNISTDataModule`` is still found: ``data`` is now the data
layer's package and names it). Installed by ``mnist_lightning/__init__.py``; nothing is imported until
asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

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


def current_class_path(class_path: str) -> str:
    """A class path of the flat layout as it is now (``mnist_lightning.nets.MLP`` ->
    ``mnist_lightning.models.nets.MLP``); any other class path as it is."""
    module, _, name = class_path.rpartition(".")
    return f"{MOVED[module]}.{name}" if module in MOVED else class_path


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a moved module's old name as the module itself (the same object, not a copy)."""

    def find_spec(self, fullname, path, target=None):
        if fullname in MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED[spec.name])

    def exec_module(self, module) -> None:
        pass


def install() -> None:
    """Make the old module paths importable (once per process)."""
    if not any(isinstance(finder, _MovedModules) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModules())
