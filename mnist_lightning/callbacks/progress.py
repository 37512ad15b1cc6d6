"""The progress bar every command shows, and how the callbacks print without writing onto its line."""

from __future__ import annotations

import sys
from typing import IO, Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only

from mnist_lightning import compat

BARS = ("train_progress_bar", "val_progress_bar", "test_progress_bar", "predict_progress_bar")


class ProgressBar(TQDMProgressBar):
    """Lightning's progress bar without ``v_num`` (the run's folder is printed where it matters), with the bar
    of an epoch resumed in its middle counting on from the batches done before, and the messages of an
    evaluation (its report, its summary) printed once its bar is finished, below it (see :func:`tell`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._held: list[tuple[str, IO[str] | None]] | None = None  # waiting for the evaluation's bar

    def tell(self, message: str, file: IO[str] | None = None) -> None:
        """Print ``message`` after the running evaluation's bar is closed, above an open bar, else now."""
        if self._held is not None:
            self._held.append((message, file))
        else:
            tell_beside(self, message, file)

    def _hold(self, trainer: L.Trainer) -> None:
        if self.is_enabled and trainer.state.fn != TrainerFn.FITTING:
            self._held = []

    def _release(self) -> None:
        held, self._held = self._held or [], None
        for message, file in held:
            print(message, file=file, flush=True)

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        if compat.restarted_mid_epoch(trainer):  # Lightning does not call on_train_epoch_start for it
            self.on_train_epoch_start(trainer)
            bar = self.train_progress_bar
            bar.n = bar.initial = compat.training_batches_completed(trainer)
            if not bar.disable:
                bar.refresh()

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def on_validation_start(self, trainer, pl_module):
        super().on_validation_start(trainer, pl_module)
        self._hold(trainer)

    def on_validation_end(self, trainer, pl_module):
        super().on_validation_end(trainer, pl_module)
        self._release()

    def on_test_start(self, trainer, pl_module):
        super().on_test_start(trainer, pl_module)
        self._hold(trainer)

    def on_test_end(self, trainer, pl_module):
        super().on_test_end(trainer, pl_module)
        self._release()

    def on_predict_start(self, trainer, pl_module):
        super().on_predict_start(trainer, pl_module)
        self._hold(trainer)

    def on_predict_end(self, trainer, pl_module):
        super().on_predict_end(trainer, pl_module)
        self._release()

    def on_exception(self, trainer, pl_module, exception):
        for bar in open_bars(self):  # a stopped run's last bars end their lines before anything is said
            bar.close()
        self._release()


def open_bars(progress: TQDMProgressBar) -> list[Any]:
    """The tqdm bars of ``progress`` that are drawn now (a closed tqdm bar is disabled)."""
    bars = []
    for name in BARS:
        try:
            bar = getattr(progress, name)
        except TypeError:  # not made yet
            continue
        if bar is not None and not bar.disable:
            bars.append(bar)
    return bars


def tell_beside(progress: TQDMProgressBar, message: str, file: IO[str] | None = None) -> None:
    """Print ``message`` on lines of its own: above an open bar of ``progress`` (tqdm clears and redraws it),
    else as it is."""
    bars = open_bars(progress)
    if bars:
        bars[0].write(message, file=file or sys.stdout)
    else:
        print(message, file=file, flush=True)


def tell(trainer: L.Trainer | None, message: str, file: IO[str] | None = None) -> None:
    """How the project prints a message to the user (rank 0 decides whether to call), the command line
    before a ``Trainer`` exists (``trainer`` None) and the callbacks alike: never onto a progress bar's line.
    With the project's bar an evaluation's messages follow its finished bar; with another tqdm bar they are
    written above it; without a bar they are printed. Without a trainer, only the first process of a
    distributed run prints."""
    if trainer is None:
        if rank_zero_only.rank == 0:
            print(message, file=file, flush=True)
        return
    progress = trainer.progress_bar_callback
    if isinstance(progress, ProgressBar):
        progress.tell(message, file)
    elif isinstance(progress, TQDMProgressBar) and progress.is_enabled:
        tell_beside(progress, message, file)
    else:
        print(message, file=file, flush=True)
