"""The test report: per-digit precision/recall/F1, the confusion matrix, and the most confident mistakes.

Everything is derived from a confusion matrix (rows = true digit, columns = predicted digit) that
torchmetrics' ``MulticlassConfusionMatrix`` accumulates exactly across devices, plus the
:class:`MostConfidentMistakes` metric. :func:`write_test_report` writes the files into a run's log
directory; :func:`log_test_report` puts the same pictures and text into TensorBoard. Figures are drawn
with matplotlib's Agg canvas (no display needed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from torchmetrics import Metric

NUM_CLASSES = 10
GALLERY_SIZE = 32
GALLERY_COLUMNS = 8
REPORT_FILES = (
    "classification_report.txt",
    "report.json",
    "confusion_matrix.csv",
    "confusion_matrix.png",
    "misclassified.png",
)


class Mistakes(NamedTuple):
    """Misclassified samples, surest first: inputs (N, 28, 28), true and predicted digit, probability."""

    images: torch.Tensor
    targets: torch.Tensor
    preds: torch.Tensor
    confidences: torch.Tensor


class TestResults(NamedTuple):
    """What the test epoch leaves for the report: the (10, 10) confusion matrix and the worst mistakes."""

    confusion_matrix: torch.Tensor
    mistakes: Mistakes


def _merge_ranks(stacked: torch.Tensor) -> torch.Tensor:
    """(world_size, k, ...) states gathered from all ranks -> (world_size * k, ...)."""
    return stacked.flatten(0, 1)


class MostConfidentMistakes(Metric):
    """The ``k`` misclassified samples whose wrong prediction had the highest probability, over all ranks.

    Each rank keeps a fixed-size top ``k`` (padded with confidence -1), so the states gather across ranks
    however many samples each rank saw; ``compute`` merges them and returns a :class:`Mistakes` on the CPU.
    """

    full_state_update = False

    def __init__(self, k: int = GALLERY_SIZE, image_size: int = 28, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.k = k
        self.add_state("confidences", torch.full((k,), -1.0), dist_reduce_fx=_merge_ranks)
        self.add_state("images", torch.zeros(k, image_size, image_size), dist_reduce_fx=_merge_ranks)
        self.add_state("targets", torch.zeros(k, dtype=torch.long), dist_reduce_fx=_merge_ranks)
        self.add_state("preds", torch.zeros(k, dtype=torch.long), dist_reduce_fx=_merge_ranks)

    def update(self, inputs: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        confidences, preds = logits.detach().float().softmax(dim=1).max(dim=1)
        wrong = preds != targets
        self._keep_top(
            torch.cat([self.confidences, confidences[wrong]]),
            torch.cat([self.images, inputs[wrong].detach().float().reshape(-1, *self.images.shape[1:])]),
            torch.cat([self.targets, targets[wrong]]),
            torch.cat([self.preds, preds[wrong]]),
        )

    def _keep_top(self, confidences, images, targets, preds) -> None:
        top = confidences.topk(self.k).indices
        self.confidences, self.images = confidences[top], images[top]
        self.targets, self.preds = targets[top], preds[top]

    def compute(self) -> Mistakes:
        confidences = self.confidences.reshape(-1)
        order = confidences.argsort(descending=True, stable=True)[: self.k]
        order = order[confidences[order] >= 0]
        images = self.images.reshape(-1, *self.images.shape[-2:])
        return Mistakes(
            images[order].cpu(),
            self.targets.reshape(-1)[order].cpu(),
            self.preds.reshape(-1)[order].cpu(),
            confidences[order].cpu(),
        )


def classification_report(confusion_matrix: torch.Tensor) -> dict[str, Any]:
    """Precision, recall, F1 and support per digit, their macro and weighted averages, and accuracy.

    As scikit-learn's ``classification_report`` (with ``zero_division=0``): macro averages every digit
    equally, weighted weighs each digit by its support. The confusion matrix is included as nested lists.
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
            str(digit): {
                **{name: values[digit].item() for name, values in scores.items()},
                "support": int(support[digit]),
            }
            for digit in range(len(support))
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
            "rows": "true digit",
            "columns": "predicted digit",
            "counts": confusion_matrix.to(torch.long).tolist(),
        },
    }


def _divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    return torch.where(
        denominator > 0, numerator / denominator.clamp(min=1e-300), torch.zeros_like(numerator)
    )


def format_classification_report(report: dict[str, Any], digits: int = 4) -> str:
    """The report as text, laid out like scikit-learn's ``classification_report``."""
    width = len("weighted avg")
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


