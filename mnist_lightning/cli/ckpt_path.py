"""``--ckpt_path``: the keywords ``last`` and ``best``, the checkpoint's own data, and evaluations kept with
the run they evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace

from mnist_lightning import schema
from mnist_lightning.callbacks.progress import tell
from mnist_lightning.checkpointing.checkpoints import find_resumable, newest_runs_checkpoint
from mnist_lightning.cli.checks import option_values
from mnist_lightning.cli.console import DEFAULT_CONFIG
from mnist_lightning.cli.loggers import folder_logger
from mnist_lightning.data.datasets import has_raw_files
from mnist_lightning.errors import UserError
from mnist_lightning.run_layout import evaluation_folder, run_folder_of

EVALUATIONS = ("validate", "test", "predict")


def resolve_checkpoint_keyword(subcommand: str, config: Namespace) -> None:
    """``--ckpt_path last`` or ``best``: a checkpoint of the newest run under the logger's folder.

    ``fit --ckpt_path last`` continues that run in its own folder: it resumes from the newest ``last.ckpt``
    or ``interrupted.ckpt`` in ``<save_dir>/<name>/*/checkpoints/`` and pins the logger's version to that
    run, so its curves, checkpoints and config go on in the same folder; with no checkpoint there yet it
    starts a new run, so one command both starts and resumes a job. ``validate``, ``test`` and ``predict``
    take that run's newest checkpoint (``last``) or its best one (``best``).
    """
    keyword = config.get("ckpt_path")
    if subcommand in EVALUATIONS and not keyword:
        raise UserError(
            f"{subcommand} evaluates a trained checkpoint: pass --ckpt_path best|last|<file> (best or last: "
            f"that checkpoint of the newest run under the logger's folder; <file>: a .ckpt written by 'fit')."
        )
    if keyword not in ("last", "best"):
        return
    logger = folder_logger(config.trainer)
    init_args = logger.init_args if logger is not None else None
    if init_args is None:
        raise UserError(
            f"--ckpt_path {keyword} looks for the newest run under the logger's save_dir, but no single "
            f"logger with a save_dir is configured; pass the checkpoint file itself."
        )
    log_root = Path(init_args.save_dir) / (init_args.get("name") or "")
    if subcommand == "fit":
        newest = find_resumable(log_root)
        if keyword == "best":
            raise UserError("fit resumes from --ckpt_path last or from a checkpoint file, not from 'best'.")
        if newest is None:
            tell(None, f"No checkpoint to resume under '{log_root}': starting a new run.")
            config.ckpt_path = None
            return
        init_args.version = newest.parent.parent.name  # cli/resume.py says so once the resume is checked
        config.ckpt_path = str(newest)
        return
    config.ckpt_path = newest_runs_checkpoint(keyword, log_root)


def keep_evaluation_with_its_run(subcommand: str, config: Namespace) -> None:
    """Evaluating a checkpoint of a run under the log folder (``version_N/checkpoints/``, a sweep's
    ``trial_N/checkpoints/``): log into that run itself, its files and TensorBoard entries in
    ``<run>/<stage>/<checkpoint>/`` (``predict``: ``.../<input>/``), the logger's ``sub_dir``: a TensorBoard
    run of its own, beside the training curves without mixing into them. A checkpoint from elsewhere gets a
    new run folder, as Lightning's logger picks (its own folder may be another project's, or read-only)."""
    logger = folder_logger(config.trainer)
    folder = evaluation_folder(subcommand, config.ckpt_path, config.data.get("predict_path"))
    run = run_folder_of(config.ckpt_path)
    if logger is None:  # no logger: the run's own folder (default_root_dir) when the checkpoint is in one
        trainer = config.trainer
        if run is not None and not trainer.get("logger") and not trainer.get("default_root_dir"):
            trainer.default_root_dir = str(run)
        return
    init_args = logger.init_args
    if "sub_dir" in init_args and init_args.sub_dir is None:
        init_args.sub_dir = str(folder)
    log_root = Path(init_args.save_dir).resolve()
    pinned = run is not None and init_args.get("version") is None and run.is_relative_to(log_root)
    if pinned and run.parent != log_root / (init_args.get("name") or ""):  # deeper, e.g. in a sweep's folder
        init_args.save_dir = str(Path(init_args.save_dir) / run.parent.relative_to(log_root))
        init_args.name = ""
    if pinned:
        init_args.version = run.name
    if "sub_dir" not in init_args and init_args.get("version") is not None:  # a CSVLogger: no sub_dir
        init_args.version = str(Path(str(init_args.version), folder))


def checkpoint_data(config: Namespace, checkpoint: dict, args: list[str]) -> dict[str, Any]:
    """The data settings a checkpoint was trained with, for a run that evaluates or resumes it.

    The checkpoint is the source of truth: its data set (and so its class names), its split and batch
    settings, and its data folder when that holds the data set's files (a checkpoint never decides where
    anything is downloaded or written), unless ``args`` set them (on the command line or in a
    ``--config`` file other than the default recipe). Asking for another data set than the checkpoint's is
    a UserError naming both. Returns the settings of ``config.data`` to change.
    """
    trained = checkpoint.get("datamodule_hyper_parameters") or {}
    given = data_settings_given(args)
    dataset, data = trained.get("dataset"), config.data
    if dataset and "dataset" in given and data.dataset != dataset:
        raise UserError(
            f"the checkpoint '{config.ckpt_path}' was trained on {dataset}, but {given['dataset']} asks "
            f"for {data.dataset}; a checkpoint is evaluated (and resumed) on its own data set. Leave "
            f"data.dataset out to use {dataset}, or train a model on {data.dataset}."
        )
    changes = {
        key: value
        for key, value in trained.items()
        if schema.is_hyperparameter(f"data.{key}") and key in data and key not in given and data[key] != value
    }
    folder = trained.get("data_dir")
    if (
        folder
        and "data_dir" not in given
        and folder != data.data_dir
        and has_raw_files(folder, dataset or data.dataset)
    ):
        changes["data_dir"] = (
            folder  # only a folder that holds the data: a checkpoint never picks where to write
        )
    if {"dataset", "data_dir"} & changes.keys():
        tell(
            None,
            f"The checkpoint was trained on {dataset or data.dataset} (data folder "
            f"'{changes.get('data_dir', data.data_dir)}'): this run uses the same.",
        )
    return changes


def data_settings_given(args: list[str]) -> dict[str, str]:
    """The ``data.*`` settings ``args`` give, each with where: ``{"dataset": "--config mine.yaml"}``,
    ``{"data_dir": "--data.data_dir"}``.

    Looks at ``--data.KEY``, ``--data FILE|YAML`` and the ``data:`` section of ``--config`` files; a config
    file that is the default recipe (``configs/default.yaml``) sets nothing by choice.
    """
    given: dict[str, str] = {}
    recipe = DEFAULT_CONFIG.read_text()
    for name, value in option_values(args, "--config") + option_values(args, "--data"):
        try:
            text = Path(value).read_text() if Path(value).is_file() else value
        except OSError:  # not a file name (a long YAML value)
            text = value
        if text == recipe:
            continue
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError:
            continue  # reported by the parser
        section = content.get("data") if name == "--config" and isinstance(content, dict) else content
        if isinstance(section, dict):
            given.update(dict.fromkeys(map(str, section), f"{name} {value}"))
    for name, _ in option_values(args, "--data."):
        given[name.removeprefix("--data.").split(".")[0]] = name
    return given
