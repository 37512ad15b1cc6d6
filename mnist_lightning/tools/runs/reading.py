"""Reading runs: what a run folder's files say about it, without importing torch or Lightning.

It reads only what runs write: ``summary.json`` (``RunSummary``), ``config.yaml`` and ``hparams.yaml``, the
checkpoint file names (``epoch=N-val_acc=0.XXXX.ckpt``), the ``metrics.json`` files of ``test`` and the git
commit of ``provenance.json`` (``Provenance``). A run
interrupted or killed before writing its summary is still listed, from its config and checkpoints; a run
whose summary says ``running`` is ``killed`` when its process is gone (``run_states.current_status``); a
best checkpoint is shown only where the file is in the run's folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from mnist_lightning import run_states, schema
from mnist_lightning.run_layout import (
    CONFIG_FILE,
    HPARAMS_FILE,
    INTERRUPTED_CHECKPOINT,
    METRICS_FILE,
    PROVENANCE_FILE,
    SCORED_CHECKPOINT,
    SUMMARY_FILE,
    checkpoint_folder,
    read_json,
)

EVAL_KEYS = ("verbose", "return_predictions")  # in the config.yaml of test/validate/predict, never of fit


@dataclass
class Run:
    folder: Path
    name: str  # relative to the listed log folder
    status: str = "?"
    when: float | None = None
    hparams: dict[str, Any] = field(default_factory=dict)  # by schema.short_name, display values
    epochs: str | int | None = None
    val_acc: float | None = None
    test_acc: float | None = None
    test_acc_time: float = 0.0
    fit_s: float | None = None
    best_checkpoint: str | None = None
    commit: str | None = None  # short hash, "+" when the tree had uncommitted changes
    evaluation: bool = False  # an evaluation of a checkpoint from no listed run, not a fit


def read_yaml(path: Path) -> dict[str, Any]:
    try:  # libyaml's loader when PyYAML has it: several times quicker (benchmarks/NOTES.md)
        content = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, yaml.YAMLError):
        return {}
    return content if isinstance(content, dict) else {}


def find_runs(root: Path) -> tuple[list[Run], list[tuple[Path, dict[str, Any]]]]:
    """The fit runs under ``root`` (not descending into a run, except to find its test metrics) and the
    evaluation folders (``test``/``validate``/``predict`` runs with their config)."""
    runs, evaluations = [], []
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        if not ({CONFIG_FILE, HPARAMS_FILE, SUMMARY_FILE} & set(files)):
            continue
        config = read_yaml(here / CONFIG_FILE) if CONFIG_FILE in files else {}
        if any(key in config for key in EVAL_KEYS):
            evaluations.append((here, config))
            continue
        runs.append(read_run(here, root, config, files))
        subfolders.clear()  # nothing below a run is another run; its metrics.json files are read with it
    return runs, evaluations


def read_run(folder: Path, root: Path, config: dict[str, Any], files: list[str]) -> Run:
    run = Run(folder=folder, name=str(folder.relative_to(root)) if folder != root else folder.name)
    summary = read_json(folder / SUMMARY_FILE) if SUMMARY_FILE in files else {}
    if not config:
        config = config_from_hparams(read_yaml(folder / HPARAMS_FILE))
    run.hparams = flatten_config(config)
    checkpoints = list(checkpoint_folder(folder).glob("*.ckpt"))
    scored = [
        (int(m.group(1)), float(m.group(2)), path)
        for path in checkpoints
        if (m := SCORED_CHECKPOINT.search(path.name))
    ]
    best = max(scored, key=lambda item: (item[1], -item[0]), default=None)
    if summary:
        run.status = run_states.current_status(summary)  # a running run whose process is gone: killed
        if run.status == run_states.RUNNING:  # live: the epoch it is in, of how many
            planned = summary.get("max_epochs")
            of = f"/{planned}" if isinstance(planned, int) and planned > 0 else ""  # -1: no limit
            run.status = f"running epoch {_count(summary.get('epochs')) + 1}{of}"
        if run.status == run_states.STOPPED_EARLY:  # by EarlyStopping: after which epoch, of how many
            run.status = f"stopped early after {summary.get('epochs')}/{summary.get('max_epochs')} epochs"
        run.epochs = summary.get("epochs")
        run.val_acc = (
            summary.get("best_score") if summary.get("monitor") == "val_acc" else summary.get("val_acc_best")
        )
        run.fit_s = summary.get("fit_seconds")
        bases = [Path.cwd(), *root.resolve().parents]  # where the run may have been started from
        run.best_checkpoint = own_checkpoint(summary.get("best_checkpoint"), folder, bases)
        run.when = _timestamp(summary.get("started"))
    else:  # an older run, or one killed before training started: what its files say
        interrupted = (checkpoint_folder(folder) / INTERRUPTED_CHECKPOINT).exists()
        run.status = "interrupted" if interrupted else ("no summary" if checkpoints else "no checkpoint")
        if best is not None:
            run.val_acc = best[1]
            run.epochs = f">={max(epoch for epoch, _, _ in scored) + 1}"
    run.commit = commit_of(read_json(folder / PROVENANCE_FILE))
    if best is not None and not run.best_checkpoint:
        run.best_checkpoint = str(best[2])
    if run.when is None:
        stamps = [
            path.stat().st_mtime for path in (folder / CONFIG_FILE, folder / HPARAMS_FILE) if path.exists()
        ]
        run.when = min(stamps) if stamps else folder.stat().st_mtime
    for metrics in folder.rglob(METRICS_FILE):
        add_test_metrics(run, metrics)
    return run


def own_checkpoint(path: Any, run: Path, bases: list[Path]) -> str | None:
    """``path`` (a summary's best checkpoint: absolute, or relative to where the run was started, one of
    ``bases``) as it is written, where it is a file in the run's own folder; else the file of that name in
    the run's checkpoint folder (a moved run); else None (deleted, or never this run's)."""
    if not isinstance(path, str) or not path:
        return None
    candidates = [Path(path)] if Path(path).is_absolute() else [base / path for base in bases]
    for candidate in candidates:
        if candidate.is_file() and run.resolve() in candidate.resolve().parents:
            return path
    moved = checkpoint_folder(run) / Path(path).name
    return str(moved) if moved.is_file() else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) else 0


def commit_of(provenance: dict[str, Any]) -> str | None:
    """The commit a run's code was at, from its ``provenance.json``: ``3fa2c1d``, ``3fa2c1d+`` when the work
    tree had uncommitted changes; the sessions of a resumed run at other commits, joined by ``,``."""
    sessions = provenance.get("sessions")
    commits: list[str] = []
    for session in sessions if isinstance(sessions, list) else []:
        git = session.get("git") if isinstance(session, dict) else None
        if isinstance(git, dict) and isinstance(git.get("commit"), str):
            commit = git["commit"][:7] + ("+" if git.get("dirty") else "")
            commits += [commit] if commit not in commits else []
    return ",".join(commits) or None


def add_test_metrics(run: Run, path: Path) -> None:
    """The newest ``test_acc`` among the run's metrics.json files."""
    value = read_json(path).get("test_acc")
    stamp = path.stat().st_mtime
    if isinstance(value, (int, float)) and stamp >= run.test_acc_time:
        run.test_acc, run.test_acc_time = float(value), stamp


