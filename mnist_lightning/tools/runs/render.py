"""The runs table as text: aligned columns for the terminal, CSV, or Markdown."""

from __future__ import annotations

import csv
import io
import re
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

from mnist_lightning.tools.runs.table import MeanSd

PERCENT_COLUMNS = ("val_acc", "test_acc")


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


# a table wider than the terminal leaves out these first, then the settings (rightmost first), then the last
DROPPED_FIRST, DROPPED_LAST = ("best_checkpoint", "when", "fit_s"), ("status", "runs")
KEPT = ("run", "epochs", "val_acc", "test_acc")  # never left out


def render(rows: list[dict[str, Any]], columns: list[str], style: str, width: int | None = None) -> str:
    """The table as ``style`` (``table``, ``csv``, ``markdown``), every column named the same in each; a
    ``table`` wider than ``width`` characters leaves columns out (``DROPPED_FIRST`` first) and says which."""
    if style == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([format_value(column, row.get(column), machine=True) for column in columns])
        return buffer.getvalue()
    cells = {column: [format_value(column, row.get(column)) for row in rows] for column in columns}
    if style == "markdown":
        numeric = {column: all(map(_numeric, cells[column])) for column in columns}
        lines = ["| " + " | ".join(columns) + " |"]
        lines.append("| " + " | ".join("---:" if numeric[column] else "---" for column in columns) + " |")
        lines += [
            "| " + " | ".join(cells[column][index].replace("|", "\\|") for column in columns) + " |"
            for index in range(len(rows))
        ]
        return "\n".join(lines) + "\n"
    widths = {column: max(len(column), *map(len, cells[column])) for column in columns}
    shown = list(columns)
    named = DROPPED_FIRST + DROPPED_LAST + KEPT
    settings = [column for column in reversed(shown) if column not in named]
    droppable = [column for column in (*DROPPED_FIRST, *settings, *DROPPED_LAST) if column in shown]
    while width and _table_width(shown, widths) > width and droppable:
        shown.remove(droppable.pop(0))
    header = [(column, column) for column in shown]
    body = [[(column, cells[column][index]) for column in shown] for index in range(len(rows))]
    lines = [
        "  ".join(text.ljust(widths[column]) for column, text in line).rstrip() for line in [header, *body]
    ]
    left_out = [column for column in columns if column not in shown]
    if left_out:
        note = (
            f"({len(left_out)} of {len(columns)} columns left out to fit {width} characters: "
            f"{', '.join(left_out)}; --wide shows them all)"
        )
        lines += textwrap.wrap(note, width, break_on_hyphens=False)
    return "\n".join(lines) + "\n"


def _table_width(columns: list[str], widths: dict[str, int]) -> int:
    return sum(widths[column] for column in columns) + 2 * (len(columns) - 1)


def _numeric(text: str) -> bool:
    return bool(re.fullmatch(r"[-+>=]*[0-9.e+-]+%?( ± [0-9.]+)?|-", text))
