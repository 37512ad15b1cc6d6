"""The model card ``export`` writes beside every file: its sections, figures checked against computations made
here from the checkpoint and the file, the reliability diagram, and what it says without a test set."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil

import numpy as np
import onnxruntime
import pytest
import torch
from PIL import Image
from torchmetrics.classification import MulticlassCalibrationError

from mnist_lightning.cli.main import main
from mnist_lightning.data.datasets import load_split
from mnist_lightning.data.sampling import normalize
from mnist_lightning.models.classifier import MNISTClassifier

from helpers.idx import TINY_TEST

SECTIONS = (
    "# Model card: model.onnx", "## What it classifies", "## Data", "## Training recipe",
    "## Inputs and outputs", "## Test results", "### Per class", "### Calibration",
    "## Known limits (measured on this file)", "## Export check",
)  # fmt: skip
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run_export(*args: object) -> None:
    main(["export", *map(str, args)])


def per_class_rows(card: str) -> list[tuple[str, int, int, str]]:
    return [
        (name, int(images), int(correct), accuracy)
        for name, images, correct, accuracy in re.findall(
            r"^\| (\d) \| (\d+) \| (\d+) \| ([\d.]+%) \|$", card, re.M
        )
    ]


def test_the_card_beside_an_export_holds_its_figures_and_its_reliability_diagram(
    tmp_path, tiny_data, tiny_checkpoint, capsys
):
    output = tmp_path / "model.onnx"
    run_export("--ckpt_path", tiny_checkpoint, "--output", output, "--data.data_dir", tiny_data)
    stdout = capsys.readouterr().out
    card_path, diagram_path = tmp_path / "model.onnx.md", tmp_path / "model.onnx.reliability.png"
    assert f"Model card: {card_path} and model.onnx.reliability.png" in stdout
    card = card_path.read_text()
    positions = [card.index(section + "\n") for section in SECTIONS]
    assert positions == sorted(positions)

    # per class, from the checkpoint (computed here, independently)
    images, labels = load_split(tiny_data, train=False)
    classifier = MNISTClassifier.load_from_checkpoint(tiny_checkpoint, map_location="cpu").eval()
    with torch.no_grad():
        predicted = classifier(normalize(images, 0.1307, 0.3081)).argmax(dim=1)
    expected = [
        (str(k), int((labels == k).sum()), int((predicted[labels == k] == k).sum()),
         f"{(predicted[labels == k] == k).float().mean().item():.2%}")
        for k in range(10)
    ]  # fmt: skip
    assert per_class_rows(card) == expected
    assert (
        f"On the {TINY_TEST} MNIST test images: accuracy {(predicted == labels).float().mean().item():.2%}."
        in card
    )

    # the calibration error: torchmetrics on the file's own probabilities
    session = onnxruntime.InferenceSession(str(output), providers=["CPUExecutionProvider"])
    (probabilities,) = session.run(None, {"images": (images.unsqueeze(1).float() / 255).numpy()})
    ece = MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")(
        torch.from_numpy(probabilities), labels.long()
    )
    assert f"Expected calibration error: {ece.item():.4f} (15 equal bins" in card
    # the reliability table: 15 equal bins (a tiny model's ECE is the same whatever the bins: it is
    # underconfident in every one), each with the images whose top probability falls in it
    top = probabilities.max(axis=1)
    counts, edges = np.histogram(top, bins=15, range=(0, 1))
    rows = re.findall(r"^\| (0\.\d{3}) \| ([\d.]+) \| ([\d.]+) \| (\d+) \|$", card, re.M)
    assert rows == [
        (f"{edges[k]:.3f}", f"{top[(top >= edges[k]) & (top < edges[k + 1])].mean():.4f}", rows[i][2], str(n))
        for i, (k, n) in enumerate((k, n) for k, n in enumerate(counts) if n)
    ]
    assert "![Reliability diagram](model.onnx.reliability.png)" in card
    diagram = diagram_path.read_bytes()
    assert diagram.startswith(PNG_SIGNATURE)
    with Image.open(io.BytesIO(diagram)) as picture:
        picture.verify()
        assert picture.format == "PNG" and picture.size == (500, 600)

    # what the file answers on a black image, measured on the file
    (black,) = session.run(None, {"images": np.zeros((1, 1, 28, 28), np.float32)})
    assert f"| blank: all black | 1 | {black.max():.3f} | {black.argmax()}: 1 |" in card

    # data and recipe: the run's provenance and the checkpoint's hyperparameters
    run_folder = tiny_checkpoint.parent.parent
    session_record = json.loads((run_folder / "provenance.json").read_text())["sessions"][0]
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        digest = hashlib.sha256((tiny_data / "MNIST" / "raw" / name).read_bytes()).hexdigest()
        assert f"| `{name}` | `{digest}` |" in card
    assert "recorded by the training run (`provenance.json`)" in card
    assert f"`{session_record['git']['commit']}`" in card
    assert "| network | `MLP(hidden_sizes=[128, 64], dropout=0.0" in card
    assert "| learning rate | 0.001 |" in card and "| batch size | 32 |" in card
    assert "pixel values in [0, 1]" in card
    check_line = next(line for line in stdout.splitlines() if line.startswith("Check passed"))
    assert card.rstrip().endswith("## Export check\n\n" + check_line)


def test_a_card_outside_a_run_folder_computes_the_data_hashes_and_says_the_commit_is_unknown(
    tmp_path, tiny_data, tiny_checkpoint, capsys
):
    checkpoint = shutil.copy(tiny_checkpoint, tmp_path / "model.ckpt")  # no provenance.json beside it
    run_export("--ckpt_path", checkpoint, "--output", tmp_path / "model.pt2", "--data.data_dir", tiny_data)
    card = (tmp_path / "model.pt2.md").read_text()
    assert card.startswith("# Model card: model.pt2\n")
    assert "computed now from the files in `--data.data_dir`" in card
    digest = hashlib.sha256(
        (tiny_data / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()
    ).hexdigest()
    assert f"| `train-images-idx3-ubyte` | `{digest}` |" in card
    assert "| code | unknown (no `provenance.json` with a git commit beside the checkpoint) |" in card


def test_a_damaged_provenance_json_is_read_for_what_it_holds_and_the_card_still_written(
    tmp_path, tiny_data, tiny_checkpoint, capsys
):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    checkpoint = shutil.copy(tiny_checkpoint, run / "checkpoints" / "model.ckpt")
    sessions = [{"data": [{"path": 3}, "not a file", {"path": "x", "sha256": None}], "git": "not a dict"}]
    (run / "provenance.json").write_text(json.dumps({"format": 1, "sessions": sessions}))
    run_export("--ckpt_path", checkpoint, "--output", tmp_path / "model.onnx", "--data.data_dir", tiny_data)
    card = (tmp_path / "model.onnx.md").read_text()
    assert (
        "computed now from the files in `--data.data_dir` (no record of them beside the checkpoint)" in card
    )
    assert "| code | unknown (no `provenance.json` with a git commit beside the checkpoint) |" in card


def test_without_the_test_set_the_card_says_which_figures_it_could_not_compute(
    tmp_path, tiny_checkpoint, capsys
):
    output = tmp_path / "model.onnx"
    (tmp_path / "model.onnx.reliability.png").write_bytes(b"a diagram of an earlier export")
    (tmp_path / "model.onnx.md").write_text("an earlier card")
    run_export(
        "--ckpt_path", tiny_checkpoint, "--output", output, "--data.data_dir", tmp_path / "no", "--overwrite"
    )
    assert f"Model card: {tmp_path / 'model.onnx.md'}\n" in capsys.readouterr().out
    card = (tmp_path / "model.onnx.md").read_text()
    assert (
        "Not computed: the test set was not in `--data.data_dir`, so this card has no test accuracy (overall "
        "or per class), no expected calibration error and no reliability diagram."
    ) in card
    assert "## Known limits (measured on this file)" in card and "| blank: all white | 1 |" in card
    assert "Check passed on 512 fixed synthetic images" in card
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "model.onnx",
        "model.onnx.md",
    ]  # the old diagram gone


def test_an_existing_card_is_replaced_only_with_overwrite(tmp_path, tiny_data, tiny_checkpoint, capsys):
    notes = tmp_path / "model.onnx.md"
    notes.write_text("my own notes")
    with pytest.raises(SystemExit) as exit_:
        run_export(
            "--ckpt_path", tiny_checkpoint, "--output", tmp_path / "model.onnx", "--data.data_dir", tiny_data
        )
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"error: '{notes}' already exists; add --overwrite to replace it, or choose another --output.\n"
    )
    assert notes.read_text() == "my own notes" and sorted(p.name for p in tmp_path.iterdir()) == [
        "model.onnx.md"
    ]
