"""Nothing lost when a run is stopped: a resumable checkpoint on Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lightning.callbacks.progress import tell
from mnist_lightning.run_layout import INTERRUPTED_CHECKPOINT, checkpoint_folder, run_folder


class InterruptCheckpoint(Checkpoint):
    """On SIGTERM or Ctrl-C during ``fit``: finish the current step, save ``interrupted.ckpt``, say where.

    The checkpoint sits beside the run's other checkpoints and resumes mid-epoch exactly (``fit --ckpt_path
    last`` picks it up); a later ``fit`` that completes in the same folder removes it. Ctrl-C is handled like
    Lightning handles SIGTERM, at the end of the current step, so the checkpoint never holds a half-applied
    optimizer step; a second Ctrl-C before then stops at once and saves nothing. Once the run is stopping,
    further Ctrl-Cs are ignored, so they cannot break the save or the exit (``main`` exits with 130 or 143).
    Other errors save nothing either: the last epoch's ``last.ckpt`` is the state to go back to.

    (Not a Lightning ``OnExceptionCheckpoint``: with one of those, Lightning turns every plain ``fit`` into
    ``fit(ckpt_path="last")`` and warns about it; resuming is ``--ckpt_path last``'s job here.)
    """

    def __init__(self, resume_hint: str = "the same command plus --ckpt_path last") -> None:
        super().__init__()
        self.resume_hint = resume_hint  # how the run goes on, for the message (a sweep's trial: the sweep)
        self.dirpath = "."  # the run's checkpoint folder once the run has one
        self.signal = signal.SIGTERM
        self.interrupted = False  # the run was stopped by Ctrl-C or SIGTERM
        self._default_ctrl_c: Any = None

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, INTERRUPTED_CHECKPOINT)

    @property
    def exit_status(self) -> int:
        """The status a shell gives a process stopped by the run's interrupting signal: 130 or 143."""
        return 128 + self.signal

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._default_ctrl_c = signal.signal(signal.SIGINT, self._stop_after_this_step)

    def _stop_after_this_step(self, signum: int, frame: Any) -> None:
        self.signal = signal.SIGINT
        signal.signal(signal.SIGINT, _stop_at_once)
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's SIGTERM handling stops after this step

    def _restore_ctrl_c(self) -> None:
        if self._default_ctrl_c is not None:
            signal.signal(signal.SIGINT, self._default_ctrl_c)
            self._default_ctrl_c = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException):
        stopped = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        if not stopped or trainer.state.fn != TrainerFn.FITTING:
            self._restore_ctrl_c()
            return
        self.interrupted = True
        if isinstance(exception, KeyboardInterrupt):
            self.signal = signal.SIGINT
        if threading.current_thread() is threading.main_thread():  # the process is on its way out
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        reason = "Ctrl-C" if self.signal == signal.SIGINT else "SIGTERM"
        if isinstance(exception, KeyboardInterrupt):
            message = f"Stopped ({reason}) at once: nothing saved; continue with {self.resume_hint}."
        elif trainer.global_step == 0:
            message = f"Interrupted ({reason}) before the first training step: nothing to resume."
        else:
            self.dirpath = _checkpoint_folder(trainer)
            trainer.save_checkpoint(self.ckpt_path, weights_only=False)
            message = (
                f"Interrupted ({reason}) at epoch {trainer.current_epoch}, step {trainer.global_step}: "
                f"resumable checkpoint saved to {self.ckpt_path} (continue: {self.resume_hint})."
            )
        if trainer.is_global_zero:
            tell(trainer, message, file=sys.stderr)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.interrupted:
            self._restore_ctrl_c()
        if stage == TrainerFn.FITTING:
            self.dirpath = _checkpoint_folder(trainer)
            trainer.strategy.remove_checkpoint(self.ckpt_path)


def _stop_at_once(signum: int, frame: Any) -> None:
    """A second Ctrl-C before the step ends: stop now (Lightning ignores Ctrl-C while it shuts down)."""
    raise KeyboardInterrupt


def _checkpoint_folder(trainer: L.Trainer) -> str:
    """Where the run's ModelCheckpoint writes, or ``<log_dir>/checkpoints`` when there is none."""
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return callback.dirpath
    return str(checkpoint_folder(run_folder(trainer)))
