"""The model card ``export`` writes beside every file: ``model.onnx.md`` and ``model.onnx.reliability.png``
for ``model.onnx`` (the whole file name: the cards of ``model.onnx`` and ``model.pt2`` can sit side by side).

It says what the file classifies and from which data (the data files' SHA-256 from the run's
``provenance.json``, else computed), how it was trained (the checkpoint's hyperparameters, the git commit),
how good it is on the test set (overall, per class, expected calibration error with a reliability diagram),
what it expects as input, what it does on inputs that are not digits (measured on the file itself) and the
export check's figures. Every figure is measured on the exported file, the int8 one when quantized.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mnist_lightning.callbacks import fingerprints
from mnist_lightning.callbacks.provenance import PROVENANCE_FILE, read_sessions
from mnist_lightning.data.datasets import RAW_FILES, DatasetSpec, raw_folder
from mnist_lightning.errors import UserError
from mnist_lightning.schema import describe_class
from mnist_lightning.tools import model_probes
from mnist_lightning.tools.quantize import as_inputs

CARD_SUFFIX, DIAGRAM_SUFFIX = ".md", ".reliability.png"


@dataclass(frozen=True)
class TrainingFacts:
    """What the checkpoint says about its training: the model's and the data module's hyperparameters, the
    epoch and step it was saved at, and the first session of its run's ``provenance.json`` (None outside a
    run folder)."""

    model: dict[str, Any]
    data: dict[str, Any]
    epoch: int
    global_step: int
    provenance: dict[str, Any] | None = field(default=None)


def training_facts(checkpoint: dict, ckpt_path: str) -> TrainingFacts:
    """What the checkpoint (read and checked by ``export``) says about its training, and its run's provenance:
    the ``provenance.json`` of the folder holding ``ckpt_path`` or of the run folder above it."""
    provenance = None
    for folder in list(Path(ckpt_path).resolve().parents)[:2]:
        sessions = read_sessions(folder / PROVENANCE_FILE)
        if sessions and isinstance(sessions[0], dict):
            provenance = _readable(sessions[0])
            break
    return TrainingFacts(
        model=dict(checkpoint.get("hyper_parameters") or {}),
        data=dict(checkpoint.get("datamodule_hyper_parameters") or {}),
        epoch=int(checkpoint.get("epoch", 0)),
        global_step=int(checkpoint.get("global_step", 0)),
        provenance=provenance,
    )


def _readable(session: dict) -> dict[str, Any]:
    """The parts of a provenance session the card shows, with only well-formed entries: a file like any
    other, ``provenance.json`` may have been edited or damaged."""
    data = session.get("data") if isinstance(session.get("data"), list) else []
    files = [
        e
        for e in data
        if isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("sha256"), str)
    ]
    return {"data": files, "git": session.get("git") if isinstance(session.get("git"), dict) else {}}


def card_paths(target: Path) -> tuple[Path, Path]:
    """The card and its diagram beside ``target``: ``<file name>.md`` and ``<file name>.reliability.png``."""
    return target.with_name(target.name + CARD_SUFFIX), target.with_name(target.name + DIAGRAM_SUFFIX)


def refuse_existing(target: Path, overwrite: bool) -> None:
    """A UserError when ``target`` or its card exists, unless ``overwrite``."""
    for existing in (target, card_paths(target)[0]):
        if existing.exists() and not overwrite:
            raise UserError(
                f"'{existing}' already exists; add --overwrite to replace it, or choose another --output."
            )


@dataclass(frozen=True)
class ModelCard:
    """A card's text and its diagram (PNG bytes; None without a labelled test set)."""

    text: str
    diagram: bytes | None


