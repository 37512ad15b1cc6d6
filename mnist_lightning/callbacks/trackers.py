"""Each logger of a run in its own form: the callbacks hand hyperparameters, pictures, text, files and tags to
:func:`trackers_of`, and each adapter does what its logger holds (TensorBoard: the HPARAMS tab, images and
text; MLflow: images by step, artifacts and tags; W&B: media, files and config; CSV: nothing more, its files
being in the run folder). mlflow and wandb are never imported here: their loggers hand out their clients."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

import lightning as L
import numpy as np
from lightning.pytorch.loggers import Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from mnist_lightning import compat


class Tracker:
    """A logger as the callbacks use it: each method does what the logger can hold, and nothing else.
    ``shows_images``: worth drawing pictures for; ``keeps_files``: a tracker with runs of its own (MLflow,
    W&B) that takes the run folder's files. Call on rank 0 only."""

    kind = "other"
    shows_images = False
    keeps_files = False

    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def add_hyperparameters(self, hyperparameters: dict[str, Any], metrics: tuple[str, ...], step: int):
        """A summary of the run's settings beside its results (Lightning logs the settings themselves)."""

    def add_image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        """An (H, W, 3) uint8 picture at ``step``."""

    def add_text(self, tag: str, text: str, step: int) -> None:
        """Preformatted text (a table in columns) at ``step``."""

    def add_files(self, folder: Path, names: list[str], under: str) -> None:
        """Copies of the files ``names`` of ``folder``, kept in the tracker's run under the path ``under``."""

    def add_tags(self, tags: dict[str, str]) -> None:
        """Labels of the run: its git commit and branch, its folder (see ``TrackerRuns``)."""

    def reference(self) -> dict[str, Any] | None:
        """What finds this tracker's run again (recorded in the run folder's ``trackers.json``)."""
        return None


class TensorBoardTracker(Tracker):
    """The HPARAMS summary, images and text in the event file; its files are in the run folder already."""

    kind, shows_images = "tensorboard", True

    def add_hyperparameters(self, hyperparameters: dict[str, Any], metrics: tuple[str, ...], step: int):
        compat.add_hparams_summary(self.logger, hyperparameters, metrics, step)

    def add_image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        self.logger.experiment.add_image(tag, pixels, step, dataformats="HWC")

    def add_text(self, tag: str, text: str, step: int) -> None:
        # TensorBoard renders text as Markdown: indenting by four spaces keeps the columns aligned
        self.logger.experiment.add_text(tag, "\n".join("    " + line for line in text.splitlines()), step)


# MLflow's own tag names for what the run's provenance says; the others are prefixed with "mnist_lightning."
MLFLOW_TAGS = {"git.commit": "mlflow.source.git.commit", "git.branch": "mlflow.source.git.branch"}


class MLflowTracker(Tracker):
    """Images by key and step, files as artifacts, labels as tags (MLflow's own names for git's)."""

    kind, shows_images, keeps_files = "mlflow", True, True

    def add_image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        self.logger.experiment.log_image(self.logger.run_id, pixels, key=tag, step=step)

    def add_files(self, folder: Path, names: list[str], under: str) -> None:
        for name in names:
            self.logger.experiment.log_artifact(self.logger.run_id, str(folder / name), under or None)

    def add_tags(self, tags: dict[str, str]) -> None:
        client, run_id = self.logger.experiment, self.logger.run_id
        for key, value in tags.items():
            client.set_tag(run_id, MLFLOW_TAGS.get(key, f"mnist_lightning.{key}"), value)
        if "run" in tags and "mlflow.runName" not in (self.logger.tags or {}):  # no run_name was given
            client.set_tag(run_id, "mlflow.runName", tags["run"])

    def reference(self) -> dict[str, Any]:
        return {
            "tracking_uri": compat.mlflow_tracking_uri(self.logger),
            "experiment_id": self.logger.experiment_id,
            "run_id": self.logger.run_id,
        }


class WandbTracker(Tracker):
    """Images and text as media, files as run files, labels in the run's config."""

    kind, shows_images, keeps_files = "wandb", True, True

    def add_image(self, tag: str, pixels: np.ndarray, step: int) -> None:
        self.logger.log_image(key=tag, images=[pixels], step=step)

    def add_text(self, tag: str, text: str, step: int) -> None:
        import wandb  # the logger has imported it

        self.logger.log_metrics({tag: wandb.Html(f"<pre>{html.escape(text)}</pre>")}, step)

    def add_files(self, folder: Path, names: list[str], under: str) -> None:
        # kept as <run folder name>/<under>/<name>, apart from W&B's own config.yaml and requirements.txt
        base = folder.parents[len(Path(under).parts)] if under else folder.parent
        for name in names:
            self.logger.experiment.save(str(folder / name), base_path=str(base), policy="now")

    def add_tags(self, tags: dict[str, str]) -> None:
        self.logger.experiment.config.update({"provenance": tags}, allow_val_change=True)

    def reference(self) -> dict[str, Any]:
        run = self.logger.experiment
        return {"project": run.project, "id": run.id, "name": run.name, "dir": run.dir}


_ADAPTERS: tuple[tuple[type[Logger], type[Tracker]], ...] = (
    (TensorBoardLogger, TensorBoardTracker),
    (MLFlowLogger, MLflowTracker),
    (WandbLogger, WandbTracker),
)
_TRACKERS: WeakKeyDictionary[L.Trainer, tuple[list[Logger], list[Tracker]]] = WeakKeyDictionary()


def trackers_of(trainer: L.Trainer) -> list[Tracker]:
    """An adapter for each of the run's loggers, in their order (kept while the loggers stay the same)."""
    loggers = list(trainer.loggers)
    known = _TRACKERS.get(trainer)
    if known is None or known[0] != loggers:
        trackers = [next((a(lg) for t, a in _ADAPTERS if isinstance(lg, t)), Tracker(lg)) for lg in loggers]
        known = _TRACKERS[trainer] = (loggers, trackers)
    return known[1]


def showing_images(trainer: L.Trainer) -> list[Tracker]:
    """The run's trackers that show pictures (none: nothing needs drawing)."""
    return [tracker for tracker in trackers_of(trainer) if tracker.shows_images]
