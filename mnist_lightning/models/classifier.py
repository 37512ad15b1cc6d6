"""The training recipe: a LightningModule that trains an injected network with cross-entropy."""

from __future__ import annotations

import inspect
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from torch import nn
from torch.optim.lr_scheduler import CyclicLR, OneCycleLR
from torchmetrics import MaxMetric
from torchmetrics.classification import MulticlassAccuracy

from mnist_lightning import compat
from mnist_lightning.errors import UserError
from mnist_lightning.models.metrics import SampleMean, TrainAccuracy

PER_STEP_SCHEDULERS = (OneCycleLR, CyclicLR)  # schedules laid out in optimizer steps, not epochs


class MNISTClassifier(L.LightningModule):
    """Trains ``net`` (any module mapping images to logits, see ``models/nets.py``) on cross-entropy.

    Epoch metrics are torchmetrics objects that Lightning computes (summed across devices) and resets at each
    epoch's end; they are exact sums over samples: ``train_loss``, ``train_acc``,
    ``val_loss``, ``val_acc``, ``val_acc_best``, ``test_loss``, ``test_acc``. ``validation_step`` and
    ``test_step`` return the logits for the callbacks that draw and write reports.

    Args:
        net: the network; from the command line ``model.net: {class_path: ..., init_args: ...}``.
        optimizer: the optimizer class and its arguments (default Adam, lr 1e-3).
        scheduler: an optional learning-rate scheduler. One whose length is left open (``OneCycleLR``
            without ``total_steps`` or ``epochs``) gets the run's total number of optimizer steps.
        scheduler_interval: when the scheduler steps; by default every optimizer step for ``OneCycleLR`` and
            ``CyclicLR`` (schedules counted in steps), every epoch for the others.
        label_smoothing: cross-entropy label smoothing for training, in [0, 1).
        num_classes: classes of the data set (set from ``data.dataset`` by the command line).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: Literal["step", "epoch"] | None = None,
        label_smoothing: float = 0.0,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        if not 0 <= label_smoothing < 1:
            raise UserError(f"model.label_smoothing must be in [0, 1), got {label_smoothing}.")
        # From the command line the hyperparameters are the parsed config (the network as class_path and
        # init_args, so a checkpoint rebuilds its own network); from Python the network object is left out.
        self.save_hyperparameters(ignore=[] if compat.hyperparameters_given_by_cli() else ["net"])
        self.net, self.optimizer, self.scheduler = net, optimizer, scheduler
        self.scheduler_interval, self.label_smoothing = scheduler_interval, label_smoothing
        self.train_loss, self.val_loss, self.test_loss = SampleMean(), SampleMean(), SampleMean()
        self.train_acc = TrainAccuracy()
        self.val_acc, self.test_acc = (MulticlassAccuracy(num_classes, average="micro") for _ in range(2))
        self.val_acc_best = MaxMetric()  # the best val_acc of the fit (kept in checkpoints)
        # one image: the model summary shows each layer's FLOPs and shapes for it (not a column of zeros)
        self.example_input_array = torch.zeros(1, 1, 28, 28)

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
        self.log_dict({"train_loss": self.train_loss, "train_acc": self.train_acc})

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, self.val_loss, self.val_acc)

    def on_validation_epoch_end(self) -> None:
        self.log_dict({"val_loss": self.val_loss, "val_acc": self.val_acc}, prog_bar=True)
        if self.trainer.state.fn == TrainerFn.FITTING and not self.trainer.sanity_checking:
            self.val_acc_best.update(self.val_acc.compute())
            # the same value on every rank (val_acc is synchronized): the reduction changes nothing
            self.log("val_acc_best", self.val_acc_best.compute(), sync_dist=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._evaluate(batch, self.test_loss, self.test_acc)

    def on_test_epoch_end(self) -> None:
        self.log_dict({"test_loss": self.test_loss, "test_acc": self.test_acc}, prog_bar=True)

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Class probabilities, shape (batch, classes)."""
        return self(batch[0]).softmax(dim=1)

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], loss_metric: SampleMean, acc_metric):
        x, y = batch
        logits = self(x)
        # per-sample losses summed in float64: the same total whichever batches (or ranks) the samples fall in
        losses = F.cross_entropy(logits, y, reduction="none").to(loss_metric.mean_value.dtype)
        loss_metric.update(losses.mean(), len(y))
        acc_metric.update(logits, y)
        return logits

    def setup(self, stage: str) -> None:
        if self.trainer.strategy.root_device.type == "mps":  # no float64 there
            for loss_metric in (self.train_loss, self.val_loss, self.test_loss):
                loss_metric.set_dtype(torch.float32)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["val_acc_best"] = self.val_acc_best.max_value.item()  # -inf before the first validation
        trainer = compat.attached_trainer(self)
        if trainer is not None and not compat.on_last_batch_of_epoch(trainer):
            # mid-epoch: the epoch's running sums, so a resumed epoch logs what an uninterrupted one would
            checkpoint["train_sums"] = [self.train_loss.metric_state, self.train_acc.metric_state]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_acc_best.reset()  # the checkpoint's best, not the larger of it and this module's
        self.val_acc_best.update(checkpoint.get("val_acc_best", 0.0))
        for metric, states in zip(
            (self.train_loss, self.train_acc), checkpoint.get("train_sums", [{}, {}]), strict=True
        ):
            for name, value in states.items():
                getattr(metric, name).copy_(value)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameters())
        if self.scheduler is None:
            return optimizer
        if _length_left_open(self.scheduler):
            scheduler = self.scheduler(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        else:
            scheduler = self.scheduler(optimizer)
        per_step = isinstance(scheduler, PER_STEP_SCHEDULERS)
        interval = self.scheduler_interval or ("step" if per_step else "epoch")
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}


def _length_left_open(scheduler: LRSchedulerCallable) -> bool:
    """True for a scheduler such as OneCycleLR that takes ``total_steps`` and was given no length."""
    keywords = getattr(scheduler, "keywords", None)  # the arguments a config bound (a functools.partial)
    if keywords is not None and "total_steps" in keywords:
        return keywords["total_steps"] is None and keywords.get("epochs") is None
    try:
        parameters = inspect.signature(scheduler).parameters
    except (TypeError, ValueError):
        return False
    return "total_steps" in parameters and not (keywords or {}).get("epochs")
