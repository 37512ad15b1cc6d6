"""The test report: classification report, confusion matrix and most confident mistakes, as files and in
TensorBoard."""

from __future__ import annotations

from typing import Any, NamedTuple

import lightning as L
import torch
from torchmetrics import Metric
from torchmetrics.classification import MulticlassConfusionMatrix

from mnist_lightning.callbacks.outputs import class_names, log_step, output_dir, writes_files
from mnist_lightning.callbacks.progress import tell
from mnist_lightning.callbacks.trackers import showing_images
from mnist_lightning.run_layout import REPORT_FILES

GALLERY_SIZE = 32


class Mistakes(NamedTuple):
    """Misclassified samples, surest first: inputs (N, 28, 28), true and predicted class, probability."""

    images: torch.Tensor
    targets: torch.Tensor
    preds: torch.Tensor
    confidences: torch.Tensor


def _merge_ranks(stacked: torch.Tensor) -> torch.Tensor:
    """(world_size, k, ...) states gathered from all ranks -> (world_size * k, ...)."""
    return stacked.flatten(0, 1)


class MostConfidentMistakes(Metric):
    """The ``k`` misclassified samples whose wrong prediction had the highest probability, over all ranks.

    Each rank keeps a fixed-size top ``k`` (padded with confidence -1), so the states gather across ranks
    however many samples each rank saw; ``compute`` merges them and returns a :class:`Mistakes` on the CPU.
    """

    full_state_update = False

    def __init__(self, k: int = GALLERY_SIZE, image_size: int = 28, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.k = k
        self.add_state("confidences", torch.full((k,), -1.0), dist_reduce_fx=_merge_ranks)
        self.add_state("images", torch.zeros(k, image_size, image_size), dist_reduce_fx=_merge_ranks)
        self.add_state("targets", torch.zeros(k, dtype=torch.long), dist_reduce_fx=_merge_ranks)
        self.add_state("preds", torch.zeros(k, dtype=torch.long), dist_reduce_fx=_merge_ranks)

    def update(self, inputs: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        confidences, preds = logits.detach().float().softmax(dim=1).max(dim=1)
        wrong = preds != targets
        self._keep_top(
            torch.cat([self.confidences, confidences[wrong]]),
            torch.cat([self.images, inputs[wrong].detach().float().reshape(-1, *self.images.shape[1:])]),
            torch.cat([self.targets, targets[wrong]]),
            torch.cat([self.preds, preds[wrong]]),
        )

    def _keep_top(self, confidences, images, targets, preds) -> None:
        top = confidences.topk(self.k).indices
        self.confidences, self.images = confidences[top], images[top]
        self.targets, self.preds = targets[top], preds[top]

    def compute(self) -> Mistakes:
        confidences = self.confidences.reshape(-1)
        order = confidences.argsort(descending=True, stable=True)[: self.k]
        order = order[confidences[order] >= 0]
        images = self.images.reshape(-1, *self.images.shape[-2:])
        return Mistakes(
            images[order].cpu(),
            self.targets.reshape(-1)[order].cpu(),
            self.preds.reshape(-1)[order].cpu(),
            confidences[order].cpu(),
        )


class TestReport(L.Callback):
    """After ``test``: the classification report printed, and written with the confusion matrix and a gallery
    of the most confident mistakes (``REPORT_FILES``) into the run's folder; the same pictures and
    text go to each logger that shows pictures (TensorBoard, MLflow, W&B; ``callbacks/trackers.py``).

    Counted from the logits ``test_step`` returns, over all devices (rank 0 draws and writes). Rows and
    axes are labelled with the data module's class names.
    """

    __test__ = False  # a callback, not a test class for pytest to collect

    def __init__(self) -> None:
        self.confusion: MulticlassConfusionMatrix | None = None
        self.mistakes: MostConfidentMistakes | None = None

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.confusion = self.mistakes = None

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        images, targets = batch
        if self.confusion is None:  # as many classes as the network has outputs
            self.confusion = MulticlassConfusionMatrix(outputs.shape[1], validate_args=False).to(
                outputs.device
            )
            self.mistakes = MostConfidentMistakes(image_size=images.shape[-1]).to(outputs.device)
        self.confusion.update(outputs, targets)
        self.mistakes.update(images, outputs, targets)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.confusion is None:
            return
        # compute() gathers from all ranks, so every rank calls it; only rank 0 draws
        confusion, mistakes = self.confusion.compute().cpu(), self.mistakes.compute()
        self.confusion = self.mistakes = None
        folder = output_dir(trainer) if writes_files(trainer) else None
        if not trainer.is_global_zero:
            return
        from mnist_lightning.callbacks import (
            report_drawing as report,  # matplotlib, only once a report is drawn
        )

        classes = class_names(trainer, confusion.shape[0])
        if folder is None:  # fast_dev_run: the numbers, no pictures or files
            numbers = report.classification_report(confusion, classes)
            tell(trainer, report.format_classification_report(numbers).rstrip("\n"))
            return
        drawn = report.draw_test_report(confusion, mistakes, classes)
        report.write_test_report(folder, drawn)
        tell(trainer, report.format_classification_report(drawn.numbers).rstrip("\n"))
        tell(trainer, f"Test report written to {folder}: {', '.join(REPORT_FILES)}")
        for tracker in showing_images(trainer):
            report.log_test_report(tracker, drawn, log_step(trainer))
