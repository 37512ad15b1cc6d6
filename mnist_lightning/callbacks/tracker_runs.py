"""``trackers.json``, and a run's files and labels sent to the trackers it logs to (MLflow, W&B)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from mnist_lightning.callbacks.outputs import (
    is_event_file,
    output_dir,
    write_json,
    writes_files,
)
from mnist_lightning.callbacks.provenance import read_sessions
from mnist_lightning.callbacks.trackers import Tracker, trackers_of
from mnist_lightning.run_layout import PROVENANCE_FILE, TRACKERS_FILE, evaluation_folder, run_folder


class TrackerRuns(L.Callback):
    """Keeps a run's tracker runs (MLflow, W&B) in step with its folder.

    When training starts: ``trackers.json`` in the run folder names each tracker's run (the MLflow tracking
    URI and run id, the W&B run), so that evaluating or resuming the run's checkpoints logs into the same
    tracker run (``cli/loggers.py``); the tracker run is labelled with the git commit, branch and state of
    the run's provenance and its folder; the folder's files (``config.yaml``, ``provenance.json``, ...) are
    sent. When a command ends, the files of its folder are sent again, final (``summary.json``), or an
    evaluation's files under ``<stage>/<checkpoint>/``. Rank 0; not under ``fast_dev_run``.
    """

    def __init__(self) -> None:
        self._folder: Path | None = None  # this command's folder and its path in the tracker runs
        self._under = ""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._folder = folder = run_folder(trainer)  # every rank asks: a broadcast under DDP
        trackers = self._trackers(trainer)
        if not trackers:
            return
        references = {tracker.kind: tracker.reference() for tracker in trackers}
        write_json(folder / TRACKERS_FILE, references)
        tags = run_labels(folder)
        for tracker in trackers:
            tracker.add_tags(tags)
            tracker.add_files(folder, files_in(folder), "")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._evaluation_starts(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluation_starts(trainer)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._evaluation_starts(trainer)

    def _evaluation_starts(self, trainer: L.Trainer) -> None:
        self._folder = output_dir(trainer)  # every rank asks
        inputs = getattr(trainer.datamodule, "predict_path", None)
        self._under = evaluation_folder(trainer.state.fn.value, trainer.ckpt_path, inputs).as_posix()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        folder, under, self._folder, self._under = self._folder, self._under, None, ""
        trackers = self._trackers(trainer)
        if folder is None or not trackers or not folder.is_dir():
            return
        for tracker in trackers:
            tracker.add_files(folder, files_in(folder), under)

    @staticmethod
    def _trackers(trainer: L.Trainer) -> list[Tracker]:
        if not writes_files(trainer) or not trainer.is_global_zero:
            return []
        return [tracker for tracker in trackers_of(trainer) if tracker.keeps_files]


def files_in(folder: Path) -> list[str]:
    """The plain files directly in ``folder`` that are worth a copy (not event files or partial writes)."""
    return sorted(
        path.name
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and not is_event_file(path)
    )


def run_labels(folder: Path) -> dict[str, str]:
    """The labels of a run's tracker runs: its folder and name, and from the newest session of its
    ``provenance.json``, the git commit, branch and whether the tree was dirty, and the project's version."""
    labels = {"run": folder.name, "run_folder": str(folder.resolve())}
    sessions = read_sessions(folder / PROVENANCE_FILE)
    session: dict[str, Any] = sessions[-1] if sessions else {}
    git = session.get("git") or {}
    if git.get("commit"):
        labels.update({"git.commit": git["commit"], "git.dirty": str(bool(git.get("dirty"))).lower()})
    if git.get("branch"):
        labels["git.branch"] = git["branch"]
    version = (session.get("project") or {}).get("version")
    if version:
        labels["version"] = version
    return labels
