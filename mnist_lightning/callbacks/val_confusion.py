"""A validation confusion matrix per epoch, for each logger that shows pictures."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn
from torchmetrics.classification import MulticlassConfusionMatrix

from mnist_lightning.callbacks.outputs import class_names, log_step
from mnist_lightning.callbacks.trackers import showing_images


class ValConfusionMatrix(L.Callback):
    """Adds each epoch's validation confusion matrix as a labelled image to each logger that shows pictures
    (TensorBoard, MLflow, W&B; ``callbacks/trackers.py``).

    Counted from the logits ``validation_step`` returns, over all devices; drawn by rank 0 with the counts,
    the class names and the accuracy (in milliseconds), not for the sanity check, and not at all without
    such a logger (CSV alone). TensorBoard keeps 10 images of a tag (its ``--samples_per_plugin`` default), so
    training logs ten epochs per tag, ``val_confusion_matrix/epochs_000-009``, ``.../epochs_010-019``, ...:
    every epoch's image is kept, each tag's slider going through its ten. ``validate`` logs one,
    ``val_confusion_matrix``.
    """

    def __init__(self) -> None:
        self.confusion: MulticlassConfusionMatrix | None = None

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if trainer.sanity_checking or not showing_images(trainer):
            return
        if self.confusion is None:  # as many classes as the network has outputs
            self.confusion = MulticlassConfusionMatrix(outputs.shape[1], validate_args=False).to(
                outputs.device
            )
        self.confusion.update(outputs, batch[1])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.confusion is None:
            return
        confusion = self.confusion.compute()  # gathers from all ranks: every rank calls it
        self.confusion = None
        if not trainer.is_global_zero:
            return
        from mnist_lightning.callbacks.report_drawing import confusion_matrix_pixels

        total, right = int(confusion.sum()), int(confusion.trace())
        title = f"Validation: {right / max(total, 1):.2%} of {total} images right"
        tag = "val_confusion_matrix"
        if trainer.state.fn == TrainerFn.FITTING:
            epoch, first = trainer.current_epoch, trainer.current_epoch // 10 * 10
            title, tag = f"Epoch {epoch}. {title}", f"{tag}/epochs_{first:03d}-{first + 9:03d}"
        pixels = confusion_matrix_pixels(confusion, class_names(trainer, confusion.shape[0]), title)
        for tracker in showing_images(trainer):
            tracker.add_image(tag, pixels, log_step(trainer))
