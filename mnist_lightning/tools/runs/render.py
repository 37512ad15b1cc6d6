"""The runs table as text: aligned columns for the terminal, CSV, or Markdown."""

from __future__ import annotations

import csv
import io
import re
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


def header(column: str) -> str:
    """A column's heading: ``max_lr`` for ``model.scheduler.init_args.max_lr``, ``data.fold`` as it is."""
    return column.rsplit(".", 1)[-1] if column.count(".") > 1 else column


def render(rows: list[dict[str, Any]], columns: list[str], style: str) -> str:
    headers = [header(column) for column in columns]
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
