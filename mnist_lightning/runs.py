"""``python -m mnist_lightning runs``: a table of the runs under a log folder, sweeps' trials included.

It reads only what runs write: ``summary.json`` (``RunSummary``), ``config.yaml`` and ``hparams.yaml``, the
checkpoint file names (``epoch=N-val_acc=0.XXXX.ckpt``) and the ``metrics.json`` files of ``test``, so it
imports neither torch nor Lightning and lists a folder of many runs in well under a second. A run
interrupted or killed before writing its summary is still listed, from its config and checkpoints.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import io
import json
import math
import os
import re
import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

CHECKPOINT_NAME = re.compile(r"epoch=(\d+)-val_acc=([0-9.]+?)(?:-v\d+)?\.ckpt$")
EVAL_KEYS = ("verbose", "return_predictions")  # in the config.yaml of test/validate/predict, never of fit
SEED_KEYS = ("seed_everything", "data.seed")
# hyperparameters that do not change what is trained (paths, loaders, evaluation batching, kernels)
IGNORED = {
    "data.data_dir", "data.num_workers", "data.pin_memory", "data.data_on_device", "data.predict_path",
    "data.invert", "data.eval_batch_size", "model.num_classes", "model.net.init_args.num_classes",
}  # fmt: skip
IGNORED_OPTIMIZER_ARGS = {"fused", "foreach", "capturable", "differentiable", "maximize"}
HPARAM_COLUMNS = ("dataset", "net", "optimizer", "lr", "batch_size")
RESULT_COLUMNS = ("epochs", "val_acc", "test_acc", "fit_s", "best_checkpoint")
PERCENT_COLUMNS = ("val_acc", "test_acc")
CLASS_ARGUMENTS = ("model.optimizer.init_args.", "model.scheduler.init_args.")


@dataclass
class Run:
    folder: Path
    name: str  # relative to the listed log folder
    status: str = "?"
    when: float | None = None
    hparams: dict[str, Any] = field(default_factory=dict)  # flattened dotted keys, display values
    epochs: str | int | None = None
    val_acc: float | None = None
    test_acc: float | None = None
    test_acc_time: float = 0.0
    fit_s: float | None = None
    best_checkpoint: str | None = None


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return content if isinstance(content, dict) else {}


def read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def find_runs(root: Path) -> tuple[list[Run], list[tuple[Path, dict[str, Any]]]]:
    """The fit runs under ``root`` (not descending into a run, except to find its test metrics) and the
    evaluation folders (``test``/``validate``/``predict`` runs with their config)."""
    runs, evaluations = [], []
    for folder, subfolders, files in os.walk(root):
        here = Path(folder)
        if not ({"config.yaml", "hparams.yaml", "summary.json"} & set(files)):
            continue
        config = read_yaml(here / "config.yaml") if "config.yaml" in files else {}
        if any(key in config for key in EVAL_KEYS):
            evaluations.append((here, config))
            continue
        runs.append(read_run(here, root, config, files))
        subfolders.clear()  # nothing below a run is another run; its metrics.json files are read with it
    return runs, evaluations


def read_run(folder: Path, root: Path, config: dict[str, Any], files: list[str]) -> Run:
    run = Run(folder=folder, name=str(folder.relative_to(root)) if folder != root else folder.name)
    summary = read_json(folder / "summary.json") if "summary.json" in files else {}
    if not config:
        config = config_from_hparams(read_yaml(folder / "hparams.yaml"))
    run.hparams = flatten_config(config)
    checkpoints = list((folder / "checkpoints").glob("*.ckpt"))
    scored = [
        (int(m.group(1)), float(m.group(2)), path)
        for path in checkpoints
        if (m := CHECKPOINT_NAME.search(path.name))
    ]
    best = max(scored, key=lambda item: (item[1], -item[0]), default=None)
    if summary:
        run.status = summary.get("status") or "?"
        if run.status == "running":  # a summary says "running" until fit ends: killed, or still running
            run.status = "running/killed"
        run.epochs = summary.get("epochs")
        run.val_acc = (
            summary.get("best_score") if summary.get("monitor") == "val_acc" else summary.get("val_acc_best")
        )
        run.fit_s = summary.get("fit_seconds")
        run.best_checkpoint = summary.get("best_checkpoint")
        run.when = _timestamp(summary.get("started"))
    else:  # an older run, or one killed before training started: what its files say
        interrupted = (folder / "checkpoints" / "interrupted.ckpt").exists()
        run.status = "interrupted" if interrupted else ("no summary" if checkpoints else "no checkpoint")
        if best is not None:
            run.val_acc = best[1]
            run.epochs = f">={max(epoch for epoch, _, _ in scored) + 1}"
    if best is not None and not run.best_checkpoint:
        run.best_checkpoint = str(best[2])
    if run.when is None:
        stamps = [
            path.stat().st_mtime
            for path in (folder / "config.yaml", folder / "hparams.yaml")
            if path.exists()
        ]
        run.when = min(stamps) if stamps else folder.stat().st_mtime
    for metrics in folder.rglob("metrics.json"):
        add_test_metrics(run, metrics)
    return run


def add_test_metrics(run: Run, path: Path) -> None:
    """The newest ``test_acc`` among the run's metrics.json files."""
    value = read_json(path).get("test_acc")
    stamp = path.stat().st_mtime
    if isinstance(value, (int, float)) and stamp >= run.test_acc_time:
        run.test_acc, run.test_acc_time = float(value), stamp


