"""``runs --plot METRIC``: the curves of the listed runs side by side, one panel per metric.

The lines are the table's rows, in its order: one per run, labelled by the settings that differ between
the runs (the table's columns), or with ``--group`` one per configuration, its mean over the seeds and
folds with a band from the lowest to the highest run. matplotlib and tensorboard are imported only here.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import (
    FormatStrFormatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    PercentFormatter,
)

from mnist_lightning.errors import UserError
from mnist_lightning.tools.runs.curves import Curve, read_curves
from mnist_lightning.tools.runs.reading import Run
from mnist_lightning.tools.runs.render import PERCENT_COLUMNS, format_value
from mnist_lightning.tools.runs.table import RESULT_COLUMNS, configuration, configurations

NOT_SETTINGS = {"run", "runs", "when", "status", *RESULT_COLUMNS}
MAX_LEGEND = 40  # more lines than this: no legend (it would hide the plot), a note instead


def default_output(metrics: list[str]) -> Path:
    return Path("runs_" + "_".join(re.sub(r"[^\w.-]+", "-", metric) for metric in metrics) + ".png")


def plot_rows(
    rows: list[dict[str, Any]], columns: list[str], runs: list[Run], metrics: list[str], output: Path
) -> str:
    """Draw ``metrics`` for the table's ``rows`` (of runs, or of configurations when they have a ``runs``
    column) into ``output``; returns what was drawn, in a line."""
    grouped = "runs" in columns
    if grouped:
        keys, groups = configurations(runs)
        members = [groups[configuration(row, keys)] for row in rows]
    else:
        by_name = {run.name: run for run in runs}
        members = [[by_name[row["run"]]] for row in rows]
    curves, logged = {}, set()
    for run in runs:
        curves[run.name], names = read_curves(run.folder, metrics)
        logged |= names
    for metric in metrics:
        having = [run for run in runs if metric in curves[run.name]]
        if not having:
            listing = ", ".join(sorted(logged)) or "none (no metrics.csv or TensorBoard event files)"
            raise UserError(
                f"--plot {metric}: no such metric in the {len(runs)} runs listed; they logged: {listing}."
            )
        if len(having) < len(runs):
            missing = [run.name for run in runs if metric not in curves[run.name]]
            print(f"Note: {len(missing)} of the runs have no {metric}: {', '.join(missing[:5])}"
                  f"{' ...' if len(missing) > 5 else ''}", file=sys.stderr)  # fmt: skip
    labels = _labels(rows, columns, members, grouped)
    figure = _draw(metrics, labels, [[curves[run.name] for run in group] for group in members], grouped)
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=100, bbox_inches="tight")
    lines = f"{len(rows)} configuration(s) of {len(runs)} runs" if grouped else f"{len(runs)} runs"
    return f"Wrote {output}: {', '.join(metrics)} of {lines}."


def _labels(
    rows: list[dict[str, Any]], columns: list[str], members: list[list[Run]], grouped: bool
) -> list[str]:
    # the settings that differ between the lines drawn (the table's columns may hold one equal for all of
    # them: the commit, a scheduler none of them has); a single line is named by its run alone
    settings = [
        column
        for column in columns
        if column not in NOT_SETTINGS and len({format_value(column, row.get(column)) for row in rows}) > 1
    ]
    names = [row["run"] for row in rows]
    folder = os.path.commonpath(names) if len(names) > 1 else ""
    labels = []
    for row, group, name in zip(rows, members, names, strict=True):
        name = os.path.relpath(name, folder) if folder and name != folder else name
        described = " ".join(f"{column}={format_value(column, row.get(column))}" for column in settings)
        if grouped:
            labels.append(f"{described or name} (n={len(group)})")
        else:
            labels.append(f"{name} {described}".strip())
    return labels


def _draw(
    metrics: list[str], labels: list[str], lines: list[list[dict[str, Curve]]], grouped: bool
) -> Figure:
    legend = len(lines) <= MAX_LEGEND
    # the legend under the panels, in as many columns as fit 9 inches: the curves keep the picture's width
    columns = max(1, min(len(labels), int(9 / (0.055 * max(map(len, labels)) + 0.4))))
    rows = -(-len(labels) // columns) if legend else 0
    figure = Figure(figsize=(9, 0.6 + 3.2 * len(metrics) + 0.17 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(metrics), 1, squeeze=False)[:, 0]
    colors = _colors(len(lines))
    for ax, metric in zip(axes, metrics, strict=True):
        per = "epoch"
        for index, (label, group) in enumerate(zip(labels, lines, strict=True)):
            found = [curves[metric] for curves in group if metric in curves]
            if not found:
                continue
            per = found[0].per
            color, style = colors[index]
            if grouped:
                xs, mean, low, high = _band(found)
                ax.plot(
                    xs, mean, color=color, linestyle=style, label=label, marker="." if len(xs) < 30 else None
                )
                ax.fill_between(xs, low, high, color=color, alpha=0.18, linewidth=0)
            else:
                [curve] = found
                ax.plot(curve.x, curve.y, color=color, linestyle=style, label=label, linewidth=1.2,
                        marker="." if len(curve.x) < 30 else None)  # fmt: skip
        ax.set_title(
            metric + (" (mean over the runs, band: lowest to highest)" if grouped else ""), fontsize=10
        )
        ax.set_xlabel(per)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if metric in PERCENT_COLUMNS or metric.endswith("_acc") or metric.endswith("_acc_best"):
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        elif "loss" in metric and all(value > 0 for line in ax.get_lines() for value in line.get_ydata()):
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(NullFormatter())
    if legend:
        handles, names = axes[0].get_legend_handles_labels()
        figure.legend(handles, names, loc="outside lower center", ncols=columns, fontsize=7, frameon=False)
    else:
        figure.suptitle(f"{len(lines)} lines: no legend (narrow them with --filter or --group)", fontsize=9)
    return figure


def _band(curves: list[Curve]) -> tuple[list[int], list[float], list[float], list[float]]:
    """The mean, lowest and highest value at each epoch (or step) of the runs that reached it."""
    values: dict[int, list[float]] = {}
    for curve in curves:
        for x, y in zip(curve.x, curve.y, strict=True):
            values.setdefault(x, []).append(y)
    xs = sorted(values)
    return (
        xs,
        [statistics.fmean(values[x]) for x in xs],
        [min(values[x]) for x in xs],
        [max(values[x]) for x in xs],
    )


def _colors(count: int) -> list[tuple[Any, str]]:
    """A color and line style per line: tab10 up to 10 lines, tab20 up to 20, then the styles change."""
    from matplotlib import colormaps

    palette = colormaps["tab10" if count <= 10 else "tab20"].colors
    styles = ("-", "--", ":", "-.")
    return [(palette[i % len(palette)], styles[(i // len(palette)) % len(styles)]) for i in range(count)]
