"""Exact epoch metrics that are cheap enough to update after every training step."""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric, Metric


class SampleMean(MeanMetric):
    """The mean over samples of a quantity given per batch: ``update(batch_mean, batch_size)``.

    Sums in float64, which are exact in any order: one device and the ranks of DDP (whose sums are added)
    give the same mean. No NaN check, so no host-device sync per step. (torchmetrics' MeanMetric ignores the
    weights when ``nan_strategy="disable"``, which made the loss a mean of batch means.)
    """

    def __init__(self) -> None:
        super().__init__(nan_strategy="disable")
        self.set_dtype(torch.float64)  # float32 on MPS, which has no float64: see MNISTClassifier.setup

    def update(self, value: torch.Tensor, weight: int) -> None:
        self.mean_value.add_(value.to(self.mean_value.dtype), alpha=weight)  # in place: no Module.__setattr__
        self.weight.add_(weight)


class TrainAccuracy(Metric):
    """Top-1 accuracy kept as two counters, for the training steps.

    The same value as ``MulticlassAccuracy(average="micro")`` (also under DDP: the counters are summed across
    ranks) at a third of its cost per update, which matters when it runs after every training step.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("correct", torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.correct.add_((logits.argmax(dim=1) == target).sum())
        self.total.add_(target.numel())

    def compute(self) -> torch.Tensor:
        return self.correct / self.total
