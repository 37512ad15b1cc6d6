"""Checkpoint files given to the command line: checked before use, and found for ``--ckpt_path last``."""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from mnist_lightning.checkpointing.trusted_classes import check_checkpoint_classes
from mnist_lightning.errors import UserError, first_line
from mnist_lightning.legacy import current_class_path
from mnist_lightning.models.classifier import MNISTClassifier
from mnist_lightning.run_layout import CHECKPOINTS_FOLDER, LOG_ROOT, RESUMABLE_NAMES

CKPT_KEYWORDS = ("last", "best", "hpc", "registry")


def is_checkpoint_file(ckpt_path: str | None) -> bool:
    """Whether a ``--ckpt_path`` names a file: not unset, one of Lightning's keywords or a registry model."""
    return bool(ckpt_path) and ckpt_path not in CKPT_KEYWORDS and not ckpt_path.startswith("registry:")


def read_checkpoint(
    ckpt_path: str, trusted_modules: Iterable[str] = (), how_to_trust: str = "pass --trust {module}"
) -> dict:
    """Load ``ckpt_path`` on the CPU; a clear UserError unless it is a checkpoint of MNISTClassifier whose
    class paths are all trusted.

    Only tensors and plain values are unpickled (``weights_only``, as LightningCLI and the Trainer load it
    too), and every class the checkpoint names is checked before anything imports it
    (``trusted_classes.py``: the project's, torch's ``nn``/``optim`` and ``trusted_modules``), so a file from
    an untrusted source cannot run code. ``how_to_trust`` is the command's way of trusting a module.
    """
    path = Path(ckpt_path)
    if path.is_dir():
        raise UserError(
            f"--ckpt_path '{ckpt_path}' is a folder; pass a checkpoint file in it, e.g. last.ckpt."
        )
    if path.is_file() and path.stat().st_size == 0:
        raise UserError(f"--ckpt_path '{ckpt_path}' is an empty file (a copy or save that did not finish?).")
    if not path.is_file():
        raise UserError(
            f"--ckpt_path '{ckpt_path}' does not exist. Checkpoints are written to "
            f"lightning_logs/version_N/checkpoints/ by 'fit'; pass one of those files."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        refused = re.search(r"GLOBAL ([\w.]+)", str(err))  # torch names it, then advises loading it anyway
        if refused:
            raise UserError(
                f"--ckpt_path '{ckpt_path}' holds pickled Python objects besides weights and plain values "
                f"({refused.group(1)}); they are not loaded since they could run arbitrary code (checkpoints "
                f"written by this project's 'fit' hold none)."
            ) from None
        weights_only = "Weights only load failed" in str(err)  # bytes that are no pickle: not torch's advice
        reason = "not a pickled checkpoint" if weights_only else f"{type(err).__name__}: {first_line(err)}"
        raise UserError(
            f"--ckpt_path '{ckpt_path}' is not a readable checkpoint ({reason}). Pass a .ckpt file written "
            f"by this project's 'fit'."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"--ckpt_path '{ckpt_path}' is not a Lightning checkpoint (it has no 'state_dict').")
    _check_model_class(ckpt_path, checkpoint.get("hyper_parameters") or {})
    check_checkpoint_classes(checkpoint, ckpt_path, trusted_modules, how_to_trust)
    return checkpoint


def _check_model_class(ckpt_path: str, hparams: dict) -> None:
    class_path = hparams.get("_class_path")
    ours = f"{MNISTClassifier.__module__}.{MNISTClassifier.__qualname__}"
    accepted = set(inspect.signature(MNISTClassifier).parameters) | {"_class_path", "_instantiator"}
    unknown = sorted(set(hparams) - accepted)
    if (class_path and current_class_path(class_path) != ours) or unknown:
        origin = class_path or f"hyperparameters {', '.join(unknown)}"
        raise UserError(
            f"--ckpt_path '{ckpt_path}' was written by a different model ({origin}), not by {ours}; "
            f"it cannot be loaded here."
        )


def check_architecture(model: nn.Module, checkpoint: dict, ckpt_path: str) -> None:
    """Fail with a clear message when the checkpoint's weights do not fit the configured network."""
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = {name: tuple(tensor.shape) for name, tensor in checkpoint["state_dict"].items()}
    differences = [
        f"{name} is {found.get(name, 'missing')} in the checkpoint but {expected.get(name, 'absent')} here"
        for name in sorted(expected.keys() | found.keys())
        if expected.get(name) != found.get(name)
    ]
    if differences:
        more = f" (and {len(differences) - 2} more)" if len(differences) > 2 else ""
        raise UserError(
            f"--ckpt_path '{ckpt_path}' holds a different network than the configured model: "
            f"{'; '.join(differences[:2])}{more}. Use the network it was trained with (model.net in the "
            f"config.yaml of its run), e.g. --model.net.init_args.hidden_sizes."
        )


def find_resumable(log_root: str | Path) -> Path | None:
    """The newest ``last.ckpt`` or ``interrupted.ckpt`` of the runs in ``log_root/*/checkpoints/``."""
    runs = Path(log_root)
    found = [path for name in RESUMABLE_NAMES for path in runs.glob(f"*/{CHECKPOINTS_FOLDER}/{name}")]
    return max(found, key=lambda path: path.stat().st_mtime, default=None)


def best_checkpoint_of(checkpoint_path: Path) -> str:
    """The best checkpoint recorded by the monitoring ModelCheckpoint in ``checkpoint_path``'s saved state.

    Only the callbacks' state is needed: the file is mapped (``mmap``), so its tensors are never read."""
    saved = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
    states = saved.get("callbacks", {})
    for state in states.values():
        if state.get("monitor") and state.get("best_model_path"):
            return state["best_model_path"]
    raise UserError(
        f"--ckpt_path best: '{checkpoint_path}' records no best checkpoint; pass a checkpoint file."
    )


def newest_runs_checkpoint(keyword: str, log_root: str | Path = LOG_ROOT) -> str:
    """``last`` or ``best``: that checkpoint of the newest run under ``log_root`` (its ``last.ckpt`` or
    ``interrupted.ckpt``, or the best one its ModelCheckpoint recorded); a UserError when there is none.
    ``validate``, ``test`` and ``predict`` look under their logger's folder; ``export`` and ``serve`` under
    the default one."""
    newest = find_resumable(log_root)
    if newest is None:
        raise UserError(f"--ckpt_path {keyword}: no checkpoint under '{log_root}' yet; run 'fit' first.")
    return str(newest if keyword == "last" else best_checkpoint_of(newest))
