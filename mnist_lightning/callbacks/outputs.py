"""Where the callbacks write (a run's folder, an evaluation's), the class names they label rows with, and the
run's TensorBoard."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import lightning as L
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from mnist_lightning import compat
from mnist_lightning.callbacks.progress import tell
from mnist_lightning.run_layout import evaluation_folder, run_folder

# the folders each Trainer has been told about, so that the callbacks writing into one folder say it once
_ANNOUNCED: WeakKeyDictionary[L.Trainer, set[Path]] = WeakKeyDictionary()


def output_dir(trainer: L.Trainer) -> Path:
    """``<run folder>/<stage>/<checkpoint name>/``: the files of one evaluation of one checkpoint
    (``<run folder>/<stage>/`` for a model evaluated from Python without a checkpoint path), for ``predict``
    ``.../<input>/`` (``run_layout.evaluation_folder``).

    The run folder is ``run_layout.run_folder`` (the checkpoint's own run when it lives in one, see
    ``cli/ckpt_path.py``); a logger the command line pointed at the evaluation's folder
    (:func:`logs_into_evaluation_folder`) logs into the folder itself.
    Every rank must ask, since under DDP ``log_dir`` is a broadcast. The first time a run asks for a folder
    that already holds files, rank 0 says that they are replaced.
    """
    stage = trainer.state.fn.value if trainer.state.fn is not None else "run"
    folder = run_folder(trainer)
    if not logs_into_evaluation_folder(trainer.logger):
        inputs = getattr(trainer.datamodule, "predict_path", None)
        folder = folder / evaluation_folder(stage, trainer.ckpt_path, inputs)
    announced = _ANNOUNCED.setdefault(trainer, set())
    if folder not in announced:
        announced.add(folder)
        earlier = folder.is_dir() and any(not is_event_file(path) for path in folder.iterdir())
        if trainer.is_global_zero and earlier:
            tell(trainer, f"Replacing the earlier {stage} results in {folder}.")
    return folder


def logs_into_evaluation_folder(logger: Logger | None) -> bool:
    """Whether the command line pointed ``logger`` at an evaluation's own folder (``cli/ckpt_path.py``): a
    TensorBoardLogger's ``sub_dir``, or a CSVLogger's ``version`` of several parts (``version_3/test/last``),
    so that its ``metrics.csv`` is the evaluation's and the training's is left alone."""
    if isinstance(logger, TensorBoardLogger):
        return logger.sub_dir is not None
    return isinstance(logger, CSVLogger) and len(Path(str(logger.version)).parts) > 1


def write_json(path: Path, data: Any, indent: int = 2) -> None:
    """Write ``data`` to ``path`` as JSON, whole or not at all: into a hidden file named by this process (two
    processes writing the same file do not share it), then renamed over ``path``."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(data, indent=indent, default=str) + "\n")
    os.replace(partial, path)


def local_time() -> str:
    """Now, in the machine's time zone, to the second (ISO 8601): when a run or a session started or ended."""
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


def global_seed() -> int | None:
    """The seed ``seed_everything`` set for this process (Lightning keeps it in ``PL_GLOBAL_SEED``)."""
    seed = os.environ.get("PL_GLOBAL_SEED")
    return int(seed) if seed else None


def writes_files(trainer: L.Trainer) -> bool:
    """False under ``fast_dev_run``: that smoke test of the pipeline, which Lightning runs without logs and
    checkpoints, leaves no files at all (the callbacks still print what they would write)."""
    return not trainer.fast_dev_run


def is_event_file(path: Path) -> bool:
    """A TensorBoard event file (``events.out.tfevents.*``)."""
    return path.name.startswith("events.out.tfevents.")


def log_step(trainer: L.Trainer) -> int:
    """The step the run's TensorBoard entries are logged at now: the epoch's metrics, and the pictures with
    them (for an evaluation of a checkpoint on the command line, the step that checkpoint was saved at)."""
    return compat.logging_step(trainer)


def class_names(trainer: L.Trainer, num_classes: int) -> tuple[str, ...]:
    """The data module's class names when it has them, else the class indices as text."""
    classes = getattr(trainer.datamodule, "classes", None)
    return tuple(classes) if classes is not None else tuple(str(index) for index in range(num_classes))


def tensorboard_of(trainer: L.Trainer) -> TensorBoardLogger | None:
    """The run's TensorBoard logger, if it has one."""
    return next((logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)
