"""The network (an MLP) and the LightningModule that trains, validates and tests it."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from mnist_lightning import report
from mnist_lightning.errors import UserError

NUM_CLASSES = 10


class MLP(nn.Module):
    """An MLP on flattened 28x28 digits: per hidden layer Linear, [BatchNorm], ReLU, [Dropout]."""

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (128, 64),
        dropout: float = 0.0,
        batch_norm: bool = False,
        in_features: int = 28 * 28,
        num_classes: int = NUM_CLASSES,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = in_features
        for width in hidden_sizes:
            layers.append(nn.Linear(width_in, width, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width_in = width
        layers.append(nn.Linear(width_in, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _wants_total_steps(scheduler: LRSchedulerCallable) -> bool:
    """True for a scheduler such as OneCycleLR whose length was left open: it gets the run's total steps."""
    keywords = getattr(scheduler, "keywords", None)  # the arguments a config bound (a functools.partial)
    if keywords is not None and "total_steps" in keywords:
        return keywords["total_steps"] is None and keywords.get("epochs") is None
    try:
        return "total_steps" in inspect.signature(scheduler).parameters
    except (TypeError, ValueError):
        return False


def _accuracy() -> MulticlassAccuracy:
    return MulticlassAccuracy(num_classes=NUM_CLASSES, average="micro", validate_args=False)


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


def _confusion_matrix() -> MulticlassConfusionMatrix:
    return MulticlassConfusionMatrix(num_classes=NUM_CLASSES, validate_args=False)


