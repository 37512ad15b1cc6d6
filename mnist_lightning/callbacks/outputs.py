"""Where the evaluation callbacks write, and the class names they label rows with."""

from __future__ import annotations

from pathlib import Path

import lightning as L


def output_dir(trainer: L.Trainer) -> Path:
    """The run's folder (the logger's ``log_dir``); every rank must ask, since under DDP it is a broadcast."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def class_names(trainer: L.Trainer, num_classes: int) -> tuple[str, ...]:
    """The data module's class names when it has them, else the class indices as text."""
    classes = getattr(trainer.datamodule, "classes", None)
    return tuple(classes) if classes is not None else tuple(str(index) for index in range(num_classes))
