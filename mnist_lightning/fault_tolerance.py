"""Nothing lost when a run is stopped: whole-file checkpoint writes, and a checkpoint on Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each local checkpoint to a temporary file beside it, then renames it into place.

    Lightning's own writer stages the file in the system temp folder and moves it over; when that folder is
    on another filesystem than the checkpoints (a local /tmp and shared storage, as on clusters) the move is
    a copy, and a kill during the copy leaves a truncated ``last.ckpt`` where a good one was. A rename within
    one folder is atomic: after SIGKILL or a crash the path holds the old checkpoint or the new one, whole.
    URLs (``s3://``, ``file://``) still go through Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options=None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")  # left behind only by a kill, then reused
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)


class InterruptCheckpoint(Checkpoint):
    """On SIGTERM or Ctrl-C during ``fit``: finish the current step, save ``interrupted.ckpt``, say where.

    The checkpoint sits beside the run's other checkpoints and resumes mid-epoch exactly (``fit --ckpt_path
    last`` picks it up); a later ``fit`` that completes in the same folder removes it. Ctrl-C is handled like
    Lightning handles SIGTERM, at the end of the current step, so the checkpoint never holds a half-applied
    optimizer step; a second Ctrl-C stops at once and saves nothing. Other errors save nothing either: the
    last epoch's ``last.ckpt`` is the state to go back to.

    (Not a Lightning ``OnExceptionCheckpoint``: with one of those, Lightning turns every plain ``fit`` into
    ``fit(ckpt_path="last")`` and warns about it; resuming is ``--ckpt_path last``'s job here.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.dirpath = "."  # the run's checkpoint folder once the run has one
        self.signal = signal.SIGTERM
        self.stopped_at_once = False  # a second Ctrl-C stopped the run (Lightning then exits with status 1)
        self._default_ctrl_c: Any = None

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, "interrupted.ckpt")

    @property
    def exit_status(self) -> int:
        """The status a shell gives a process stopped by the run's interrupting signal: 130 or 143."""
        return 128 + (signal.SIGINT if self.stopped_at_once else self.signal)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._default_ctrl_c = signal.signal(signal.SIGINT, self._stop_after_this_step)

    def _stop_after_this_step(self, signum: int, frame: Any) -> None:
        self.signal = signal.SIGINT
        self._restore_ctrl_c()  # a second Ctrl-C raises KeyboardInterrupt at once
        os.kill(os.getpid(), signal.SIGTERM)  # Lightning's SIGTERM handling stops after this step

    def _restore_ctrl_c(self) -> None:
        if self._default_ctrl_c is not None:
            signal.signal(signal.SIGINT, self._default_ctrl_c)
            self._default_ctrl_c = None

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException):
        self._restore_ctrl_c()
        if trainer.state.fn != TrainerFn.FITTING or not isinstance(
            exception, (KeyboardInterrupt, SIGTERMException)
        ):
            return
        reason = (
            "Ctrl-C"
            if self.signal == signal.SIGINT or isinstance(exception, KeyboardInterrupt)
            else "SIGTERM"
        )
        if isinstance(exception, KeyboardInterrupt):
            self.stopped_at_once = True
            message = (
                f"Stopped ({reason}) at once: nothing saved; --ckpt_path last resumes from the last epoch."
            )
        elif trainer.global_step == 0:
            message = f"Interrupted ({reason}) before the first training step: nothing to resume."
        else:
            self.dirpath = _checkpoint_folder(trainer)
            trainer.save_checkpoint(self.ckpt_path, weights_only=False)
            message = (
                f"Interrupted ({reason}) at epoch {trainer.current_epoch}, step {trainer.global_step}: "
                f"resumable checkpoint saved to {self.ckpt_path} (continue: the same command plus "
                f"--ckpt_path last)."
            )
        if trainer.is_global_zero:
            print(message, file=sys.stderr, flush=True)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_ctrl_c()
        if stage == TrainerFn.FITTING:
            self.dirpath = _checkpoint_folder(trainer)
            trainer.strategy.remove_checkpoint(self.ckpt_path)


def _checkpoint_folder(trainer: L.Trainer) -> str:
    """Where the run's ModelCheckpoint writes, or ``<log_dir>/checkpoints`` when there is none."""
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return callback.dirpath
    return os.path.join(trainer.log_dir or trainer.default_root_dir, "checkpoints")