class MNISTClassifier(L.LightningModule):
    """Classifies MNIST digits with an :class:`MLP` trained on cross-entropy.

    Metrics are torchmetrics objects accumulated on the device and logged once per epoch (exact under DDP:
    states are summed across ranks). Logged: ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``,
    ``val_acc_best``, ``test_loss``, ``test_acc``. With a TensorBoard logger, the validation confusion matrix
    is drawn once per epoch, and ``test`` adds its confusion matrix, most confident mistakes and
    classification report; ``test_results`` keeps the test confusion matrix and mistakes for the report files.

    Args:
        hidden_sizes: widths of the hidden layers.
        dropout: dropout probability after each hidden layer, in [0, 1).
        batch_norm: batch normalization after each hidden linear layer.
        label_smoothing: cross-entropy label smoothing for training, in [0, 1).
        optimizer: the optimizer class and its arguments (default Adam, lr 1e-3).
        scheduler: an optional learning-rate scheduler. One that takes ``total_steps`` (OneCycleLR) gets the
            run's total number of optimizer steps and is stepped every batch; others are stepped every epoch.
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (128, 64),
        dropout: float = 0.0,
        batch_norm: bool = False,
        label_smoothing: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        hidden_sizes = list(hidden_sizes)
        if not hidden_sizes or any(width < 1 for width in hidden_sizes):
            raise UserError(
                f"model.hidden_sizes must be a non-empty list of positive widths, got {hidden_sizes}."
            )
        if not 0 <= dropout < 1:
            raise UserError(f"model.dropout must be in [0, 1), got {dropout}.")
        if not 0 <= label_smoothing < 1:
            raise UserError(f"model.label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.save_hyperparameters()
        self.net = MLP(hidden_sizes, dropout=dropout, batch_norm=batch_norm)
        self.label_smoothing = label_smoothing
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loss, self.val_loss, self.test_loss = SampleMean(), SampleMean(), SampleMean()
        self.train_acc, self.val_acc, self.test_acc = TrainAccuracy(), _accuracy(), _accuracy()
        self.val_acc_best = 0.0
        self.val_confusion, self.test_confusion = _confusion_matrix(), _confusion_matrix()
        self.test_mistakes = report.MostConfidentMistakes()
        self.test_results: report.TestResults | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        self.train_loss.update(loss.detach(), len(y))
        self.train_acc.update(logits.detach(), y)
        return loss

    def on_train_epoch_end(self) -> None:
        self._log_and_reset("train", self.train_loss, self.train_acc)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        logits = self._evaluate(batch, self.val_loss, self.val_acc)
        if self._tensorboard() is not None:
            self.val_confusion.update(logits, batch[1])

    def on_validation_epoch_end(self) -> None:
        accuracy = self._log_and_reset("val", self.val_loss, self.val_acc)
        if self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking:
            self.val_acc_best = max(self.val_acc_best, accuracy)
            # hp_metric links the run's hyperparameters to its best accuracy in TensorBoard's HPARAMS tab
            self.log_dict({"val_acc_best": self.val_acc_best, "hp_metric": self.val_acc_best})
        self._log_val_confusion_matrix()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        logits = self._evaluate(batch, self.test_loss, self.test_acc)
        self.test_confusion.update(logits, batch[1])
        self.test_mistakes.update(batch[0], logits, batch[1])

    def on_test_epoch_end(self) -> None:
        self._log_and_reset("test", self.test_loss, self.test_acc)
        # compute() gathers from all ranks, so every rank calls it; only rank 0 draws
        confusion, mistakes = self.test_confusion.compute().cpu(), self.test_mistakes.compute()
        self.test_results = report.TestResults(confusion, mistakes)
        self.test_confusion.reset()
        self.test_mistakes.reset()
        tensorboard = self._tensorboard()
        if tensorboard is not None and self.trainer.is_global_zero:
            report.log_test_report(tensorboard.experiment, self.test_results, self.global_step)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Class probabilities, shape (batch, 10)."""
        return self(batch[0]).softmax(dim=1)

    def _evaluate(
        self, batch: tuple[torch.Tensor, torch.Tensor], loss_metric: SampleMean, acc_metric
    ) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        # per-sample losses summed in float64: the same total whichever batches (or ranks) the samples fall in
        losses = F.cross_entropy(logits, y, reduction="none").to(loss_metric.mean_value.dtype)
        loss_metric.update(losses.mean(), len(y))
        acc_metric.update(logits, y)
        return logits

    def _log_and_reset(self, stage: str, loss_metric: SampleMean, acc_metric: Metric) -> float:
        """Log the epoch's exact loss and accuracy over all samples (and ranks); returns the accuracy."""
        loss, accuracy = loss_metric.compute().float(), acc_metric.compute()
        loss_metric.reset()
        acc_metric.reset()
        self.log_dict({f"{stage}_loss": loss, f"{stage}_acc": accuracy}, prog_bar=stage != "train")
        return accuracy.item()

    def setup(self, stage: str) -> None:
        if self.trainer.strategy.root_device.type == "mps":
            for loss_metric in (self.train_loss, self.val_loss, self.test_loss):
                loss_metric.set_dtype(torch.float32)

    def _tensorboard(self) -> TensorBoardLogger | None:
        return next((logger for logger in self.loggers if isinstance(logger, TensorBoardLogger)), None)

    def _log_val_confusion_matrix(self) -> None:
        """Draw the epoch's validation confusion matrix in TensorBoard (rank 0; not for the sanity check)."""
        tensorboard = self._tensorboard()
        if tensorboard is None or self.trainer.sanity_checking:
            self.val_confusion.reset()
            return
        confusion = self.val_confusion.compute()  # gathers from all ranks: every rank calls it
        self.val_confusion.reset()
        if self.trainer.is_global_zero:
            # drawn every epoch, so a bare heat map (1 ms) rather than the annotated figure (~0.4 s)
            pixels, step = report.confusion_matrix_pixels(confusion), self.global_step
            tensorboard.experiment.add_image("val_confusion_matrix", pixels, step, dataformats="HWC")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["val_acc_best"] = self.val_acc_best

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_acc_best = checkpoint.get("val_acc_best", 0.0)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameters())
        if self.scheduler is None:
            return optimizer
        if _wants_total_steps(self.scheduler):
            scheduler = self.scheduler(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler(optimizer)}
