"""An evaluation kept with its run logs the way that run did: ``test`` of a CSV-logger run's checkpoint
writes ``metrics.csv``, not a TensorBoard event file that the run never had.

Without this, ``test --ckpt_path <a CSV run's checkpoint>`` took the default recipe's TensorBoard logger
(the run's ``--config configs/loggers/csv.yaml`` is not repeated by the user), so the run's folder got an
event file. A logger the user names for the evaluation (``--trainer.logger`` or a ``--config`` file with
one) is kept as given.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from jsonargparse import Namespace

from mnist_lightning.cli.checks import config_files, option_values
from mnist_lightning.cli.console import DEFAULT_CONFIG
from mnist_lightning.cli.loggers import logger_configs
from mnist_lightning.run_layout import CSV_METRICS_FILE, run_folder_of

CSV_LOGGER = "lightning.pytorch.loggers.CSVLogger"
TENSORBOARD_LOGGER = "lightning.pytorch.loggers.TensorBoardLogger"


def log_as_the_run_did(config: Namespace, args: list[str]) -> None:
    """For an evaluation of a checkpoint of a run that logged to CSV alone (``metrics.csv``, no event file):
    the default TensorBoard logger becomes a CSV logger with the same folder settings."""
    ckpt_path = config.get("ckpt_path")
    run = run_folder_of(ckpt_path) if ckpt_path and Path(ckpt_path).is_file() else None
    if run is None or logger_named(args) or not (run / CSV_METRICS_FILE).is_file():
        return
    if any(run.glob("events.out.tfevents.*")):
        return
    loggers = config.trainer.get("logger")
    listed = loggers if isinstance(loggers, list) else [loggers]
    for logger in logger_configs(config.trainer):
        if logger.class_path == TENSORBOARD_LOGGER:
            init_args = logger.init_args
            kept = {key: init_args.get(key) for key in ("save_dir", "name", "version", "prefix")}
            listed[listed.index(logger)] = Namespace(class_path=CSV_LOGGER, init_args=Namespace(**kept))
    config.trainer.logger = listed if isinstance(loggers, list) else listed[0]


def logger_named(args: list[str]) -> bool:
    """Whether ``args`` set ``trainer.logger``: an option, or a ``--config`` file other than the recipe."""
    if option_values(args, "--trainer.logger") or option_values(args, "--trainer.logger."):
        return True
    for path in config_files(args):
        if Path(path).resolve() == DEFAULT_CONFIG or not Path(path).is_file():
            continue
        content = yaml.safe_load(Path(path).read_text())
        trainer = content.get("trainer") if isinstance(content, dict) else None
        if isinstance(trainer, dict) and "logger" in trainer:
            return True
    return False
