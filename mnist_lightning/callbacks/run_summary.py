"""``summary.json``: what a ``fit`` run was and how it ended, for ``python -m mnist_lightning runs``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lightning import run_states, schema
from mnist_lightning.callbacks.outputs import global_seed, local_time, write_json, writes_files
from mnist_lightning.callbacks.protocols import ReportedModel
from mnist_lightning.run_layout import (
    SUMMARY_FILE,
    checkpoint_folder,
    partial_file_name,
    read_json,
    run_folder,
)


class RunSummary(L.Callback):
    """Writes ``summary.json`` into the run's folder as each epoch starts and when ``fit`` ends, however it
    ends (rank 0; not under ``fast_dev_run``): the run's record in its life (``run_states.py``).

    It holds the data set, the network (class and arguments), optimizer and learning rate, batch size,
    epochs done, the best ``val_acc`` and its checkpoint, the fit wall time and a ``status``: ``finished``,
    ``stopped early`` (by an ``EarlyStopping`` callback, after epoch ``early_stop_epoch``), ``interrupted``
    (Ctrl-C, SIGTERM), ``pruned`` (stopped early by a sweep's pruner) or ``failed``. While it trains the
    status is ``running`` with the epochs done so far and the process (``run_states.this_process``), so
    ``runs`` tells a live run from one killed outright (SIGKILL). A resumed fit (``--ckpt_path``) adds its
    session to the run's record: ``fit_seconds`` is the sum of ``session_seconds``, one per session, and
    ``started`` stays the first session's. As a session starts, the hidden ``.partial`` files of a write
    that a kill cut short are removed from the run's checkpoint folders. ``runs`` reads these files without
    importing torch or Lightning.
    """

    def __init__(self) -> None:
        self._start: float | None = None
        self._started_at: str | None = None
        self._earlier: dict[str, Any] | None = None  # the run's record before this session, once read

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._start = time.monotonic()
        self._started_at = local_time()
        self._earlier = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not writes_files(trainer):
            return
        folders = {checkpoint_folder(run_folder(trainer))}  # every rank asks: a broadcast under DDP
        folders |= {Path(callback.dirpath) for callback in trainer.checkpoint_callbacks if callback.dirpath}
        if trainer.is_global_zero:
            for folder in folders:
                for partial in folder.glob(partial_file_name("*")):
                    partial.unlink(missing_ok=True)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module, run_states.RUNNING)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stopped = early_stop_epoch(trainer) is not None
        self._write(trainer, pl_module, run_states.STOPPED_EARLY if stopped else run_states.FINISHED)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if trainer.state.fn != TrainerFn.FITTING or self._start is None:
            return
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)):
            status = run_states.INTERRUPTED
        elif type(exception).__name__ == "TrialPruned":  # optuna's, not imported here
            status = run_states.PRUNED
        else:
            status = run_states.FAILED
        self._write(trainer, pl_module, status, error=f"{type(exception).__name__}: {exception}".strip())

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule, status: str, error: str = "") -> None:
        if not writes_files(trainer):
            return
        folder = run_folder(trainer)  # every rank asks: a broadcast under DDP
        if not trainer.is_global_zero:
            return
        if self._earlier is None:  # a resumed fit continues the record of its run
            resumed = trainer.ckpt_path is not None and (folder / SUMMARY_FILE).is_file()
            self._earlier = read_json(folder / SUMMARY_FILE) if resumed else {}
        summary = describe_run(trainer, pl_module, folder)
        sessions = _session_seconds(self._earlier)
        sessions.append(0.0 if self._start is None else round(time.monotonic() - self._start, 2))
        summary.update(
            status=status,
            started=self._earlier.get("started") or self._started_at,
            ended=None if status == run_states.RUNNING else local_time(),
            fit_seconds=round(sum(sessions), 2),
            session_seconds=sessions,
        )
        if status == run_states.RUNNING:
            summary["process"] = run_states.this_process()
        if error:
            summary["error"] = error
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / SUMMARY_FILE, summary)


def _session_seconds(summary: dict[str, Any]) -> list[float]:
    """The fit seconds of each earlier session of a run, from its summary (a summary written before runs
    recorded their sessions: its ``fit_seconds`` as one session)."""
    sessions = summary.get("session_seconds")
    if isinstance(sessions, list) and all(isinstance(value, (int, float)) for value in sessions):
        return [float(value) for value in sessions]
    seconds = summary.get("fit_seconds")
    return [float(seconds)] if isinstance(seconds, (int, float)) else []


def describe_run(trainer: L.Trainer, pl_module: ReportedModel, folder: Path) -> dict[str, Any]:
    """The run's settings and results so far, as plain JSON values; ``folder`` is the run's folder, asked
    for by every rank beforehand (``trainer.log_dir`` is a collective under DDP: rank 0 cannot ask alone).
    Only what ``ReportedModel`` and ``ReportedData`` declare is read of the model and the data module."""
    hparams = dict(pl_module.hparams)
    datamodule = trainer.datamodule
    data = dict(datamodule.hparams) if datamodule is not None else {}
    checkpoint = _monitoring_checkpoint(trainer)
    best_score = checkpoint.best_model_score if checkpoint is not None else None
    optimizer = trainer.optimizers[0] if trainer.optimizers else None
    return {
        "dataset": data.get("dataset"),
        "net": _class_and_args(hparams.get("net")),
        "optimizer": type(optimizer).__name__ if optimizer is not None else None,
        "lr": optimizer.defaults.get("lr") if optimizer is not None else None,
        "scheduler": _class_and_args(hparams.get("scheduler")).get("class"),
        "batch_size": data.get("batch_size"),
        "max_epochs": trainer.max_epochs,
        "epochs": trainer.current_epoch,  # epochs completed
        "global_step": trainer.global_step,
        "early_stop_epoch": early_stop_epoch(trainer),
        "seed": global_seed(),
        "monitor": checkpoint.monitor if checkpoint is not None else None,
        "best_score": _number(best_score),
        "val_acc_best": _number(getattr(pl_module, "val_acc_best", None)) or None,
        "best_checkpoint": checkpoint.best_model_path or None if checkpoint is not None else None,
        "log_dir": str(folder),
    }


def early_stop_epoch(trainer: L.Trainer) -> int | None:
    """The epoch after which an ``EarlyStopping`` callback stopped the run, else None; counted from 0, as
    checkpoint names and TensorBoard count epochs (``epoch=3`` is the fourth)."""
    stopped = [
        callback.stopped_epoch for callback in trainer.early_stopping_callbacks if callback.stopped_epoch
    ]
    return min(stopped) if stopped else None  # stopped_epoch is 0 when it did not stop: the first cannot


def _monitoring_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    callbacks = [
        callback for callback in trainer.checkpoint_callbacks if isinstance(callback, ModelCheckpoint)
    ]
    return next((callback for callback in callbacks if callback.monitor), callbacks[0] if callbacks else None)


def _class_and_args(config: Any) -> dict[str, Any]:
    """``{"class": "MLP", "args": {...}}`` from a class_path/init_args config (as the command line saves a
    model's network and scheduler); a model built in Python that keeps no such setting: no class."""
    config = config.as_dict() if hasattr(config, "as_dict") else config
    if schema.is_class_config(config):
        args = {key: _plain(value) for key, value in schema.class_arguments(config).items()}
        return {"class": schema.class_name(config["class_path"]), "args": args}
    return {"class": None, "args": {}}


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if hasattr(value, "items"):
        return {key: _plain(item) for key, item in dict(value).items()}
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, torch.Tensor):
        value = value.item()
    return float(value) if isinstance(value, (int, float)) else None
