"""The network (an MLP) and the LightningModule that trains, validates and tests it."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_lightning.errors import UserError

NUM_CLASSES = 10


class MLP(nn.Module):
    """A multilayer perceptron on flattened 28x28 digits: Linear -> [BatchNorm] -> ReLU -> [Dropout] per hidden layer."""

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


def _takes_total_steps(scheduler: LRSchedulerCallable) -> bool:
    """Whether the scheduler takes ``total_steps``; from the CLI it is a partial naming every argument."""
    keywords = getattr(scheduler, "keywords", {})
    return "total_steps" in keywords or "total_steps" in inspect.signature(scheduler).parameters


def _accuracy() -> MulticlassAccuracy:
    return MulticlassAccuracy(num_classes=NUM_CLASSES, average="micro", validate_args=False)


def _mean() -> MeanMetric:
    return MeanMetric(nan_strategy="disable")


class MNISTClassifier(L.LightningModule):
    """Classifies MNIST digits with an :class:`MLP` trained on cross-entropy.

    Metrics are torchmetrics objects accumulated on the device and logged once per epoch (exact under DDP:
    states are summed across ranks). Logged: ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``,
    ``val_acc_best``, ``test_loss``, ``test_acc``.

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
            raise UserError(f"model.hidden_sizes must be a non-empty list of positive widths, got {hidden_sizes}.")
        if not 0 <= dropout < 1:
            raise UserError(f"model.dropout must be in [0, 1), got {dropout}.")
        if not 0 <= label_smoothing < 1:
            raise UserError(f"model.label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.save_hyperparameters()
        self.net = MLP(hidden_sizes, dropout=dropout, batch_norm=batch_norm)
        self.label_smoothing = label_smoothing
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loss, self.val_loss, self.test_loss = _mean(), _mean(), _mean()
        self.train_acc, self.val_acc, self.test_acc = _accuracy(), _accuracy(), _accuracy()
        self.val_acc_best = 0.0

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
        self._evaluate(batch, self.val_loss, self.val_acc)

    def on_validation_epoch_end(self) -> None:
        accuracy = self._log_and_reset("val", self.val_loss, self.val_acc)
        if self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking:
            self.val_acc_best = max(self.val_acc_best, accuracy)
            # hp_metric links the run's hyperparameters to its best accuracy in TensorBoard's HPARAMS tab
            self.log_dict({"val_acc_best": self.val_acc_best, "hp_metric": self.val_acc_best})

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_loss, self.test_acc)

    def on_test_epoch_end(self) -> None:
        self._log_and_reset("test", self.test_loss, self.test_acc)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Class probabilities, shape (batch, 10)."""
        return self(batch[0]).softmax(dim=1)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], loss_metric: MeanMetric, acc_metric) -> None:
        x, y = batch
        logits = self(x)
        loss_metric.update(F.cross_entropy(logits, y), len(y))
        acc_metric.update(logits, y)

    def _log_and_reset(self, stage: str, loss_metric: MeanMetric, acc_metric: MulticlassAccuracy) -> float:
        """Log the epoch's exact loss and accuracy over all samples (and ranks); returns the accuracy."""
        loss, accuracy = loss_metric.compute(), acc_metric.compute()
        loss_metric.reset()
        acc_metric.reset()
        self.log_dict({f"{stage}_loss": loss, f"{stage}_acc": accuracy}, prog_bar=stage != "train")
        return accuracy.item()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["val_acc_best"] = self.val_acc_best

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_acc_best = checkpoint.get("val_acc_best", 0.0)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameters())
        if self.scheduler is None:
            return optimizer
        if _takes_total_steps(self.scheduler):
            scheduler = self.scheduler(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler(optimizer)}