def attach_evaluations(runs: list[Run], evaluations: list[tuple[Path, dict[str, Any]]], root: Path) -> None:
    """A ``test`` in a folder of its own (``lightning_logs/version_N``): its metrics go to the run whose
    checkpoint it tested (``ckpt_path`` in its config.yaml, relative to where it ran)."""
    by_folder = {run.folder.resolve(): run for run in runs}
    for folder, config in evaluations:
        ckpt_path, metrics = config.get("ckpt_path"), folder / "metrics.json"
        if not isinstance(ckpt_path, str) or not metrics.exists():
            continue
        run = owner_of(Path(ckpt_path), by_folder, [Path.cwd(), root, *root.resolve().parents])
        if run is not None:
            add_test_metrics(run, metrics)


def owner_of(ckpt: Path, by_folder: dict[Path, Run], bases: list[Path]) -> Run | None:
    candidates = [ckpt] if ckpt.is_absolute() else [base / ckpt for base in bases]
    for candidate in candidates:
        for parent in candidate.resolve().parents:
            if parent in by_folder:
                return by_folder[parent]
    return None


def config_from_hparams(hparams: dict[str, Any]) -> dict[str, Any]:
    """``hparams.yaml`` holds the model's and the data module's arguments side by side."""
    data_keys = {"dataset", "data_dir", "batch_size", "eval_batch_size", "val_size", "seed", "augment"}
    model = {key: value for key, value in hparams.items() if key not in data_keys and not key.startswith("_")}
    data = {key: value for key, value in hparams.items() if key in data_keys}
    return {"model": model, "data": data}


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """The hyperparameters of a run as display values: the key columns (net, optimizer, lr, ...) and every
    other model/data setting, the number of epochs asked for and the seeds, by dotted name."""
    model, data = config.get("model") or {}, config.get("data") or {}
    trainer = config.get("trainer") or {}
    flat: dict[str, Any] = {}
    flat["dataset"] = data.get("dataset")
    flat["net"] = describe_class(model.get("net"), {"num_classes"})
    optimizer = model.get("optimizer") or {}
    if isinstance(optimizer, dict):
        flat["lr"] = (optimizer.get("init_args") or {}).get("lr")
    _add_class(flat, "optimizer", optimizer, skip=IGNORED_OPTIMIZER_ARGS | {"lr"})
    flat["batch_size"] = data.get("batch_size")
    _add_class(flat, "scheduler", model.get("scheduler"), skip=set())
    for key, value in model.items():
        if key not in ("net", "optimizer", "scheduler"):
            flat[f"model.{key}"] = _display(value)
    for key, value in data.items():
        if key not in ("dataset", "batch_size"):
            flat[f"data.{key}"] = _display(value)
    if trainer:
        flat["trainer.max_epochs"] = trainer.get("max_epochs")
    if "seed_everything" in config:
        flat["seed_everything"] = config.get("seed_everything")
    return {key: value for key, value in flat.items() if key not in IGNORED and not key.startswith("model._")}


def _add_class(flat: dict[str, Any], name: str, config: Any, skip: set[str]) -> None:
    """The model's ``name`` setting (optimizer, scheduler): its class under ``name``, and each argument but
    ``skip`` under ``model.<name>.init_args.<key>`` (see :func:`differing` for which of those are shown)."""
    if isinstance(config, dict):
        flat[name] = _short(config.get("class_path"))
        for key, value in (config.get("init_args") or {}).items():
            if key not in skip:
                flat[f"model.{name}.init_args.{key}"] = _display(value)
    elif config is not None:
        flat[name] = _short(config)


