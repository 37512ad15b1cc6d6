"""``predict``: predictions.csv for the test set or image files, in input order, on one or two processes."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from mnist_lightning.data.datamodule import MNISTDataModule
from mnist_lightning.data.datasets import load_split
from mnist_lightning.errors import UserError
from mnist_lightning.models.classifier import MNISTClassifier

from helpers.commands import CONFIG, OTHER_COMMANDS, imported, run_cli, watching_imports
from helpers.idx import TINY_TEST, mnist_normalize, write_mnist
from helpers.inprocess import run_main, run_on_checkpoint

PROBABILITIES = [f"prob_{digit}" for digit in range(10)]


def model_outputs(checkpoint: Path, images: torch.Tensor) -> torch.Tensor:
    """Class probabilities of the checkpoint's model on uint8 digits (N, 28, 28), computed in this process."""
    model = MNISTClassifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    with torch.no_grad():
        return model(mnist_normalize(images)).softmax(dim=1)


def read_predictions(stdout: str, cwd: Path) -> list[dict[str, str]]:
    path = re.search(r"predictions written to (\S+)", stdout).group(1)
    with (cwd / path).open() as handle:
        return list(csv.DictReader(handle))


def assert_rows_match(rows: list[dict[str, str]], expected: torch.Tensor) -> None:
    assert len(rows) == len(expected)
    assert [int(row["predicted_class"]) for row in rows] == expected.argmax(dim=1).tolist()
    written = torch.tensor([[float(row[name]) for name in PROBABILITIES] for row in rows])
    torch.testing.assert_close(written, expected, atol=2e-6, rtol=0)
    assert [float(row["confidence"]) for row in rows] == [
        max(float(row[n]) for n in PROBABILITIES) for row in rows
    ]


