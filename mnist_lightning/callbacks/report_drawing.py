"""The test report drawn and written: per-class precision/recall/F1, the confusion matrix, the mistakes.

Everything is derived from a confusion matrix (rows = true class, columns = predicted class) and the most
confident mistakes, which ``callbacks.TestReport`` accumulates exactly across devices.
:func:`draw_test_report` renders it once; :func:`write_test_report` writes it into a folder and
:func:`log_test_report` puts the same pictures and text into TensorBoard. Figures are drawn with
matplotlib's Agg canvas (no display needed); this module is imported only when a report is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from mnist_lightning.callbacks.outputs import write_json
from mnist_lightning.run_layout import (
    CLASSIFICATION_REPORT_FILE,
    CONFUSION_CSV_FILE,
    CONFUSION_IMAGE_FILE,
    MISCLASSIFIED_IMAGE_FILE,
    REPORT_NUMBERS_FILE,
)

GALLERY_COLUMNS = 8


def classification_report(confusion_matrix: torch.Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """Precision, recall, F1 and support per class, their macro and weighted averages, and accuracy.

    As scikit-learn's ``classification_report`` (with ``zero_division=0``): macro averages every class
    equally, weighted weighs each class by its support. The confusion matrix is included as nested lists.

    Written out rather than taken from torchmetrics' ``multiclass_precision``/``recall``/``f1_score``: those
    give the same per-class scores (``average=None``; ``tests/callbacks/test_report.py`` holds them equal)
    but in float32 (the files would show 0.8196721076965332 for 50/61), they take predictions rather than
    the confusion matrix the report is drawn from, and their ``average="macro"`` leaves out a class with
    neither samples nor predictions, where scikit-learn's counts it as 0.
    """
    counts = confusion_matrix.to(torch.float64)
    support, predicted, correct = counts.sum(dim=1), counts.sum(dim=0), counts.diagonal()
    precision = _divide(correct, predicted)
    recall = _divide(correct, support)
    f1 = _divide(2 * precision * recall, precision + recall)
    total = support.sum()
    scores = {"precision": precision, "recall": recall, "f1": f1}
    return {
        "accuracy": _divide(correct.sum(), total).item(),
        "support": int(total),
        "misclassified": int(total - correct.sum()),
        "per_class": {
            name: {
                **{score: values[index].item() for score, values in scores.items()},
                "support": int(support[index]),
            }
            for index, name in enumerate(classes)
        },
        "macro_avg": {
            **{name: values.mean().item() for name, values in scores.items()},
            "support": int(total),
        },
        "weighted_avg": {
            **{name: _divide((values * support).sum(), total).item() for name, values in scores.items()},
            "support": int(total),
        },
        "confusion_matrix": {
            "rows": "true class",
            "columns": "predicted class",
            "classes": list(classes),
            "counts": confusion_matrix.to(torch.long).tolist(),
        },
    }


def _divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return torch.where(
        denominator > 0, numerator / denominator.clamp(min=1e-300), torch.zeros_like(numerator)
    )


def format_classification_report(report: dict[str, Any], digits: int = 4) -> str:
    """The report as text, laid out like scikit-learn's ``classification_report``."""
    width = max(len("weighted avg"), *(len(name) for name in report["per_class"]))
    header = f"{'':>{width}s} " + "".join(
        f" {name:>9}" for name in ("precision", "recall", "f1-score", "support")
    )
    lines = [header, ""]
    row = "{:>{width}s} " + " {:>9.{digits}f}" * 3 + " {:>9}"
    for name, scores in report["per_class"].items():
        lines.append(row.format(name, *_scores(scores), width=width, digits=digits))
    lines.append("")
    accuracy = "{:>{width}s} " + " {:>9}" * 2 + " {:>9.{digits}f} {:>9}"
    lines.append(
        accuracy.format("accuracy", "", "", report["accuracy"], report["support"], width=width, digits=digits)
    )
    lines.append(row.format("macro avg", *_scores(report["macro_avg"]), width=width, digits=digits))
    lines.append(row.format("weighted avg", *_scores(report["weighted_avg"]), width=width, digits=digits))
    return "\n".join(lines) + "\n"


