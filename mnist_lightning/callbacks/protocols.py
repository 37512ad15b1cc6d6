"""What the callbacks read from the LightningModule and the data module they are handed, declared once: any
model and data module that offer it work with every callback of the default recipe
(``tests/test_architecture.py`` checks that the callbacks read no other attribute of them;
``tests/callbacks/test_any_model.py`` trains a model that is not ``MNISTClassifier`` with them)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol


class ReportedModel(Protocol):
    """The LightningModule, as the callbacks see it.

    - ``hparams``: its saved hyperparameters; ``summary.json`` reports the ``net`` and ``scheduler`` among
      them when they are class settings (``class_path`` + ``init_args``, as the command line saves them).
    - ``val_acc_best``: the best validation accuracy so far (a number or a 0-d tensor), reported in
      ``summary.json``; optional (read with ``getattr``).
    - its steps' outputs: ``validation_step`` and ``test_step`` return the logits ``(N, classes)`` of a batch
      ``(images, targets)`` (the confusion matrix, the test report), ``predict_step`` the class
      probabilities ``(N, classes)`` (``predictions.csv``).
    """

    hparams: Mapping[str, Any]
    val_acc_best: Any


class ReportedData(Protocol):
    """The LightningDataModule, as the callbacks see it; each attribute but ``hparams`` optional (read with
    ``getattr``).

    - ``hparams``: its saved arguments; ``summary.json`` reports ``dataset`` and ``batch_size``.
    - ``classes``: the class names that label reports and ``predictions.csv`` (else the class indices).
    - ``predict_path``: the image files ``predict`` classifies (None: the test set), naming its folder.
    - ``data_files``: the data files read, hashed into ``provenance.json``.
    """

    hparams: Mapping[str, Any]
    classes: Sequence[str] | None
    predict_path: str | None
    data_files: Sequence[Any]


MODEL_ATTRIBUTES = frozenset(ReportedModel.__annotations__)
DATA_ATTRIBUTES = frozenset(ReportedData.__annotations__)