def test_predict_without_a_path_predicts_the_test_set_in_order(tmp_path, tiny_data, tiny_checkpoint):
    status, stdout, stderr = run_on_checkpoint(
        "predict", tiny_checkpoint, f"--data.data_dir={tiny_data}", cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    rows = read_predictions(stdout, tmp_path)
    assert list(rows[0]) == [
        "index", "predicted_class", "predicted_label", "true_class", "true_label", "correct", "confidence",
        *PROBABILITIES,
    ]  # fmt: skip
    assert [int(row["index"]) for row in rows] == list(range(TINY_TEST))
    images, labels = load_split(tiny_data, train=False)
    assert_rows_match(rows, model_outputs(tiny_checkpoint, images))
    assert [int(row["true_class"]) for row in rows] == labels.tolist()
    assert all(row["true_label"] == row["true_class"] for row in rows)  # the digits' names
    correct = [int(row["correct"]) for row in rows]
    assert correct == [int(row["predicted_class"] == row["true_class"]) for row in rows]
    assert f"Predicted {TINY_TEST} test images" in stdout
    assert "Predicted classes: 0: " in stdout
    assert f"Accuracy: {sum(correct) / TINY_TEST:.2%} ({TINY_TEST - sum(correct)} of {TINY_TEST}" in stdout


@pytest.mark.slow  # whole processes
def test_predict_on_two_processes_writes_each_row_once_in_order(tmp_path, tiny_checkpoint):
    """A true subprocess: DDP launches the second process by re-running the command. Neither imports the
    other commands' libraries."""
    data = write_mnist(tmp_path / "odd", test=TINY_TEST - 1)  # shards of 64 and 63 images
    result = run_cli(
        "predict", "--config", CONFIG, "--ckpt_path", tiny_checkpoint, f"--data.data_dir={data}",
        "--data.eval_batch_size=10", "--trainer.accelerator=cpu", "--trainer.devices=2",
        "--trainer.strategy=ddp", cwd=tmp_path, env=watching_imports(tmp_path / "stand_ins"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mnist_lightning.callbacks.prediction_writer" in imported(result.stderr)
    assert not imported(result.stderr) & set(OTHER_COMMANDS)
    rows = read_predictions(result.stdout, tmp_path)
    assert [int(row["index"]) for row in rows] == list(range(TINY_TEST - 1))
    assert_rows_match(rows, model_outputs(tiny_checkpoint, load_split(data, train=False)[0]))
    assert result.stdout.count("predictions written to") == 1


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory, real_data) -> Path:
    """A checkpoint trained for 150 steps on real MNIST (about 90% accurate)."""
    folder = tmp_path_factory.mktemp("real_fit")
    status, stdout, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={real_data}", "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=150", "--trainer.limit_val_batches=5",
        "--trainer.enable_progress_bar=false", cwd=folder,
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    return folder / re.search(r"Best checkpoint: (\S+)", stdout).group(1)


def test_predict_a_folder_of_image_files_like_the_model_on_the_tensors(tmp_path, real_data, real_checkpoint):
    images, _ = load_split(real_data, train=False)
    probabilities = model_outputs(real_checkpoint, images[:300])
    # digits the model is sure of: resampling moves strokes by part of a pixel, which can flip a doubtful one
    confident = torch.nonzero(probabilities.max(dim=1).values > 0.99).flatten()[:12].tolist()
    assert len(confident) == 12

    folder = tmp_path / "my digits"
    folder.mkdir()
    for n, i in enumerate(confident):
        digit = Image.fromarray(images[i].numpy())
        if n % 3 == 0:
            digit.save(folder / f"{n:02d}_plain.png")
        elif n % 3 == 1:
            digit.resize((84, 84), Image.Resampling.BICUBIC).save(folder / f"{n:02d}_resized.png")
        else:  # black on white, colour, twice the size
            Image.fromarray(255 - images[i].numpy()).resize((56, 56)).convert("RGB").save(
                folder / f"{n:02d}_ink.bmp"
            )
    (folder / "05_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not an image")

    status, stdout, stderr = run_main(
        "predict", "--config", CONFIG, "--ckpt_path", real_checkpoint, f"--data.predict_path={folder}",
        "--data.data_dir=no_mnist_needed", cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    rows = read_predictions(stdout, tmp_path)
    assert list(rows[0]) == ["path", "predicted_class", "predicted_label", "confidence", *PROBABILITIES]
    readable = sorted(path.name for path in folder.iterdir() if path.name != "05_broken.png")
    assert [Path(row["path"]).name for row in rows] == readable  # in the order of the names
    assert [int(row["predicted_class"]) for row in rows] == probabilities[confident].argmax(dim=1).tolist()
    plain = [row for row in rows if "plain" in row["path"]]
    written = torch.tensor([[float(row[name]) for name in PROBABILITIES] for row in plain])
    torch.testing.assert_close(written, probabilities[confident[::3]], atol=0.02, rtol=0)
    assert "05_broken.png: not a readable PNG image (its header is broken)" in stderr
    assert "Predicted 12 image files" in stdout


def test_each_input_keeps_its_own_predictions(tmp_path, tiny_data, tiny_checkpoint):
    run = tmp_path / "lightning_logs" / "version_0"
    shutil.copytree(tiny_checkpoint.parents[1], run)  # a run of this folder: its evaluations go into it
    images, _ = load_split(tiny_data, train=False)
    for name, count in (("first", 2), ("second", 3)):
        (tmp_path / name).mkdir()
        for index in range(count):
            Image.fromarray(images[index].numpy()).save(tmp_path / name / f"{index}.png")
    written = []
    for inputs in (["--data.predict_path=first"], ["--data.predict_path=second"], []):
        status, stdout, stderr = run_on_checkpoint(
            "predict", run / "checkpoints" / tiny_checkpoint.name, f"--data.data_dir={tiny_data}", *inputs,
            cwd=tmp_path,
        )  # fmt: skip
        assert status == 0, stderr[-3000:]
        written.append(tmp_path / re.search(r"predictions written to (\S+)", stdout).group(1))
    assert [len(list(csv.DictReader(path.open()))) for path in written] == [2, 3, TINY_TEST]  # all kept
    folders = sorted(path.parent.name for path in run.glob("predict/*/*/predictions.csv"))
    assert [name.split("-")[0] for name in folders] == ["first", "second", "test_set"]  # none replaced


def test_predict_path_that_does_not_exist_is_a_clear_error(tmp_path, tiny_checkpoint):
    status, _, stderr = run_on_checkpoint(
        "predict", tiny_checkpoint, "--data.predict_path=nowhere/*.png", cwd=tmp_path
    )
    assert status == 2
    assert "nowhere/*.png" in stderr and "matches no files" in stderr
    assert "Traceback" not in stderr


def test_a_folder_where_no_file_is_an_image_is_a_clear_error(tmp_path):
    (tmp_path / "a.png").write_text("text, not pixels")
    Image.new("L", (28, 28), 0).save(tmp_path / "b.png")  # black: no digit
    data = MNISTDataModule(predict_path=str(tmp_path))
    with pytest.raises(UserError, match=r"None of the 2 files .* could be read as an image of a digit"):
        data.setup("predict")
