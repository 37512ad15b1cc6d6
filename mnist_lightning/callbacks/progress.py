"""The progress bar every command shows."""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


class ProgressBar(TQDMProgressBar):
    """Lightning's progress bar without ``v_num`` (the run's folder is printed where it matters), and with the
    bar of an epoch resumed in its middle, counting on from the batches done before."""

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        if trainer.fit_loop.restarted_mid_epoch:  # Lightning does not call on_train_epoch_start for it
            self.on_train_epoch_start(trainer)
            bar = self.train_progress_bar
            bar.n = bar.initial = trainer.fit_loop.epoch_loop.batch_progress.current.completed
            if not bar.disable:
                bar.refresh()

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items
