"""Which classes a checkpoint may rebuild: a checkpoint is data from a stranger, not code.

A checkpoint written by ``fit`` records its network, optimizer and scheduler as class paths with their
arguments (``{class_path: mnist_lightning.models.nets.MLP, init_args: {...}}``), and Lightning and
jsonargparse rebuild them by importing and calling whatever those strings name. ``torch.load(weights_only=
True)`` stops pickled code, not this: a class path naming a function (``torch.fx.graph_module.
reduce_graph_module`` executes the source it is given) or a module with side effects on import runs code.

So before anything a checkpoint names is imported, every import path in it is checked here, on the strings
alone: it must name a class (not a function) of the expected kind (``nn.Module`` for ``model.net``,
``Optimizer``, ``LRScheduler``) from a trusted module: the project's own, torch's ``nn`` and ``optim``
namespaces, or a module the user named (a class path on the command line or in a ``--config`` file, or
``--trust`` of ``export`` and ``serve``). Only then is that module imported to check the kind. No library
offers this check: jsonargparse's ``class_path`` resolution imports first by design.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import typing
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from mnist_lightning.errors import UserError
from mnist_lightning.legacy import current_class_path

TRUSTED_PACKAGES = ("mnist_lightning", "torch.nn", "torch.optim")
# the one instantiator Lightning records (LightningCLI's); any other would be imported and called on load
LIGHTNING_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"
# model hyperparameter -> (what it must be a subclass of, as module and name, imported only when checked)
EXPECTED_KINDS = {
    "net": ("torch.nn", "Module"),
    "optimizer": ("torch.optim", "Optimizer"),
    "scheduler": ("torch.optim.lr_scheduler", "LRScheduler"),
}
IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
PLAIN_TEXT_TYPES = (str, Path)  # arguments typed so are never imported by jsonargparse


def modules_named_in(config: Any) -> set[str]:
    """The modules of every ``class_path`` in a parsed configuration (a Namespace, dict or list): what the
    user's command line and config files name is the user's own code, and trusted."""
    return {path.rpartition(".")[0] for path in _class_paths_in(config)}


def _class_paths_in(value: Any) -> Iterator[str]:
    if hasattr(value, "as_dict"):  # a jsonargparse Namespace
        value = value.as_dict()
    if isinstance(value, Mapping):
        if isinstance(value.get("class_path"), str):
            yield value["class_path"]
        for item in value.values():
            yield from _class_paths_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _class_paths_in(item)


def check_checkpoint_classes(
    checkpoint: dict, ckpt_path: str, trusted_modules: Iterable[str], how_to_trust: str
) -> None:
    """A UserError unless every import path in the checkpoint's hyperparameters is trusted and of its kind.

    ``how_to_trust`` says how this command takes a module of the user's own, formatted with ``where``
    (``model.net``), ``class_path`` and ``module``: ``"pass --{where} {class_path}"``. Nothing untrusted is
    imported.
    """
    checker = _Checker(ckpt_path, frozenset(trusted_modules), how_to_trust)
    hparams = checkpoint.get("hyper_parameters") or {}
    for origin, section in (
        ("model", hparams),
        ("data", checkpoint.get("datamodule_hyper_parameters") or {}),
    ):
        instantiator = section.get("_instantiator")
        if instantiator is not None and instantiator != LIGHTNING_INSTANTIATOR:
            checker.refuse(f"an instantiator '{instantiator}' ({origin} hyperparameters)", "")
    for key, value in hparams.items():
        if key.startswith("_"):
            continue  # _instantiator above; _class_path is compared with MNISTClassifier's as text
        checker.check_value(value, f"model.{key}", EXPECTED_KINDS.get(key))
    for key, value in (checkpoint.get("datamodule_hyper_parameters") or {}).items():
        if not key.startswith("_"):
            checker.check_value(value, f"data.{key}", None, plain_strings=True)


class _Checker:
    """Walks hyperparameters; refuses the first import path that is not allowed."""

    def __init__(self, ckpt_path: str, trusted: frozenset[str], how_to_trust: str) -> None:
        self.ckpt_path, self.trusted, self.how_to_trust = ckpt_path, trusted, how_to_trust

    def refuse(self, what: str, why: str, trust_hint: str = "") -> typing.NoReturn:
        hint = f" If it is your own code and you trust this checkpoint, {trust_hint}." if trust_hint else ""
        raise UserError(
            f"--ckpt_path '{self.ckpt_path}' names {what}{why}. A checkpoint is data: it may only rebuild "
            f"classes (not functions) of this project, torch.nn and torch.optim, or of a module you name "
            f"yourself.{hint} See docs/security.md."
        )

    def check_value(
        self, value: Any, where: str, kind: tuple[str, str] | None, plain_strings: bool = False
    ) -> None:
        """``value`` at ``where`` (``model.net``): a class setting, a list or mapping of values, or a plain
        value. Strings that look like import paths are checked as class paths unless ``plain_strings``."""
        if isinstance(value, Mapping) and "class_path" in value:
            cls = self.check_class_path(value["class_path"], where, kind)
            init_args = value.get("init_args") or {}
            if not isinstance(init_args, Mapping):
                self.refuse(f"arguments of {where} that are not a mapping ({init_args!r})", "")
            hints = _argument_types(cls)
            for name, argument in init_args.items():
                plain = hints.get(name) in PLAIN_TEXT_TYPES
                self.check_value(argument, f"{where}.init_args.{name}", None, plain)
        elif isinstance(value, Mapping):
            for name, item in value.items():
                self.check_value(item, f"{where}.{name}", None, plain_strings)
        elif isinstance(value, list | tuple):
            for item in value:
                self.check_value(item, where, None, plain_strings)
        elif isinstance(value, str) and not plain_strings and IMPORT_PATH.fullmatch(value):
            self.check_class_path(value, where, kind)
        elif kind is not None and value is not None:
            self.refuse(f"{where} as {value!r}, not a class setting (class_path and init_args)", "")

    def check_class_path(self, class_path: Any, where: str, kind: tuple[str, str] | None) -> type:
        """The class ``class_path`` names, imported only when its module is trusted; a UserError unless it
        is a class and, for a known setting, a subclass of ``kind``."""
        if not isinstance(class_path, str) or not IMPORT_PATH.fullmatch(class_path):
            self.refuse(f"{where} as {class_path!r}", ", which is not a class path")
        class_path = current_class_path(class_path)
        module_name, _, name = class_path.rpartition(".")
        if not self.is_trusted(module_name):
            self.refuse(
                f"the class path '{class_path}' ({where})",
                f" from the module '{module_name}', which nothing on this command line trusts, so it was not "
                "imported",
                self.how_to_trust.format(where=where, class_path=class_path, module=module_name),
            )
        try:
            found = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError) as err:
            self.refuse(f"the class path '{class_path}' ({where})", f", which cannot be imported ({err})")
        if not inspect.isclass(found):
            self.refuse(
                f"'{class_path}' ({where})", f", which is a {type(found).__name__}, not a class: refused"
            )
        if kind is not None:
            base = getattr(importlib.import_module(kind[0]), kind[1])
            if not issubclass(found, base):
                self.refuse(f"'{class_path}' ({where})", f", which is not a {kind[0]}.{kind[1]}: refused")
        return found

    def is_trusted(self, module_name: str) -> bool:
        return any(
            module_name == trusted or module_name.startswith(f"{trusted}.")
            for trusted in (*TRUSTED_PACKAGES, *self.trusted)
        )


def _argument_types(cls: type) -> dict[str, Any]:
    """``cls``'s ``__init__`` argument types, with ``X | None`` and ``Literal[...]`` of text as ``X``/``str``
    ({} when they cannot be read): arguments typed as plain text are not import paths."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # annotations that do not resolve: every string is then checked as an import path
        return {}
    types = {}
    for name, hint in hints.items():
        options = [option for option in typing.get_args(hint) if option is not type(None)]
        if typing.get_origin(hint) is Literal:
            hint = str if all(isinstance(option, str) for option in typing.get_args(hint)) else hint
        elif len(options) == 1 and type(None) in typing.get_args(hint):
            hint = options[0]
        types[name] = hint
    return types


def add_trust_option(parser: argparse.ArgumentParser) -> None:
    """``--trust MODULE`` (repeatable): a module of the user's own whose classes a checkpoint may name."""
    parser.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="MODULE",
        help="a module of your own (e.g. my_nets) whose classes the checkpoint may rebuild; the project's, "
        "torch.nn's and torch.optim's always may (see docs/security.md)",
    )
