"""``python -m mnist_lightning runs``: a table of the runs under a log folder, sweeps' trials included, or
with ``--plot METRIC`` their curves (``plot``, which alone imports matplotlib and tensorboard).

Reading (``reading``), the rows (``table``) and the text (``render``) import neither torch nor Lightning,
so a folder of many runs is listed in well under a second.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import shutil
import sys
from pathlib import Path

from mnist_lightning.cli.console import CommandParser
from mnist_lightning.errors import UserError
from mnist_lightning.run_layout import LOG_ROOT
from mnist_lightning.tools.runs.reading import attach_evaluations, find_runs
from mnist_lightning.tools.runs.render import render
from mnist_lightning.tools.runs.table import group_rows, run_rows, sort_key


def parse_args(args: list[str]) -> argparse.Namespace:
    parser = CommandParser(
        "runs",
        description="A table of the runs under a log folder (sweeps' trials included): hyperparameters that "
        "differ "
        "between the listed runs, epochs, best val_acc, test_acc, fit time and best checkpoint.",
    )
    parser.add_argument(
        "log_dir", nargs="?", default=LOG_ROOT, help=f"the folder to list (default: {LOG_ROOT})"
    )
    parser.add_argument(
        "--sort",
        default="when",
        help="the column to sort by, e.g. val_acc, lr, run; '-val_acc' or --desc for descending "
        "(default: when)",
    )  # fmt: skip
    parser.add_argument("--desc", action="store_true", help="sort in descending order")
    parser.add_argument(
        "--filter",
        help="only the runs whose folder (relative to LOG_DIR) matches this glob, e.g. 'sweeps/mlp/*'",
    )
    parser.add_argument(
        "--group", action="store_true", help="one row per configuration, seeds and folds apart: mean ± sd"
    )
    parser.add_argument("--format", choices=("table", "csv", "markdown"), default="table")
    parser.add_argument(
        "--wide", action="store_true", help="every column, however wide the terminal (the table fits it)"
    )
    parser.add_argument(
        "--plot", action="append", metavar="METRIC",
        help="instead of the table, draw METRIC (val_acc, train_loss, lr-Adam, ...) of the listed runs per "
        "epoch, one line per row of the table, from the runs' TensorBoard event files or metrics.csv; again "
        "for another panel",
    )  # fmt: skip
    parser.add_argument(
        "--output", help="the --plot image (default: LOG_DIR/runs_METRIC.png, beside the runs, git-ignored)"
    )
    return parser.parse_args(joined_sort_value(args))


def joined_sort_value(args: list[str]) -> list[str]:
    """``--sort -val_acc`` as ``--sort=-val_acc``: argparse takes a value starting with '-' for an option."""
    joined: list[str] = []
    for arg in args:
        if joined and joined[-1] == "--sort" and arg.startswith("-") and arg not in ("-h", "--help"):
            joined[-1] = f"--sort={arg}"
        else:
            joined.append(arg)
    return joined


def unknown_column(column: str, names: list[str], columns: list[str]) -> UserError:
    """The error for ``--sort`` of a column that does not exist: the close names, and the table's columns
    (not every setting's full and short name, which are dozens)."""
    close = difflib.get_close_matches(column, names, n=3)
    guess = f" (did you mean {' or '.join(close)}?)" if close else ""
    return UserError(f"--sort {column}: no such column{guess}; the table's columns: {', '.join(columns)}.")


def main(args: list[str]) -> None:
    options = parse_args(list(args))
    if options.output and not options.plot:
        raise UserError("--output names the image of --plot METRIC; add --plot.")
    root = Path(options.log_dir)
    if not root.is_dir():
        raise UserError(
            f"'{root}' is not a folder (runs lists the runs under a log folder, e.g. lightning_logs)."
        )
    runs, evaluations = find_runs(root)
    runs += attach_evaluations(runs, evaluations, root)
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
        raise unknown_column(column, list(names), columns)
    rows.sort(key=sort_key(names[column]), reverse=descending)
    if descending:  # runs without the value last either way
        rows.sort(key=lambda row: sort_key(names[column])(row)[0] == 2)
    if options.plot:
        from mnist_lightning.tools.runs.plot import default_output, plot_rows  # matplotlib, tensorboard

        output = Path(options.output) if options.output else root / default_output(options.plot)
        print(plot_rows(rows, columns, runs, options.plot, output))
        return
    width = None if options.wide else shutil.get_terminal_size(fallback=(0, 0)).columns  # 0: not a terminal
    sys.stdout.write(render(rows, columns, options.format, width or None))
