"""A run's folder: evaluations kept with the run they evaluate, hyperparameters for TensorBoard's HPARAMS
tab (each logger's summary of them), the config saved where it belongs, and no folder left behind by a run
that failed before it trained."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn

from mnist_lightning import compat
from mnist_lightning.callbacks.outputs import (
    is_event_file,
    log_step,
    output_dir,
    tensorboard_of,
    writes_files,
)
from mnist_lightning.callbacks.trackers import trackers_of
from mnist_lightning.run_layout import CONFIG_FILE, run_folder

HPARAMS_METRICS = ("val_acc_best", "test_acc")  # the columns the HPARAMS tab ranks runs by


class RunFolder(L.Callback):
    """A run's TensorBoard entries and folder: the HPARAMS summary when training starts; an evaluation's
    metrics and pictures at its checkpoint's step, in the evaluation's folder (as the command line
    configures the logger, see ``cli/ckpt_path.py``), replacing those of the same evaluation before, and a
    test's HPARAMS session there; the folder of a run that fails before its first training step (or of an
    evaluation that fails) removed when this run created it."""

    def __init__(self, hyperparameters: dict[str, Any]) -> None:
        self.hyperparameters = hyperparameters
        self.folder: Path | None = None

    def note_new_folder(self, trainer: L.Trainer) -> None:
        """Called before the run starts (the Trainer creates the logger's folder before any callback hook)."""
        folder = run_folder(trainer)  # every rank asks: a broadcast under DDP
        if trainer.is_global_zero:
            while not folder.parent.exists():  # the outermost folder this run creates
                folder = folder.parent
            self.folder = None if folder.exists() else folder

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            for tracker in trackers_of(trainer):
                tracker.add_hyperparameters(self.hyperparameters, HPARAMS_METRICS, trainer.global_step)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        tensorboard = tensorboard_of(trainer)
        if stage == TrainerFn.FITTING or tensorboard is None or tensorboard.sub_dir is None:
            return
        output_dir(trainer)  # says whether an earlier evaluation is replaced, before this one writes there
        if trainer.is_global_zero:  # the data is loaded: the evaluation runs, and replaces the one before
            current = Path(compat.tensorboard_event_file(tensorboard)).name
            for path in Path(tensorboard.log_dir).iterdir():
                if is_event_file(path) and path.name != current:
                    path.unlink()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if trainer.state.fn != TrainerFn.FITTING:  # an evaluation logs at the step its checkpoint was saved
            compat.set_logging_step(trainer, checkpoint.get("global_step", 0), checkpoint.get("epoch"))

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tensorboard = tensorboard_of(trainer)
        if tensorboard is not None and tensorboard.sub_dir is not None and trainer.is_global_zero:
            compat.add_hparams_summary(
                tensorboard, self.hyperparameters, HPARAMS_METRICS, log_step(trainer), experiment=False
            )

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException):
        trained = trainer.state.fn == TrainerFn.FITTING and trainer.global_step > 0
        if self.folder is not None and not trained and trainer.is_global_zero:
            for logger in trainer.loggers:
                if (
                    isinstance(logger, TensorBoardLogger)
                    and compat.tensorboard_experiment_if_open(logger) is not None
                ):
                    logger.experiment.close()
            shutil.rmtree(self.folder, ignore_errors=True)


class RunConfig(SaveConfigCallback):
    """``config.yaml``: a fit's in its run folder (re-runnable), an evaluation's beside its files, so
    evaluating a run's checkpoint never replaces the config that trained it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"config_filename": CONFIG_FILE, **kwargs})

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == TrainerFn.FITTING:
            super().setup(trainer, pl_module, stage)

    def _save_beside_the_files(self, trainer: L.Trainer) -> None:  # once the checkpoint path is known
        if not writes_files(trainer):
            return
        folder = output_dir(trainer)
        if trainer.is_global_zero:
            folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, folder / self.config_filename, skip_none=False, overwrite=True)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._save_beside_the_files(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_beside_the_files(trainer)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_beside_the_files(trainer)
