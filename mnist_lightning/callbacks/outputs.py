"""Where the evaluation callbacks write, the class names they label rows with, and the run's TensorBoard."""

from __future__ import annotations

from pathlib import Path
from weakref import WeakKeyDictionary

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

# the folders each Trainer has been told about, so that the callbacks writing into one folder say it once
_ANNOUNCED: WeakKeyDictionary[L.Trainer, set[Path]] = WeakKeyDictionary()


def output_dir(trainer: L.Trainer) -> Path:
    """``<run folder>/<stage>/<checkpoint name>/``: the files of one evaluation of one checkpoint
    (``<run folder>/<stage>/`` for a model evaluated from Python without a checkpoint path).

    The run folder is the logger's ``log_dir`` (the checkpoint's own run when it lives in one, see
    ``cli/ckpt_path.py``), or ``trainer.default_root_dir`` without a logger. Every rank must ask, since under
    DDP ``log_dir`` is a broadcast. The first time a run asks for a folder that already holds files, rank 0
    says that they are replaced.
    """
    stage = trainer.state.fn.value if trainer.state.fn is not None else "run"
    folder = Path(trainer.log_dir or trainer.default_root_dir) / stage
    if trainer.ckpt_path:
        folder = folder / Path(trainer.ckpt_path).stem
    announced = _ANNOUNCED.setdefault(trainer, set())
    if folder not in announced:
        announced.add(folder)
        if trainer.is_global_zero and folder.is_dir() and any(folder.iterdir()):
            print(f"Replacing the earlier {stage} results in {folder}.", flush=True)
    return folder


def class_names(trainer: L.Trainer, num_classes: int) -> tuple[str, ...]:
    """The data module's class names when it has them, else the class indices as text."""
    classes = getattr(trainer.datamodule, "classes", None)
    return tuple(classes) if classes is not None else tuple(str(index) for index in range(num_classes))


def tensorboard_of(trainer: L.Trainer) -> TensorBoardLogger | None:
    """The run's TensorBoard logger, if it has one."""
    return next((logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)), None)