def attach_evaluations(
    runs: list[Run], evaluations: list[tuple[Path, dict[str, Any]]], root: Path
) -> list[Run]:
    """A ``test`` in a folder of its own (``lightning_logs/version_N``): its metrics go to the run whose
    checkpoint it tested (``ckpt_path`` in its config.yaml, relative to where it ran). Returns the
    evaluations of checkpoints from no listed run (from outside the log folder), each a row of its own:
    status ``evaluated``, the checkpoint it evaluated, its test accuracy where it has one."""
    by_folder = {run.folder.resolve(): run for run in runs}
    outside = []
    for folder, config in evaluations:
        ckpt_path, metrics = config.get("ckpt_path"), folder / METRICS_FILE
        run = None
        if isinstance(ckpt_path, str):
            run = owner_of(Path(ckpt_path), by_folder, [Path.cwd(), root, *root.resolve().parents])
        if run is not None:
            if metrics.exists():
                add_test_metrics(run, metrics)
            continue
        evaluation = Run(folder=folder, name=str(folder.relative_to(root)), status="evaluated")
        evaluation.evaluation = True  # its model and data: the checkpoint's, as the evaluation's config says
        evaluation.hparams = flatten_config({"model": config.get("model"), "data": config.get("data")})
        evaluation.best_checkpoint = ckpt_path if isinstance(ckpt_path, str) else None
        evaluation.when = (folder / CONFIG_FILE).stat().st_mtime
        if metrics.exists():
            add_test_metrics(evaluation, metrics)
        outside.append(evaluation)
    return outside


def owner_of(ckpt: Path, by_folder: dict[Path, Run], bases: list[Path]) -> Run | None:
    candidates = [ckpt] if ckpt.is_absolute() else [base / ckpt for base in bases]
    for candidate in candidates:
        for parent in candidate.resolve().parents:
            if parent in by_folder:
                return by_folder[parent]
    return None


def config_from_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams.yaml`` holds the model's and the data module's arguments side by side."""
    data_keys = {
        "dataset", "data_dir", "batch_size", "eval_batch_size", "val_size", "folds", "fold", "seed",
        "augment",
    }  # fmt: skip
    model = {key: value for key, value in hparams.items() if key not in data_keys and not key.startswith("_")}
    data = {key: value for key, value in hparams.items() if key in data_keys}
    return {"model": model, "data": data}


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters of a run (``schema.hyperparameters``) as the table shows them, each by its
    ``schema.short_name`` (as in TensorBoard's HPARAMS tab): ``net`` as one phrase with its arguments, then
    ``optimizer``, ``optimizer.lr``, ``data.batch_size``, ..., lists and mappings as compact JSON."""
    net = (config.get("model") or {}).get("net")
    flat: dict[str, Any] = {}
    for key, value in schema.hyperparameters(config).items():
        if key == "model.net" or key.startswith("model.net.init_args."):
            flat["net"] = schema.describe_class(net, _argument) if schema.is_class_config(net) else net
        else:
            flat[schema.short_name(key)] = _display(value)
    return flat


def _argument(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(_display(value))


def _display(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return value


def _timestamp(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp() if isinstance(text, str) else None
    except ValueError:
        return None