def _scores(scores: dict[str, float]) -> tuple:
    return scores["precision"], scores["recall"], scores["f1"], scores["support"]


def confusion_matrix_csv(confusion_matrix: torch.Tensor, classes: Sequence[str]) -> str:
    """Counts as CSV with a header: one row per true class, one column per predicted class."""
    lines = [",".join(["true_class", *(f"pred_{name}" for name in classes)])]
    for name, row in zip(classes, confusion_matrix.to(torch.long).tolist(), strict=True):
        lines.append(",".join(map(str, [name, *row])))
    return "\n".join(lines) + "\n"


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def confusion_matrix_figure(confusion_matrix: torch.Tensor, classes: Sequence[str], title: str) -> Figure:
    """A heat map of the counts (log colour scale, so rare mistakes show), every count written in its cell
    (zeros in light grey)."""
    counts = confusion_matrix.to(torch.long).cpu().numpy()
    ticks = np.arange(counts.shape[0])
    figure = _new_figure(6.4 + 0.1 * max(map(len, classes)), 5.6)
    axes = figure.subplots()
    norm = LogNorm(vmin=1, vmax=max(int(counts.max()), 2))
    image = axes.imshow(np.ma.masked_equal(counts, 0), cmap="Blues", norm=norm)
    figure.colorbar(image, ax=axes, label="images (log scale)")
    dark = math.sqrt(norm.vmax)  # cells above this are drawn dark enough for white text
    for (row, col), count in np.ndenumerate(counts):
        colour = "0.75" if count == 0 else "white" if count > dark else "black"
        axes.text(col, row, str(count), ha="center", va="center", fontsize=8, color=colour)
    axes.set(xticks=ticks, yticks=ticks, xlabel="Predicted class", ylabel="True class", title=title)
    axes.set_xticklabels(classes, rotation=45 if max(map(len, classes)) > 2 else 0, ha="right")
    axes.set_yticklabels(classes)
    axes.set_xticks(ticks - 0.5, minor=True)
    axes.set_yticks(ticks - 0.5, minor=True)
    axes.grid(which="minor", color="0.85", linewidth=0.5)
    axes.tick_params(which="minor", length=0)
    return figure


def mistakes_figure(mistakes, classes: Sequence[str], misclassified: int, total: int) -> Figure:
    """A grid of the most confident mistakes, each captioned with true and predicted class and confidence."""
    shown = len(mistakes.confidences)
    rows = max(1, math.ceil(shown / GALLERY_COLUMNS))
    figure = _new_figure(1.6 * GALLERY_COLUMNS, 1.6 * rows + 0.5)
    figure.suptitle(
        f"Most confident mistakes: {shown} of {misclassified} misclassified test images (of {total})"
        if shown
        else f"No misclassified test images (of {total})"
    )
    for position, axes in enumerate(figure.subplots(rows, GALLERY_COLUMNS, squeeze=False).flat):
        axes.set_axis_off()
        if position < shown:
            axes.imshow(mistakes.images[position].numpy(), cmap="gray")
            target = classes[mistakes.targets[position].item()]
            pred = classes[mistakes.preds[position].item()]
            confidence = mistakes.confidences[position].item()
            axes.set_title(f"true {target}\n→ {pred} {confidence:.1%}", fontsize=8)
    return figure


