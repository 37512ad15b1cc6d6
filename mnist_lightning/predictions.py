"""``predict``'s output: the class probabilities of every input, gathered from all devices in input order,
written to ``predictions.csv`` with a short summary for the terminal."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed
from lightning.pytorch.callbacks import BasePredictionWriter

NUM_CLASSES = 10


class GatherPredictions(BasePredictionWriter):
    """Collects the probabilities ``predict_step`` returns, from every rank, in dataset order.

    Uses the dataset indices Lightning records for each predicted batch, so each input comes out once, in
    order, however the inputs were sharded. After ``predict``, ``probabilities`` is an (N, 10) tensor on
    rank 0 (None on the other ranks).
    """

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")
        self.probabilities: torch.Tensor | None = None

    def write_on_epoch_end(
        self, trainer, pl_module, predictions: Sequence[Any], batch_indices: Sequence[Any]
    ) -> None:
        # one predict dataloader: a list of (batch, 10) tensors and a list of index lists, one per batch
        indices = torch.tensor([index for batch in batch_indices[0] for index in batch], dtype=torch.long)
        probabilities = torch.cat([batch.float().cpu() for batch in predictions]) if predictions else None
        shards = [(indices, probabilities)]
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            shards = [None] * trainer.world_size
            torch.distributed.all_gather_object(shards, (indices, probabilities))
        if not trainer.is_global_zero:
            return
        indices = torch.cat([shard_indices for shard_indices, _ in shards])
        probabilities = torch.cat([shard for _, shard in shards if shard is not None])
        self.probabilities = probabilities[indices.argsort()]
        if not torch.equal(indices.sort().values, torch.arange(len(indices))):
            raise RuntimeError("predict: the gathered predictions do not cover each input exactly once.")


def write_predictions(path: str | Path, probabilities: torch.Tensor, files: Sequence[Path] | None) -> Path:
    """One row per input: ``path`` (or the test ``index``), ``prediction``, ``confidence``, ``prob_0..9``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    confidences, predictions = probabilities.max(dim=1)
    names = [str(file) for file in files] if files is not None else range(len(probabilities))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        first = "path" if files is not None else "index"
        writer.writerow(
            [first, "prediction", "confidence", *(f"prob_{digit}" for digit in range(NUM_CLASSES))]
        )
        for name, prediction, confidence, row in zip(
            names, predictions.tolist(), confidences.tolist(), probabilities.tolist(), strict=True
        ):
            writer.writerow([name, prediction, f"{confidence:.6f}", *(f"{p:.6f}" for p in row)])
    return path


def summary(path: Path, probabilities: torch.Tensor, files: Sequence[Path] | None, rows: int = 5) -> str:
    """A few lines for the terminal: how many, where, how many of each digit, and the first rows."""
    confidences, predictions = probabilities.max(dim=1)
    what = "image files" if files is not None else "test images"
    counts = torch.bincount(predictions, minlength=NUM_CLASSES).tolist()
    lines = [
        f"Predicted {len(predictions)} {what}; predictions written to {path}",
        "Predicted digits: " + "  ".join(f"{digit}: {count}" for digit, count in enumerate(counts)),
    ]
    names = (
        [str(file) for file in files[:rows]]
        if files is not None
        else [f"test image {i}" for i in range(rows)]
    )
    width = max(map(len, names))
    for name, prediction, confidence in zip(names, predictions.tolist(), confidences.tolist(), strict=False):
        lines.append(f"  {name:<{width}}  -> {prediction}  ({confidence:.1%})")
    if len(predictions) > rows:
        lines.append(f"  ... {len(predictions) - rows} more in {path.name}")
    return "\n".join(lines)


def unreadable_summary(unreadable: Sequence[tuple[Path, str]]) -> str:
    """Names each file that was skipped, with the reason."""
    lines = [f"Skipped {len(unreadable)} file(s) that could not be read as an image of a digit:"]
    lines += [f"  {path}: {reason}" for path, reason in unreadable]
    return "\n".join(lines)
