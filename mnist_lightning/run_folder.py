"""A run's folder: evaluations kept with the run they evaluate, hyperparameters for TensorBoard's HPARAMS
tab, the config saved where it belongs, and no folder left behind by a run that failed before it trained."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn

from mnist_lightning.callbacks.outputs import output_dir, tensorboard_of

HPARAMS_METRICS = ("val_acc_best", "test_acc")  # the columns the HPARAMS tab ranks runs by
# settings that change where or how fast a run goes, not what it learns: left out of the HPARAMS tab
NOT_HYPERPARAMETERS = {"data.data_dir", "data.num_workers", "data.pin_memory", "data.data_on_device",
                       "data.eval_batch_size", "data.invert", "data.predict_path", "data.loader"}  # fmt: skip
RUN_FILES = ("hparams.yaml", "summary.json")  # a folder holding one of these is a run's folder
SWITCHES = {"num_classes", "_class_path", "_instantiator", "fused", "foreach", "capturable", "differentiable"}


def run_folder_of(ckpt_path: str) -> Path | None:
    """The run that saved ``ckpt_path``: ``<run>/checkpoints/*.ckpt`` where ``<run>`` holds the logger's
    ``hparams.yaml`` or the ``summary.json`` of fit (a ``version_N``, a sweep's ``trial_N``, a moved run)."""
    checkpoint = Path(ckpt_path).resolve()
    run = checkpoint.parent.parent
    if checkpoint.parent.name == "checkpoints" and any((run / f).is_file() for f in RUN_FILES):
        return run
    return None


def flat_hyperparameters(config: Namespace) -> dict[str, Any]:
    """The run's settings as TensorBoard shows them: ``optimizer: Adam``, ``optimizer.lr: 0.001``,
    ``net: MLP``, ``net.hidden_sizes: [128, 64]``, ``data.batch_size: 64``, ``seed: 42`` ..."""
    flat: dict[str, Any] = {"seed": config.get("seed_everything")}
    for prefix, section in (("", config.model), ("data.", config.data)):
        for key, value in section.as_dict().items():
            _flatten(flat, f"{prefix}{key}", value)
    flat["max_epochs"] = config.trainer.get("max_epochs")
    return {
        key: value
        for key, value in flat.items()
        if value is not None and key not in NOT_HYPERPARAMETERS and key.rsplit(".", 1)[-1] not in SWITCHES
    }


def _flatten(flat: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict) and "class_path" in value:  # a class and its arguments: its name, then each
        flat[key] = value["class_path"].rsplit(".", 1)[-1]
        for name, argument in (value.get("init_args") or {}).items():
            if name != "num_classes":
                _flatten(flat, f"{key}.{name}", argument)
    elif isinstance(value, dict):
        for name, argument in value.items():
            _flatten(flat, f"{key}.{name}", argument)
    elif isinstance(value, (bool, int, float, str)):
        flat[key] = value
    elif value is not None:
        flat[key] = str(value)


class RunFolder(L.Callback):
    """Writes the HPARAMS summary when training starts; removes the run folder of a run that fails before
    its first training step (or an evaluation that fails) when this run created it."""

    def __init__(self, hyperparameters: dict[str, Any]) -> None:
        self.hyperparameters = hyperparameters
        self.folder: Path | None = None

    def note_new_folder(self, trainer: L.Trainer) -> None:
        """Called before the run starts (the Trainer creates the logger's folder before any callback hook)."""
        if trainer.loggers and trainer.is_global_zero and trainer.loggers[0].log_dir:
            folder = Path(trainer.loggers[0].log_dir)
            self.folder = None if folder.exists() else folder

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tensorboard = tensorboard_of(trainer)
        if tensorboard is None or not trainer.is_global_zero:
            return
        from torch.utils.tensorboard.summary import hparams

        # the metrics' values are the scalars of the same names, logged by the run (and by 'test' into it)
        writer = tensorboard.experiment._get_file_writer()
        for summary in hparams(self.hyperparameters, dict.fromkeys(HPARAMS_METRICS, 0.0)):
            writer.add_summary(summary, trainer.global_step)
        writer.flush()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException):
        trained = trainer.state.fn == TrainerFn.FITTING and trainer.global_step > 0
        if self.folder is not None and not trained and trainer.is_global_zero:
            for logger in trainer.loggers:
                if isinstance(logger, TensorBoardLogger) and logger._experiment is not None:
                    logger.experiment.close()
            shutil.rmtree(self.folder, ignore_errors=True)


class RunConfig(SaveConfigCallback):
    """``config.yaml``: a fit's in its run folder (re-runnable), an evaluation's beside its files, so
    evaluating a run's checkpoint never replaces the config that trained it."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == TrainerFn.FITTING:
            super().setup(trainer, pl_module, stage)

    def _save_beside_the_files(self, trainer: L.Trainer) -> None:  # once the checkpoint path is known
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