def figure_pixels(figure: Figure) -> np.ndarray:
    """The rendered figure as an (H, W, 3) uint8 array, e.g. for TensorBoard's ``add_image``."""
    canvas = figure.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def confusion_matrix_pixels(confusion_matrix: torch.Tensor, classes: Sequence[str], title: str) -> np.ndarray:
    """The matrix as a small labelled (H, W, 3) uint8 picture: a log-scaled heat map with each count in its
    cell (zeros light grey), the classes along both axes (columns by index, rows by index and name), a title
    and which axis is which. Drawn with Pillow, far quicker than the test report's annotated matplotlib
    figure (benchmarks/NOTES.md): the per-epoch validation image."""
    from PIL import Image, ImageDraw, ImageFont

    counts = confusion_matrix.to(torch.long).cpu()
    size = counts.shape[0]
    font = ImageFont.load_default(size=11)
    rows = [name if name == str(index) else f"{index} {name}" for index, name in enumerate(classes)]
    cell = max(24, round(font.getlength(str(int(counts.max())))) + 8)
    left, top = round(max(map(font.getlength, rows))) + 12, 40
    caption = "rows: true class, columns: predicted class"
    width = max(left + size * cell, round(max(map(font.getlength, (title, caption))))) + 10
    image = Image.new("RGB", (width, top + size * cell + 24), "white")
    draw = ImageDraw.Draw(image)
    draw.text((5, 5), title, fill="black", font=font)
    level = torch.log1p(counts.double()) / math.log1p(max(counts.max().item(), 1.0))
    colours = (colormaps["Blues"](level.numpy())[..., :3] * 255).astype(np.uint8)
    for column in range(size):
        x = left + column * cell + cell / 2
        draw.text((x, top - 4), str(column), fill="black", font=font, anchor="md")
    for row in range(size):
        y = top + row * cell
        draw.text((left - 6, y + cell / 2), rows[row], fill="black", font=font, anchor="rm")
        for column in range(size):
            x, count = left + column * cell, int(counts[row, column])
            fill = tuple(int(channel) for channel in colours[row, column])
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=fill)
            ink = (190, 190, 190) if count == 0 else "white" if level[row, column] > 0.6 else "black"
            draw.text((x + cell / 2, y + cell / 2), str(count), fill=ink, font=font, anchor="mm")
    draw.text((5, top + size * cell + 6), caption, fill=(90, 90, 90), font=font)
    return np.asarray(image)


def _confusion_title(report: dict[str, Any]) -> str:
    return f"Test confusion matrix: {report['support']} images, accuracy {report['accuracy']:.2%}"


@dataclass
class DrawnReport:
    """A test report ready to write and log: its numbers (:func:`classification_report` plus the gallery's
    mistakes) and its two pictures as pixels, each figure rendered once for both the files and TensorBoard."""

    numbers: dict[str, Any]
    confusion_csv: str
    confusion_matrix: np.ndarray
    misclassified: np.ndarray


def draw_test_report(confusion_matrix: torch.Tensor, mistakes, classes: Sequence[str]) -> DrawnReport:
    """The numbers of the report and its pictures (the slow part: about a second for both figures)."""
    numbers = classification_report(confusion_matrix, classes)
    listed = zip(
        mistakes.targets.tolist(), mistakes.preds.tolist(), mistakes.confidences.tolist(), strict=True
    )
    numbers["most_confident_mistakes"] = [
        {"true": classes[target], "predicted": classes[pred], "confidence": confidence}
        for target, pred, confidence in listed
    ]
    figure = confusion_matrix_figure(confusion_matrix, classes, _confusion_title(numbers))
    gallery = mistakes_figure(mistakes, classes, numbers["misclassified"], numbers["support"])
    csv = confusion_matrix_csv(confusion_matrix, classes)
    return DrawnReport(numbers, csv, figure_pixels(figure), figure_pixels(gallery))


def write_test_report(folder: str | Path, report: DrawnReport) -> None:
    """Write the five report files (``run_layout.REPORT_FILES``) into ``folder``; ``report.json`` holds the
    numbers, the gallery's mistakes (true, predicted, confidence) most confident first."""
    from matplotlib.image import imsave

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CLASSIFICATION_REPORT_FILE).write_text(format_classification_report(report.numbers))
    write_json(folder / REPORT_NUMBERS_FILE, report.numbers)
    (folder / CONFUSION_CSV_FILE).write_text(report.confusion_csv)
    imsave(folder / CONFUSION_IMAGE_FILE, report.confusion_matrix)
    imsave(folder / MISCLASSIFIED_IMAGE_FILE, report.misclassified)


def log_test_report(tracker, report: DrawnReport, step: int) -> None:
    """Add the test confusion matrix, mistakes gallery and text report to a logger (a ``Tracker`` of
    ``callbacks/trackers.py``)."""
    tracker.add_image("test_confusion_matrix", report.confusion_matrix, step)
    tracker.add_image("test_misclassified", report.misclassified, step)
    tracker.add_text("test_classification_report", format_classification_report(report.numbers), step)
