"""``python -m mnist_lightning upgrade PATH [PATH ...]``: old checkpoints and configs to today's paths.

A checkpoint (``.ckpt``) or ``config.yaml`` written before the package was laid out in layers names modules
that have moved (``mnist_lightning.nets.MLP``, see ``legacy.MOVED``); they load today only through the
deprecated aliases of ``legacy``. This command rewrites every such name in the file (in a checkpoint: the
model's ``_class_path``, the network's, optimizer's and scheduler's class paths and any other string that
names a moved module; in a config: the text, comments and layout kept) to today's, as Lightning's
``python -m lightning.pytorch.utilities.upgrade_checkpoint`` does for its own changes. The original is kept
beside the file as ``PATH.bak`` and the new file replaces it in one rename, so an interrupted upgrade leaves
the original in place. Checkpoints are read with ``torch.load(weights_only=True)``: tensors and plain values
only, nothing in the file is imported or called.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mnist_lightning.cli.console import CommandParser
from mnist_lightning.errors import UserError, first_line, yaml_problem
from mnist_lightning.legacy import old_names_in, with_current_paths

CHECKPOINT_SUFFIXES = (".ckpt",)
CONFIG_SUFFIXES = (".yaml", ".yml")
BACKUP_SUFFIX = ".bak"


def upgrade(path: str | Path) -> str:
    """Rewrite one checkpoint or config in place, the original kept as ``PATH.bak``; says what it did."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"'{path}' is not a file; pass a checkpoint (.ckpt) or a run's config.yaml.")
    if path.suffix in CONFIG_SUFFIXES:
        old_names, write = _upgrade_config(path)
    elif path.suffix in CHECKPOINT_SUFFIXES:
        old_names, write = _upgrade_checkpoint(path)
    else:
        raise UserError(
            f"'{path}' is neither a checkpoint (.ckpt) nor a config (.yaml); upgrade rewrites only those."
        )
    if not old_names:
        return f"{path}: already names today's module paths; left as it is."
    backup = _replace_keeping_backup(path, write)
    changes = ", ".join(f"{old} -> {with_current_paths(old)}" for old in sorted(old_names))
    return f"{path}: upgraded ({changes}); the original is kept as {backup}."


def _upgrade_config(path: Path) -> tuple[set[str], Callable[[Path], None]]:
    import yaml

    text = _read_text(path)
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise UserError(
            f"'{path}' is not valid YAML ({yaml_problem(err)}); pass a run's config.yaml."
        ) from None
    if not isinstance(config, dict):
        raise UserError(f"'{path}' is not a config (its YAML is not a mapping of settings).")
    upgraded = with_current_paths(text)
    return old_names_in(text), lambda target: target.write_text(upgraded, encoding="utf-8")


def _upgrade_checkpoint(path: Path) -> tuple[set[str], Callable[[Path], None]]:
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = (
            "pickled objects besides weights and plain values" if "GLOBAL" in str(err) else first_line(err)
        )
        raise UserError(
            f"'{path}' is not a readable checkpoint ({reason}); pass a .ckpt file written by 'fit'."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"'{path}' is not a Lightning checkpoint (it has no 'state_dict').")
    old_names: set[str] = set()
    upgraded = _map_strings(
        checkpoint, lambda text: old_names.update(old_names_in(text)) or with_current_paths(text)
    )
    return old_names, lambda target: torch.save(upgraded, target)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"'{path}' is not a text file; pass a run's config.yaml.") from None


def _map_strings(value: Any, change: Callable[[str], str]) -> Any:
    """``value`` with ``change`` applied to every string in it (dict keys included); the rest as it is."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, dict):
        changed = copy.copy(value)  # the same kind of mapping (an OrderedDict stays one)
        changed.clear()
        changed.update((_map_strings(key, change), _map_strings(item, change)) for key, item in value.items())
        return changed
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_map_strings(item, change) for item in value)
    return value


def _replace_keeping_backup(path: Path, write: Callable[[Path], None]) -> Path:
    """Write the new file beside ``path``, keep the original as ``PATH.bak``, then rename the new one over."""
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    if backup.exists():
        raise UserError(
            f"'{backup}' exists (a backup of an earlier upgrade?); move it away, then run upgrade again."
        )
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        write(Path(temporary))
        try:
            os.link(path, backup)  # the original's bytes, without a copy
        except OSError:  # a file system without hard links
            shutil.copy2(path, backup)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return backup


def main(args: list[str]) -> None:
    """``python -m mnist_lightning upgrade PATH [PATH ...]``."""
    parser = CommandParser(
        "upgrade",
        description="Rewrite checkpoints and config.yaml files that name the package's old module paths "
        "(mnist_lightning.nets.MLP, ...) to today's; each original is kept as PATH.bak.",
    )
    parser.add_argument("paths", nargs="+", metavar="PATH", help="a checkpoint (.ckpt) or config (.yaml)")
    for path in parser.parse_args(args).paths:
        print(upgrade(path))
