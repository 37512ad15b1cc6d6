"""What a model card measures on an exported file besides the test set: its answers on inputs that are not
digits (blank pictures, noise, letters), its calibration, and the reliability diagram that shows it."""

from __future__ import annotations

import io
import string
from dataclasses import dataclass

import numpy as np
import torch

CALIBRATION_BINS = 15  # of the expected calibration error and the reliability diagram
NOISE_IMAGES = 200
NOISE_SEED = 0
LETTERS = string.ascii_uppercase + string.ascii_lowercase  # rendered with PIL's default font


def blank_images() -> np.ndarray:
    """An all-black and an all-white image, float32 (2, 1, 28, 28) in [0, 1]."""
    return np.stack([np.zeros((1, 28, 28), np.float32), np.ones((1, 28, 28), np.float32)])


def noise_images(count: int = NOISE_IMAGES) -> np.ndarray:
    """``count`` images of uniform noise in [0, 1] (fixed seed), float32 (N, 1, 28, 28)."""
    return np.random.default_rng(NOISE_SEED).random((count, 1, 28, 28), dtype=np.float32)


def letter_images() -> np.ndarray:
    """The 52 Latin letters drawn with PIL's default font and prepared as a person's picture of a digit is
    (``data.digits.prepare_digit``: fitted to 20x20, centred, white on black), float32 (52, 1, 28, 28)."""
    from PIL import Image, ImageDraw

    from mnist_lightning.data.digits import prepare_digit

    prepared = []
    for letter in LETTERS:
        picture = Image.new("L", (32, 32), 255)
        ImageDraw.Draw(picture).text((8, 8), letter, fill=0)  # black on white, PIL's default font
        prepared.append(prepare_digit(picture))
    return (np.stack(prepared)[:, None] / np.float32(255)).astype(np.float32)


@dataclass(frozen=True)
class Probe:
    """The file's answers on a set of inputs that are not digits of its data set."""

    name: str
    images: int
    mean_confidence: float  # the mean of the top class probability
    class_counts: dict[str, int]  # how many inputs it put in each class, the classes it never chose left out


def probe(name: str, probabilities: np.ndarray, classes: tuple[str, ...]) -> Probe:
    """Summarize the probabilities (N, C) a file gave a set of inputs."""
    chosen = np.bincount(probabilities.argmax(axis=1), minlength=len(classes))
    return Probe(
        name=name,
        images=len(probabilities),
        mean_confidence=float(probabilities.max(axis=1).mean()),
        class_counts={classes[index]: int(count) for index, count in enumerate(chosen) if count},
    )


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The expected calibration error (15 equal bins of the top probability, L1), by torchmetrics."""
    from torchmetrics.classification import MulticlassCalibrationError

    metric = MulticlassCalibrationError(
        num_classes=probabilities.shape[1], n_bins=CALIBRATION_BINS, norm="l1"
    )
    return float(metric(torch.from_numpy(probabilities), torch.from_numpy(labels).long()))


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray) -> list[tuple[float, float, float, int]]:
    """(bin lower edge, mean confidence, accuracy, images) for each of the 15 bins of the top probability
    that holds images (torchmetrics' bins: (lower, upper], the first including 0)."""
    confidence, correct = probabilities.max(axis=1), probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, CALIBRATION_BINS + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, CALIBRATION_BINS - 1)
    rows = []
    for bin_index in range(CALIBRATION_BINS):
        members = index == bin_index
        if members.any():
            rows.append(
                (
                    float(edges[bin_index]),
                    float(confidence[members].mean()),
                    float(correct[members].mean()),
                    int(members.sum()),
                )
            )
    return rows


def reliability_diagram(bins: list[tuple[float, float, float, int]], ece: float, title: str) -> bytes:
    """A PNG: accuracy against confidence per bin (a perfectly calibrated model lies on the diagonal), and
    below it how many test images fall in each bin (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    width = 1 / CALIBRATION_BINS
    figure = Figure(figsize=(5, 6), dpi=100)
    upper, lower = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    lowers = [row[0] for row in bins]
    upper.bar(
        lowers, [row[2] for row in bins], width=width, align="edge", edgecolor="black", label="accuracy"
    )
    upper.plot(
        [row[1] for row in bins], [row[2] for row in bins], "o", color="tab:red", label="mean confidence"
    )
    upper.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    upper.set(ylim=(0, 1), ylabel="accuracy", title=f"{title}\nECE {ece:.4f} ({CALIBRATION_BINS} bins, L1)")
    upper.legend(loc="upper left")
    lower.bar(
        lowers, [row[3] for row in bins], width=width, align="edge", edgecolor="black", color="tab:grey"
    )
    lower.set(xlim=(0, 1), yscale="log", xlabel="top class probability", ylabel="test images")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
