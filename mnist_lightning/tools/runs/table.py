"""The runs table: one row per run, or per configuration with mean ± sd over seeds, and the columns that
differ between the rows."""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass
from typing import Any

from mnist_lightning.schema import SEED_KEYS, short_name
from mnist_lightning.tools.runs.reading import Run

HPARAM_COLUMNS = ("data.dataset", "net", "optimizer", "optimizer.lr", "data.batch_size")
RESULT_COLUMNS = ("epochs", "val_acc", "test_acc", "fit_s", "best_checkpoint")
CLASS_ARGUMENTS = ("optimizer.", "scheduler.")
SEED_COLUMNS = tuple(map(short_name, SEED_KEYS))


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


def commit_column(runs: list[Run]) -> list[str]:
    """``["commit"]`` when a run knows its code's commit (its provenance), else none."""
    return ["commit"] if any(run.commit for run in runs) else []


def run_rows(runs: list[Run]) -> tuple[list[dict[str, Any]], list[str]]:
    keys = hparam_keys(runs)
    rows = []
    for run in runs:
        row = {"run": run.name, "when": run.when, "status": run.status, "commit": run.commit, **run.hparams}
        row.update(epochs=run.epochs, val_acc=run.val_acc, test_acc=run.test_acc, fit_s=run.fit_s)
        row["best_checkpoint"] = run.best_checkpoint
        rows.append(row)
    shown = differing([run.hparams for run in runs if not run.evaluation], keys)
    return rows, ["run", "when", "status", *commit_column(runs), *shown, *RESULT_COLUMNS]


def configurations(runs: list[Run]) -> tuple[list[str], dict[str, list[Run]]]:
    """The settings that identify a configuration (all hyperparameters but the seeds and the fold), and the
    runs of each configuration and commit by its :func:`configuration`: runs of different code are never
    averaged together."""
    keys = [key for key in hparam_keys(runs) if key not in SEED_COLUMNS]
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(configuration({**run.hparams, "commit": run.commit}, keys), []).append(run)
    return keys, groups


def configuration(settings: dict[str, Any], keys: list[str]) -> str:
    """A run's (or a grouped row's) commit and values of the identifying ``keys``, as one text."""
    return json.dumps([settings.get("commit"), *(settings.get(key) for key in keys)], default=str)


def group_rows(runs: list[Run]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per configuration (all hyperparameters but the seeds and the fold) and commit: mean ± sd of
    the results."""
    keys, groups = configurations(runs)
    rows = []
    for members in groups.values():
        first = members[0]
        row = {"runs": len(members), "run": _common_name([member.name for member in members])}
        row["commit"] = first.commit
        row.update({key: first.hparams.get(key) for key in keys})
        for column in ("val_acc", "test_acc", "fit_s"):
            row[column] = _mean_sd([getattr(member, column) for member in members])
        row["epochs"] = _mean_sd([member.epochs for member in members if isinstance(member.epochs, int)])
        row["when"] = min(member.when or 0 for member in members)
        rows.append(row)
    shown = differing([members[0].hparams for members in groups.values() if not members[0].evaluation], keys)
    return rows, ["run", "runs", *commit_column(runs), *shown, "epochs", "val_acc", "test_acc", "fit_s"]


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
