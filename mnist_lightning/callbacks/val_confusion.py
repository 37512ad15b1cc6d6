"""A validation confusion matrix per epoch in TensorBoard."""

from __future__ import annotations

from typing import Any

import lightning as L
from torchmetrics.classification import MulticlassConfusionMatrix

from mnist_lightning.callbacks.outputs import log_step, tensorboard_of


class ValConfusionMatrix(L.Callback):
    """Adds each epoch's validation confusion matrix to TensorBoard as an image (``val_confusion_matrix``).

    Counted from the logits ``validation_step`` returns, over all devices; drawn by rank 0 as a bare heat map
    (milliseconds, not the test report's annotated figure), not for the sanity check, and not at all
    without a TensorBoard logger.
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
        if trainer.sanity_checking or tensorboard_of(trainer) is None:
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
        if trainer.is_global_zero:
            from mnist_lightning.callbacks.report_drawing import confusion_matrix_pixels

            pixels = confusion_matrix_pixels(confusion)
            tensorboard_of(trainer).experiment.add_image(
                "val_confusion_matrix", pixels, log_step(trainer), dataformats="HWC"
            )
