"""Checks of a command's settings before anything runs: each turns a mistake into one clear UserError."""

from __future__ import annotations

import pydoc
import sys
import tempfile
from pathlib import Path

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.callbacks import Checkpoint, LearningRateMonitor

from mnist_lightning.callbacks.progress import tell
from mnist_lightning.errors import UserError, yaml_problem


def check_learning_rate(model_config: Namespace) -> None:
    """Reject a learning rate <= 0 at parse time (the optimizer itself is only built when training starts)."""
    optimizer = model_config.get("optimizer")
    init_args = optimizer.get("init_args") if isinstance(optimizer, Namespace) else None
    lr = init_args.get("lr") if isinstance(init_args, Namespace) else None
    if lr is not None and not lr > 0:
        raise UserError(f"model.optimizer.init_args.lr (the learning rate) must be greater than 0, got {lr}.")


def option_values(args: list[str], option: str) -> list[tuple[str, str]]:
    """Each ``(name, value)`` given as ``--option value`` or ``--option=value`` in ``args``; ``option`` ending
    in ``.`` stands for every option under it (``--data.`` gives ``--data.dataset`` and the others)."""
    found = []
    for index, arg in enumerate(map(str, args)):
        name, equals, value = arg.partition("=")
        under = option.endswith(".") and name.startswith(option)
        if not name.startswith("--") or not (name == option or under):
            continue
        if not equals:
            if index + 1 >= len(args):
                continue
            value = str(args[index + 1])
        found.append((name, value))
    return found


def config_files(args: list[str]) -> list[str]:
    """The ``--config`` files of ``args``, in order."""
    return [path for _, path in option_values(args, "--config")]


def check_config_files(args: list[str] | None) -> None:
    """A YAML syntax error in a ``--config`` file, reported with that file's name and the line."""
    import yaml

    for path in config_files(sys.argv[1:] if args is None else args):
        if not Path(path).is_file():
            continue
        try:
            yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            raise UserError(f"--config {path}: not valid YAML {yaml_problem(err)}.") from None


def check_accelerator(trainer_config: Namespace) -> None:
    """A GPU asked for (``--trainer.accelerator gpu``, a gpu/ddp/multinode preset) where there is none."""
    import torch

    accelerator = str(trainer_config.get("accelerator") or "auto")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        has = "an Apple GPU (MPS)" if torch.backends.mps.is_available() else "no GPU that torch can use"
        raise UserError(
            f"trainer.accelerator is '{accelerator}' (set by --trainer.accelerator or a gpu/ddp/multinode "
            f"preset), but this machine has {has}. Run here with --config configs/cpu.yaml (or "
            f"--trainer.accelerator cpu, plus --trainer.devices 2 --trainer.strategy ddp to try DDP)."
        )


def check_epochs(subcommand: str, trainer_config: Namespace) -> None:
    """``max_epochs 0`` would train nothing; ``-1`` trains until stopped, which is said up front."""
    if subcommand != "fit":
        return
    epochs, steps = trainer_config.get("max_epochs"), trainer_config.get("max_steps")
    if epochs == 0 or (epochs is not None and epochs < -1):
        raise UserError(f"trainer.max_epochs must be at least 1 (or -1: until stopped), got {epochs}.")
    if epochs == -1 and (steps is None or steps < 0) and not trainer_config.get("max_time"):
        tell(
            None, "trainer.max_epochs is -1: training goes on until you stop it (Ctrl-C saves a checkpoint)."
        )


def check_log_dir(trainer: L.Trainer) -> None:
    """Fail before anything runs when the folder for logs and checkpoints cannot be created or written."""
    logger = trainer.logger
    folder = Path(logger.save_dir if logger is not None and logger.save_dir else trainer.default_root_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserError(
            f"cannot write logs and checkpoints to '{folder}' ({err.strerror or err}). Choose a writable "
            f"folder with --trainer.logger.init_args.save_dir (and --trainer.default_root_dir)."
        ) from None


def drop_checkpoint_callbacks(trainer_config: Namespace) -> None:
    """With ``--trainer.enable_checkpointing=false``, leave out the checkpoint callbacks a config lists.

    Lightning refuses a Trainer that has checkpointing off and a ``ModelCheckpoint`` in its callbacks, and
    ``configs/default.yaml`` lists two; turning checkpointing off on the command line means leaving them out.
    """
    callbacks = trainer_config.get("callbacks") or []
    kept = [callback for callback in callbacks if not _is_checkpoint(callback)]
    if len(kept) < len(callbacks):
        trainer_config.callbacks = kept
        tell(None, "trainer.enable_checkpointing=false: the config's checkpoint callbacks are left out.")


def drop_logger_callbacks(trainer_config: Namespace) -> None:
    """With ``--trainer.logger=false``, leave out the ``LearningRateMonitor`` a config lists: Lightning
    refuses to train with it and no logger, and ``configs/default.yaml`` lists one."""
    callbacks = trainer_config.get("callbacks") or []
    kept = [callback for callback in callbacks if not _is_a(callback, LearningRateMonitor)]
    if trainer_config.get("logger") is False and len(kept) < len(callbacks):
        trainer_config.callbacks = kept
        tell(
            None, "trainer.logger=false: the config's LearningRateMonitor is left out (it logs to a logger)."
        )


def _is_checkpoint(callback: Namespace) -> bool:
    return _is_a(callback, Checkpoint)


def _is_a(callback: Namespace, base: type) -> bool:
    cls = pydoc.locate(callback.get("class_path", ""))
    return isinstance(cls, type) and issubclass(cls, base)