def _table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _data_section(facts: TrainingFacts, spec: DatasetSpec, data_dir: str) -> str:
    recorded = (facts.provenance or {}).get("data") or []
    if recorded:
        source = "recorded by the training run (`provenance.json`)"
    else:
        folder = raw_folder(data_dir, spec.name)
        recorded = fingerprints.file_hashes([folder / name for name in RAW_FILES[True]])
        source = "computed now from the files in `--data.data_dir` (no record of them beside the checkpoint)"
    rows = [(f"`{Path(entry['path']).name}`", f"`{entry['sha256']}`") for entry in recorded]
    hashes = (
        _table(("file", "SHA-256"), rows) if rows else "No training files found: their SHA-256 is unknown."
    )
    val_size, seed = facts.data.get("val_size"), facts.data.get("seed", "?")
    val_size = val_size if isinstance(val_size, int) else 0
    split = f"{spec.train_size - val_size} training images, {val_size} held out for validation (seed {seed})"
    return f"## Data\n\n{spec.name}: {split}. The training files' SHA-256, {source}:\n\n{hashes}\n"


def _recipe_section(facts: TrainingFacts) -> str:
    model, data, git = facts.model, facts.data, (facts.provenance or {}).get("git") or {}
    optimizer = model.get("optimizer") or {}
    commit = git.get("commit")
    changes = ", with uncommitted changes" if git.get("dirty") else ""
    code = (
        f"`{commit}` ({git.get('branch') or 'detached'}{changes})"
        if commit
        else "unknown (no `provenance.json` with a git commit beside the checkpoint)"
    )
    rows = [
        ("network", f"`{describe_class(model.get('net'))}`"),
        ("optimizer", f"`{describe_class(optimizer)}`"),
        ("learning rate", (optimizer.get("init_args") or {}).get("lr", "?")),
        ("schedule", f"`{describe_class(model.get('scheduler'))}`" if model.get("scheduler") else "none"),
        ("label smoothing", model.get("label_smoothing", 0.0)),
        ("augmentation", f"`{describe_class(data.get('augment'))}`" if data.get("augment") else "none"),
        ("batch size", data.get("batch_size", "?")),
        ("epochs", f"{facts.epoch + 1} (saved in epoch {facts.epoch}, after {facts.global_step} steps)"),
        ("code", code),
    ]
    return "## Training recipe\n\n" + _table(("setting", "value"), rows) + "\n"


def _test_section(
    probabilities: np.ndarray | None, labels: np.ndarray | None, spec: DatasetSpec, diagram_name: str
) -> tuple[str, bytes | None]:
    if probabilities is None or labels is None:
        return (
            "## Test results\n\nNot computed: the test set was not in `--data.data_dir`, so this card has "
            "no test accuracy (overall or per class), no expected calibration error and no reliability "
            "diagram.\n",
            None,
        )
    predicted = probabilities.argmax(axis=1)
    rows = []
    for index, name in enumerate(spec.classes):
        members = labels == index
        correct = int((predicted[members] == index).sum())
        accuracy = f"{correct / members.sum():.2%}" if members.any() else "-"
        rows.append((name, int(members.sum()), correct, accuracy))
    ece = model_probes.expected_calibration_error(probabilities, labels)
    bins = model_probes.reliability_bins(probabilities, labels)
    diagram = model_probes.reliability_diagram(bins, ece, f"{spec.name} test set, {len(labels)} images")
    text = (
        f"## Test results\n\nOn the {len(labels)} {spec.name} test images: accuracy "
        f"{(predicted == labels).mean():.2%}.\n\n### Per class\n\n"
        + _table(("class", "test images", "correct", "accuracy"), rows)
        + f"\n\n### Calibration\n\nExpected calibration error: {ece:.4f} ({model_probes.CALIBRATION_BINS} "
        f"equal bins of the top probability, L1; torchmetrics `MulticlassCalibrationError`).\n\n"
        f"![Reliability diagram]({diagram_name})\n\n"
        + _table(
            ("top probability from", "mean confidence", "accuracy", "test images"),
            [(f"{low:.3f}", f"{conf:.4f}", f"{acc:.4f}", count) for low, conf, acc, count in bins],
        )
        + "\n"
    )
    return text, diagram