def confusion_matrix_csv(confusion_matrix: torch.Tensor) -> str:
    """Counts as CSV with a header: one row per true digit, one column per predicted digit."""
    classes = range(confusion_matrix.shape[0])
    lines = [",".join(["true_digit", *(f"pred_{digit}" for digit in classes)])]
    for digit, row in zip(classes, confusion_matrix.to(torch.long).tolist(), strict=True):
        lines.append(",".join(map(str, [digit, *row])))
    return "\n".join(lines) + "\n"


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def confusion_matrix_figure(confusion_matrix: torch.Tensor, title: str) -> Figure:
    """A heat map of the counts (log colour scale, so rare mistakes show), each count written in its cell."""
    counts = confusion_matrix.to(torch.long).cpu().numpy()
    classes = np.arange(counts.shape[0])
    figure = _new_figure(6.4, 5.6)
    axes = figure.subplots()
    norm = LogNorm(vmin=1, vmax=max(int(counts.max()), 2))
    image = axes.imshow(np.ma.masked_equal(counts, 0), cmap="Blues", norm=norm)
    figure.colorbar(image, ax=axes, label="images (log scale)")
    dark = math.sqrt(norm.vmax)  # cells above this are drawn dark enough for white text
    for (row, col), count in np.ndenumerate(counts):
        if count:
            axes.text(
                col,
                row,
                str(count),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if count > dark else "black",
            )
    axes.set(xticks=classes, yticks=classes, xlabel="Predicted digit", ylabel="True digit", title=title)
    axes.set_xticks(classes - 0.5, minor=True)
    axes.set_yticks(classes - 0.5, minor=True)
    axes.grid(which="minor", color="0.85", linewidth=0.5)
    axes.tick_params(which="minor", length=0)
    return figure


def mistakes_figure(mistakes: Mistakes, misclassified: int, total: int) -> Figure:
    """A grid of the most confident mistakes, each captioned with true and predicted digit and confidence."""
    shown = len(mistakes.confidences)
    rows = max(1, math.ceil(shown / GALLERY_COLUMNS))
    figure = _new_figure(1.35 * GALLERY_COLUMNS, 1.55 * rows + 0.5)
    figure.suptitle(
        f"Most confident mistakes: {shown} of {misclassified} misclassified test digits (of {total})"
        if shown
        else f"No misclassified test digits (of {total})"
    )
    for position, axes in enumerate(figure.subplots(rows, GALLERY_COLUMNS, squeeze=False).flat):
        axes.set_axis_off()
        if position < shown:
            axes.imshow(mistakes.images[position].numpy(), cmap="gray")
            target, pred = mistakes.targets[position].item(), mistakes.preds[position].item()
            confidence = mistakes.confidences[position].item()
            axes.set_title(f"true {target} → pred {pred}\n{confidence:.1%}", fontsize=9)
    return figure


def figure_pixels(figure: Figure) -> np.ndarray:
    """The rendered figure as an (H, W, 3) uint8 array, e.g. for TensorBoard's ``add_image``."""
    canvas = figure.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def confusion_matrix_pixels(confusion_matrix: torch.Tensor, cell: int = 16) -> np.ndarray:
    """The matrix as a bare (H, W, 3) uint8 heat map, rows true digit, columns predicted, log-scaled blues.

    No text, so it takes milliseconds, not the annotated figure's ~0.4 s: the per-epoch validation image.
    """
    counts = confusion_matrix.double().cpu()
    level = torch.log1p(counts) / math.log1p(max(counts.max().item(), 1.0))
    rgb = colormaps["Blues"](level.numpy())[..., :3]
    return (np.kron(rgb, np.ones((cell, cell, 1))) * 255).astype(np.uint8)


def log_confusion_matrix(experiment, tag: str, confusion_matrix: torch.Tensor, step: int) -> None:
    """Add the confusion-matrix heat map to a TensorBoard ``SummaryWriter`` as an image."""
    total = int(confusion_matrix.sum())
    accuracy = confusion_matrix.diagonal().sum().item() / max(total, 1)
    figure = confusion_matrix_figure(confusion_matrix, f"{tag}: {total} images, accuracy {accuracy:.2%}")
    experiment.add_image(tag, figure_pixels(figure), step, dataformats="HWC")


def log_test_report(experiment, results: TestResults, step: int) -> None:
    """Add the test confusion matrix, mistakes gallery and text report to a TensorBoard ``SummaryWriter``."""
    report = classification_report(results.confusion_matrix)
    log_confusion_matrix(experiment, "test_confusion_matrix", results.confusion_matrix, step)
    gallery = mistakes_figure(results.mistakes, report["misclassified"], report["support"])
    experiment.add_image("test_misclassified", figure_pixels(gallery), step, dataformats="HWC")
    # TensorBoard renders text as Markdown: indenting by four spaces keeps the columns aligned
    text = "\n".join("    " + line for line in format_classification_report(report).splitlines())
    experiment.add_text("test_classification_report", text, step)


def write_test_report(log_dir: str | Path, results: TestResults) -> dict[str, Any]:
    """Write the five report files (see ``REPORT_FILES``) into ``log_dir``; returns the report as a dict.

    ``report.json`` holds :func:`classification_report` plus the gallery's mistakes (true, predicted,
    confidence), most confident first.
    """
    folder = Path(log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    report = classification_report(results.confusion_matrix)
    (folder / "classification_report.txt").write_text(format_classification_report(report))
    worst = results.mistakes
    listed = zip(worst.targets.tolist(), worst.preds.tolist(), worst.confidences.tolist(), strict=True)
    report["most_confident_mistakes"] = [
        {"true": target, "predicted": pred, "confidence": confidence} for target, pred, confidence in listed
    ]
    (folder / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "confusion_matrix.csv").write_text(confusion_matrix_csv(results.confusion_matrix))
    title = f"Test confusion matrix: {report['support']} images, accuracy {report['accuracy']:.2%}"
    confusion_matrix_figure(results.confusion_matrix, title).savefig(folder / "confusion_matrix.png")
    gallery = mistakes_figure(results.mistakes, report["misclassified"], report["support"])
    gallery.savefig(folder / "misclassified.png")
    return report
