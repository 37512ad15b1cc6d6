"""``--ckpt_path``: the keywords ``last`` and ``best``, and evaluations kept with the run they evaluate."""

from __future__ import annotations

from pathlib import Path

from jsonargparse import Namespace

from mnist_lightning.callbacks.run_folder import run_folder_of
from mnist_lightning.cli.checks import say
from mnist_lightning.errors import UserError
from mnist_lightning.training.checkpoints import best_checkpoint_of, find_resumable

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
    logger = config.trainer.get("logger")
    init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
    if not isinstance(init_args, Namespace) or init_args.get("save_dir") is None:
        raise UserError(
            f"--ckpt_path {keyword} looks for the newest run under the logger's save_dir, but no single "
            f"logger with a save_dir is configured; pass the checkpoint file itself."
        )
    log_root = Path(init_args.save_dir) / (init_args.get("name") or "")
    newest = find_resumable(log_root)
    if subcommand == "fit":
        if keyword == "best":
            raise UserError("fit resumes from --ckpt_path last or from a checkpoint file, not from 'best'.")
        if newest is None:
            say(f"No checkpoint to resume under '{log_root}': starting a new run.")
            config.ckpt_path = None
            return
        init_args.version = newest.parent.parent.name
        say(f"Resuming from {newest}; this run continues in {newest.parent.parent}.")
    elif newest is None:
        raise UserError(f"--ckpt_path {keyword}: no checkpoint under '{log_root}' yet; run 'fit' first.")
    config.ckpt_path = str(newest if keyword == "last" else best_checkpoint_of(newest))


def keep_evaluation_with_its_run(config: Namespace) -> None:
    """Evaluating a checkpoint of a run under the log folder (``version_N/checkpoints/``, a sweep's
    ``trial_N/checkpoints/``): log into that run itself, so its test metrics sit beside its training curves
    and its files under ``<run>/<stage>/<checkpoint>/``. A checkpoint from elsewhere gets a new run folder,
    as Lightning's logger picks (its own folder may be another project's, or read-only)."""
    logger = config.trainer.get("logger")
    init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
    if not isinstance(init_args, Namespace) or init_args.get("save_dir") is None:
        return
    run = run_folder_of(config.ckpt_path)
    log_root = Path(init_args.save_dir).resolve()
    if run is None or init_args.get("version") is not None or not run.is_relative_to(log_root):
        return
    if run.parent != log_root / (init_args.get("name") or ""):  # deeper down, e.g. lightning_logs/sweeps/s/
        init_args.save_dir = str(Path(init_args.save_dir) / run.parent.relative_to(log_root))
        init_args.name = ""
    init_args.version = run.name