def _limits_section(predict: Any, spec: DatasetSpec) -> str:
    probes = [
        ("blank: all black", model_probes.blank_images()[:1]),
        ("blank: all white", model_probes.blank_images()[1:]),
        (f"uniform noise in [0, 1] ({model_probes.NOISE_IMAGES}, seed {model_probes.NOISE_SEED})",
         model_probes.noise_images()),
        ("the 52 letters A-Z, a-z in PIL's default font, prepared as a picture of a digit",
         model_probes.letter_images()),
    ]  # fmt: skip
    rows = []
    for name, images in probes:
        found = model_probes.probe(name, predict(images), spec.classes)
        classes = ", ".join(f"{label}: {count}" for label, count in found.class_counts.items())
        rows.append((name, found.images, f"{found.mean_confidence:.3f}", classes))
    return (
        "## Known limits (measured on this file)\n\nThe file always answers with one of its classes, however "
        f"unlike a {spec.name} image its input is; it cannot say 'none'. What it answers on inputs that are "
        "not digits:\n\n"
        + _table(("inputs", "images", "mean top probability", "classes chosen"), rows)
        + "\n"
    )


def build_card(
    target: Path,
    predict: Any,
    spec: DatasetSpec,
    facts: TrainingFacts,
    data_dir: str,
    checked: Any,
    checks: list[str],
) -> ModelCard:
    """The card of the file ``predict`` runs, which will be ``target``: ``checked`` holds the export check's
    images (``export.CheckImages``: the test set, or synthetic images without labels), ``checks`` the
    check's paragraphs."""
    images, labels = as_inputs(checked)
    probabilities = (
        None
        if labels is None
        else np.concatenate([predict(images[start : start + 1000]) for start in range(0, len(images), 1000)])
    )
    kind = (
        "statically quantized int8 (onnxruntime, QDQ) " if any(c.startswith("Int8") for c in checks) else ""
    )
    test_text, diagram = _test_section(probabilities, labels, spec, card_paths(target)[1].name)
    header = (
        f"# Model card: {target.name}\n\n## What it classifies\n\n{spec.name} images into {spec.num_classes} "
        f"classes: {', '.join(spec.classes)}. A {kind}"
        f"file written by `mnist_lightning export`; the figures below are measured on this file.\n"
    )
    inputs = (
        "## Inputs and outputs\n\n- input `images`: float32 `(N, 1, 28, 28)`, pixel values in [0, 1], the "
        f"{spec.name} way round (white on black), centred as {spec.name}'s are; `N` is free.\n- output "
        f"`probabilities`: float32 `(N, {spec.num_classes})`, in the class order above. The class names are "
        "also in the file's metadata.\n"
    )
    check_text = "## Export check\n\n" + "\n\n".join(checks) + "\n"
    sections = [header, _data_section(facts, spec, data_dir), _recipe_section(facts), inputs, test_text,
                _limits_section(predict, spec), check_text]  # fmt: skip
    return ModelCard("\n".join(sections), diagram)


def _write_whole(path: Path, content: bytes) -> None:
    partial = path.with_name(f".partial-{path.name}")
    try:
        partial.write_bytes(content)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_card(target: Path, card: ModelCard) -> None:
    """Write the card (and its diagram) beside ``target``, each file whole or not at all; a diagram of an
    earlier export is removed when this card has none."""
    text_path, diagram_path = card_paths(target)
    if card.diagram is None:
        diagram_path.unlink(missing_ok=True)
    else:
        _write_whole(diagram_path, card.diagram)
    _write_whole(text_path, card.text.encode())


def card_summary(target: Path) -> str:
    """The line naming ``target``'s card (and its diagram, when there is one) in the command's output."""
    text_path, diagram_path = card_paths(target)
    return f"Model card: {text_path}" + (f" and {diagram_path.name}" if diagram_path.exists() else "")