def describe_class(config: Any, skip: set[str]) -> Any:
    """``MLP(hidden_sizes=[128, 64], dropout=0.2)``: a class_path/init_args config in one phrase."""
    if not isinstance(config, dict) or "class_path" not in config:
        return _display(config)
    init_args = config.get("init_args") or {}
    arguments = ", ".join(
        f"{key}={f'{value:.4g}' if isinstance(value, float) else _display(value)}"
        for key, value in init_args.items()
        if key not in skip
    )
    return f"{_short(config['class_path'])}({arguments})"


def _short(class_path: Any) -> Any:
    return class_path.rsplit(".", 1)[-1] if isinstance(class_path, str) else class_path


def _display(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return value


def _timestamp(text: Any) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp() if isinstance(text, str) else None
    except ValueError:
        return None


# ----------------------------------------------------------------------------------------------------------
# The table


def differing(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """The keys whose value is not the same in all rows (all key columns when there is a single row).

    An argument of the optimizer or scheduler counts only in the rows whose class has it: a scheduler's many
    defaults are left out, and only what was set differently between the runs that use it is shown.
    """
    if len(rows) < 2:
        return [key for key in keys if key in HPARAM_COLUMNS]
    shown = []
    for key in keys:
        having = [row for row in rows if key in row] if key.startswith(CLASS_ARGUMENTS) else rows
        if len({json.dumps(row.get(key), default=str) for row in having}) > 1:
            shown.append(key)
    return shown


def hparam_keys(runs: list[Run]) -> list[str]:
    keys = list(HPARAM_COLUMNS)
    for run in runs:
        keys += [key for key in run.hparams if key not in keys]
    return keys


def run_rows(runs: list[Run]) -> tuple[list[dict[str, Any]], list[str]]:
    keys = hparam_keys(runs)
    rows = []
    for run in runs:
        row = {"run": run.name, "when": run.when, "status": run.status, **run.hparams}
        row.update(epochs=run.epochs, val_acc=run.val_acc, test_acc=run.test_acc, fit_s=run.fit_s)
        row["best_checkpoint"] = run.best_checkpoint
        rows.append(row)
    shown = differing([run.hparams for run in runs], keys)
    return rows, ["run", "when", "status", *shown, *RESULT_COLUMNS]


def group_rows(runs: list[Run]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per configuration (all hyperparameters but the seeds): mean ± sd of the results."""
    keys = [key for key in hparam_keys(runs) if key not in SEED_KEYS]
    groups: dict[str, list[Run]] = {}
    for run in runs:
        identity = json.dumps([run.hparams.get(key) for key in keys], default=str)
        groups.setdefault(identity, []).append(run)
    rows = []
    for members in groups.values():
        first = members[0]
        row = {"runs": len(members), "run": _common_name([member.name for member in members])}
        row.update({key: first.hparams.get(key) for key in keys})
        for column in ("val_acc", "test_acc", "fit_s"):
            row[column] = _mean_sd([getattr(member, column) for member in members])
        row["epochs"] = _mean_sd([member.epochs for member in members if isinstance(member.epochs, int)])
        row["when"] = min(member.when or 0 for member in members)
        rows.append(row)
    shown = differing([members[0].hparams for members in groups.values()], keys)
    return rows, ["run", "runs", *shown, "epochs", "val_acc", "test_acc", "fit_s"]


@dataclass
class MeanSd:
    values: list[float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


def _mean_sd(values: list[Any]) -> MeanSd | None:
    numbers = [float(value) for value in values if isinstance(value, (int, float))]
    return MeanSd(numbers) if numbers else None


def _common_name(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    prefix = os.path.commonprefix(names)
    return f"{prefix}*" if prefix else f"{names[0]} (+{len(names) - 1})"


def format_value(column: str, value: Any, machine: bool = False) -> str:
    if value is None:
        return "" if machine else "-"
    if isinstance(value, MeanSd):
        if machine:
            return f"{value.mean:.6g}"
        if column in PERCENT_COLUMNS:
            return f"{100 * value.mean:.2f}% ± {100 * value.sd:.2f}"
        return f"{value.mean:.1f} ± {value.sd:.1f}"
    if column == "when":
        return (
            datetime.fromtimestamp(value).isoformat(timespec="seconds")
            if machine
            else (datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M"))
        )
    if column in PERCENT_COLUMNS and not machine:
        return f"{100 * value:.2f}%"
    if column == "fit_s" and not machine:
        return f"{value:.1f}"
    if column == "best_checkpoint" and not machine:
        return Path(value).name
    if isinstance(value, float) and not machine:
        return f"{value:.4g}"
    return str(value)


def render(rows: list[dict[str, Any]], columns: list[str], style: str) -> str:
    headers = [column.rsplit(".", 1)[-1] if column.count(".") > 1 else column for column in columns]
    if style == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([format_value(column, row.get(column), machine=True) for column in columns])
        return buffer.getvalue()
    cells = [[format_value(column, row.get(column)) for column in columns] for row in rows]
    if style == "markdown":
        numeric = [all(_numeric(line[i]) for line in cells) and cells for i in range(len(columns))]
        lines = ["| " + " | ".join(headers) + " |"]
        lines.append("| " + " | ".join("---:" if numeric[i] else "---" for i in range(len(columns))) + " |")
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in cells]
        return "\n".join(lines) + "\n"
    widths = [max(len(header), *(len(line[i]) for line in cells)) for i, header in enumerate(headers)]
    lines = ["  ".join(header.ljust(width) for header, width in zip(headers, widths, strict=True)).rstrip()]
    for line in cells:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return "\n".join(lines) + "\n"


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[-+>=]*[0-9.e+-]+%?( ± [0-9.]+)?|-", text))


def sort_key(column: str):
    def key(row: dict[str, Any]):
        value = row.get(column)
        if isinstance(value, MeanSd):
            value = value.mean
        if isinstance(value, str) and value.startswith(">="):
            value = float(value[2:])
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return (2, 0, "")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return (0, value, "")
        return (1, 0, str(value))

    return key


# ----------------------------------------------------------------------------------------------------------
# The command


def parse_args(args: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_lightning runs",
        description="A table of the runs under a log folder (sweeps' trials included): hyperparameters that "
        "differ "
        "between the listed runs, epochs, best val_acc, test_acc, fit time and best checkpoint.",
        allow_abbrev=False,
    )
    parser.add_argument(
        "log_dir", nargs="?", default="lightning_logs", help="the folder to list (default: lightning_logs)"
    )
    parser.add_argument(
        "--sort",
        default="when",
        help="the column to sort by, e.g. val_acc, lr, run; '-val_acc' (with =) or --desc for descending "
        "(default: when)",
    )  # fmt: skip
    parser.add_argument("--desc", action="store_true", help="sort in descending order")
    parser.add_argument(
        "--filter",
        help="only the runs whose folder (relative to LOG_DIR) matches this glob, e.g. 'sweeps/mlp/*'",
    )
    parser.add_argument(
        "--group", action="store_true", help="one row per configuration, seeds apart: mean ± sd"
    )
    parser.add_argument("--format", choices=("table", "csv", "markdown"), default="table")
    return parser.parse_args(args)


def main(args: list[str]) -> None:
    options = parse_args(list(args))
    root = Path(options.log_dir)
    if not root.is_dir():
        print(
            f"error: '{root}' is not a folder (runs lists the runs under a log folder, e.g. lightning_logs).",
            file=sys.stderr,
        )
        raise SystemExit(2)
    runs, evaluations = find_runs(root)
    attach_evaluations(runs, evaluations, root)
    if options.filter:
        runs = [run for run in runs if fnmatch.fnmatch(run.name, options.filter)]
    if not runs:
        print(
            f"No runs under '{root}'{' matching ' + repr(options.filter) if options.filter else ''}.",
            file=sys.stderr,
        )
        return
    rows, columns = group_rows(runs) if options.group else run_rows(runs)
    column, descending = options.sort.lstrip("-"), options.desc or options.sort.startswith("-")
    names = {name.rsplit(".", 1)[-1]: name for name in rows[0]} | {name: name for name in rows[0]}
    if column not in names:
        print(
            f"error: --sort {column}: no such column; columns: {', '.join(sorted(set(names)))}.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    rows.sort(key=sort_key(names[column]), reverse=descending)
    if descending:  # runs without the value last either way
        rows.sort(key=lambda row: sort_key(names[column])(row)[0] == 2)
    sys.stdout.write(render(rows, columns, options.format))
