"""``predictions.csv``: the class probabilities of every predicted input, in input order."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed
from lightning.pytorch.callbacks import BasePredictionWriter

from mnist_lightning.callbacks.outputs import class_names, output_dir, writes_files
from mnist_lightning.callbacks.progress import tell
from mnist_lightning.run_layout import PREDICTIONS_FILE


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` after ``predict``: a row per input, from every rank, in input order.

    Uses the dataset indices Lightning records for each predicted batch, so each input comes out once, in
    order, however the inputs were sharded. Rows are named by the dataset's ``paths`` (image files) or by
    the test index; the columns are those of :func:`write_predictions`, with the true class for the test
    set. A short summary is printed, with the accuracy when the true classes are known.
    """

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")

    def write_on_epoch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        # one predict dataloader: a list of (batch, C) tensors and a list of index lists, one per batch
        indices = torch.tensor([index for batch in batch_indices[0] for index in batch], dtype=torch.long)
        probabilities = torch.cat([batch.float().cpu() for batch in predictions]) if predictions else None
        shards = [(indices, probabilities)]
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            shards = [None] * trainer.world_size
            torch.distributed.all_gather_object(shards, (indices, probabilities))
        folder = output_dir(trainer) if writes_files(trainer) else None
        if not trainer.is_global_zero:
            return
        indices = torch.cat([shard_indices for shard_indices, _ in shards])
        probabilities = torch.cat([shard for _, shard in shards if shard is not None])[indices.argsort()]
        if not torch.equal(indices.sort().values, torch.arange(len(indices))):
            raise RuntimeError("predict: the gathered predictions do not cover each input exactly once.")
        dataset = trainer.predict_dataloaders.dataset
        paths = getattr(dataset, "paths", None)
        labels = getattr(dataset, "labels", None)  # the test set's true classes (image files have none)
        targets = labels.cpu()[indices.sort().values] if labels is not None and paths is None else None
        classes = class_names(trainer, probabilities.shape[1])
        path = folder / PREDICTIONS_FILE if folder is not None else None
        if path is not None:
            write_predictions(path, probabilities, paths, classes, targets)
        tell(trainer, summary(path, probabilities, paths, classes, targets))


def write_predictions(
    path: Path,
    probabilities: torch.Tensor,
    files: Sequence[Path] | None,
    classes: Sequence[str],
    targets: torch.Tensor | None = None,
) -> None:
    """One row per input: ``path`` (or the test set's ``index``), ``predicted_class`` (its index),
    ``predicted_label`` (its name), with ``targets`` ``true_class``, ``true_label`` and ``correct`` (1 or 0),
    then ``confidence`` and ``prob_<class index>`` for each class."""
    path.parent.mkdir(parents=True, exist_ok=True)
    confidences, predictions = probabilities.max(dim=1)
    names = [str(file) for file in files] if files is not None else range(len(probabilities))
    truth = ["true_class", "true_label", "correct"] if targets is not None else []
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        first = "path" if files is not None else "index"
        columns = [f"prob_{index}" for index in range(len(classes))]
        writer.writerow([first, "predicted_class", "predicted_label", *truth, "confidence", *columns])
        for row, (name, prediction, confidence, probability) in enumerate(
            zip(names, predictions.tolist(), confidences.tolist(), probabilities.tolist(), strict=True)
        ):
            true = []
            if targets is not None:
                target = int(targets[row])
                true = [target, classes[target], int(target == prediction)]
            writer.writerow(
                [name, prediction, classes[prediction], *true, f"{confidence:.6f}"]
                + [f"{p:.6f}" for p in probability]
            )


def summary(
    path: Path | None,
    probabilities: torch.Tensor,
    files: Sequence[Path] | None,
    classes: Sequence[str],
    targets: torch.Tensor | None = None,
    rows: int = 5,
) -> str:
    """A few lines for the terminal: how many, where (``path``; None: nowhere), how many of each class, the
    accuracy when the true classes are known, and the first rows."""
    confidences, predictions = probabilities.max(dim=1)
    what = "image files" if files is not None else "test images"
    counts = torch.bincount(predictions, minlength=len(classes)).tolist()
    lines = [
        f"Predicted {len(predictions)} {what}"
        + (f"; predictions written to {path}" if path is not None else " (fast_dev_run: nothing written)"),
        "Predicted classes: "
        + "  ".join(f"{name}: {count}" for name, count in zip(classes, counts, strict=True)),
    ]
    if targets is not None:
        wrong = int((predictions != targets).sum())
        accuracy = 1 - wrong / len(predictions)
        lines.append(f"Accuracy: {accuracy:.2%} ({wrong} of {len(predictions)} {what} predicted wrong)")
    names = (
        [str(file) for file in files[:rows]]
        if files is not None
        else [f"test image {i}" for i in range(rows)]
    )
    width = max(map(len, names))
    for row, (name, prediction, confidence) in enumerate(
        zip(names, predictions.tolist(), confidences.tolist(), strict=False)
    ):
        truth = f", true {classes[int(targets[row])]}" if targets is not None else ""
        lines.append(f"  {name:<{width}}  -> {classes[prediction]}  ({confidence:.1%}{truth})")
    if len(predictions) > rows:
        lines.append(
            f"  ... {len(predictions) - rows} more" + (f" in {path.name}" if path is not None else "")
        )
    return "\n".join(lines)
