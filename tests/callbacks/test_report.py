"""The test report: numbers from the confusion matrix, its files, and the mistakes gallery, end to end."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.functional.classification import (
    multiclass_accuracy,
    multiclass_confusion_matrix,
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)

from mnist_lightning.callbacks.report_drawing import (
    classification_report,
    confusion_matrix_csv,
    format_classification_report,
)
from mnist_lightning.callbacks.test_report import MostConfidentMistakes
from mnist_lightning.run_layout import REPORT_FILES

from helpers.commands import QUICK
from helpers.idx import TINY_TEST
from helpers.inprocess import run_main, run_on_checkpoint

DIGITS = [str(digit) for digit in range(10)]


def random_predictions(count: int = 500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits that are right about 60% of the time, and their targets."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, 10, (count,), generator=generator)
    logits = torch.randn(count, 10, generator=generator)
    logits[torch.arange(count), targets] += 1.5
    return logits, targets


def test_report_numbers_match_torchmetrics():
    logits, targets = random_predictions()
    report = classification_report(multiclass_confusion_matrix(logits, targets, num_classes=10), DIGITS)
    kwargs = {"preds": logits, "target": targets, "num_classes": 10}
    per_class = {
        "precision": multiclass_precision(**kwargs, average="none"),
        "recall": multiclass_recall(**kwargs, average="none"),
        "f1": multiclass_f1_score(**kwargs, average="none"),
    }
    for name, values in per_class.items():
        assert [report["per_class"][str(d)][name] for d in range(10)] == pytest.approx(
            values.tolist(), abs=1e-6
        )
    assert report["macro_avg"]["f1"] == pytest.approx(
        multiclass_f1_score(**kwargs, average="macro").item(), abs=1e-6
    )
    assert report["weighted_avg"]["precision"] == pytest.approx(
        multiclass_precision(**kwargs, average="weighted").item(), abs=1e-6
    )
    assert report["accuracy"] == pytest.approx(
        multiclass_accuracy(**kwargs, average="micro").item(), abs=1e-6
    )
    assert [report["per_class"][str(d)]["support"] for d in range(10)] == torch.bincount(targets).tolist()


def test_per_class_scores_equal_torchmetrics_with_a_class_never_predicted_and_one_never_seen():
    confusion = torch.tensor([[50, 3, 0, 2], [4, 41, 0, 0], [0, 0, 0, 0], [7, 0, 0, 0]])  # 2: no samples,
    classes = ["a", "b", "c", "d"]  # 2 and 3: never predicted
    report = classification_report(confusion, classes)
    cells = torch.arange(confusion.numel()).repeat_interleave(confusion.flatten())
    kwargs = {"preds": cells % 4, "target": cells // 4, "num_classes": 4, "zero_division": 0}
    per_class = {
        "precision": multiclass_precision(**kwargs, average=None),
        "recall": multiclass_recall(**kwargs, average=None),
        "f1": multiclass_f1_score(**kwargs, average=None),
    }
    for name, values in per_class.items():
        ours = torch.tensor([report["per_class"][label][name] for label in classes], dtype=torch.float64)
        torch.testing.assert_close(ours.float(), values, rtol=0, atol=0)  # equal once in float32
        assert ours[2:].tolist() == [0.0, 0.0] and report["macro_avg"][name] == ours.mean().item()
    assert report["per_class"]["b"]["precision"] == 41 / 44  # float64: exact to the last digit


def test_a_digit_never_predicted_has_zero_precision_not_nan():
    confusion = torch.eye(10, dtype=torch.long) * 5
    confusion[3, 3], confusion[3, 8] = 0, 5  # every 3 is called an 8
    report = classification_report(confusion, DIGITS)
    assert report["per_class"]["3"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 5}
    assert report["per_class"]["8"]["precision"] == 0.5 and report["accuracy"] == 0.9


def test_text_report_is_laid_out_like_scikit_learn():
    logits, targets = random_predictions()
    report = classification_report(multiclass_confusion_matrix(logits, targets, num_classes=10), DIGITS)
    lines = format_classification_report(report).splitlines()
    assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
    assert [line.split()[0] for line in lines[2:12]] == [str(d) for d in range(10)]
    assert lines[13].split() == ["accuracy", f"{report['accuracy']:.4f}", "500"]
    assert lines[14].split()[:2] == ["macro", "avg"] and lines[15].split()[:2] == ["weighted", "avg"]
    assert len({len(line) for line in lines if line}) == 1  # columns line up
    seven = lines[9].split()
    assert seven[1:] == [f"{report['per_class']['7'][k]:.4f}" for k in ("precision", "recall", "f1")] + [
        str(report["per_class"]["7"]["support"])
    ]


def test_confusion_matrix_csv_has_a_header_and_true_digits_as_rows():
    confusion = torch.arange(100).reshape(10, 10)
    rows = list(csv.reader(confusion_matrix_csv(confusion, DIGITS).splitlines()))
    assert rows[0] == ["true_class"] + [f"pred_{d}" for d in range(10)]
    assert rows[4] == ["3"] + [str(v) for v in range(30, 40)]


def test_most_confident_mistakes_keeps_the_top_k_over_all_batches():
    logits, targets = random_predictions(300, seed=1)
    images = torch.randn(300, 1, 28, 28)
    metric = MostConfidentMistakes(k=8)
    for start in range(0, 300, 64):
        metric.update(images[start : start + 64], logits[start : start + 64], targets[start : start + 64])
    mistakes = metric.compute()

    confidences, preds = logits.softmax(1).max(1)
    wrong = torch.nonzero(preds != targets).flatten()
    expected = wrong[confidences[wrong].argsort(descending=True)[:8]]
    torch.testing.assert_close(mistakes.confidences, confidences[expected])
    assert torch.equal(mistakes.targets, targets[expected]) and torch.equal(mistakes.preds, preds[expected])
    torch.testing.assert_close(mistakes.images, images[expected, 0])


def test_most_confident_mistakes_is_empty_when_nothing_is_wrong():
    metric = MostConfidentMistakes(k=4)
    metric.update(torch.zeros(3, 1, 28, 28), torch.eye(10)[:3] * 10, torch.arange(3))
    assert len(metric.compute().confidences) == 0


def test_cli_test_report_files_agree_with_each_other_and_metrics_json(tmp_path, tiny_data, tiny_checkpoint):
    status, stdout, stderr = run_on_checkpoint(
        "test", tiny_checkpoint, f"--data.data_dir={tiny_data}", cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]

    run = tmp_path / "lightning_logs" / "version_0" / "test" / tiny_checkpoint.stem
    assert all((run / name).is_file() for name in REPORT_FILES)
    metrics = json.loads((run / "metrics.json").read_text())
    report = json.loads((run / "report.json").read_text())
    confusion = torch.tensor(report["confusion_matrix"]["counts"])
    assert confusion.shape == (10, 10) and confusion.sum() == TINY_TEST
    assert confusion.trace().item() / TINY_TEST == pytest.approx(metrics["test_acc"], abs=1e-6)
    assert report["accuracy"] == pytest.approx(metrics["test_acc"], abs=1e-6)
    for digit in range(10):
        row = confusion[digit]
        assert report["per_class"][str(digit)]["recall"] == pytest.approx(
            row[digit].item() / row.sum().item()
        )
        assert report["per_class"][str(digit)]["support"] == row.sum()
    mistakes = report["most_confident_mistakes"]
    assert 0 < len(mistakes) <= min(32, report["misclassified"])
    assert all(m["true"] != m["predicted"] for m in mistakes)
    assert [m["confidence"] for m in mistakes] == sorted((m["confidence"] for m in mistakes), reverse=True)

    rows = list(csv.reader((run / "confusion_matrix.csv").read_text().splitlines()))
    assert [[int(v) for v in row[1:]] for row in rows[1:]] == confusion.tolist()
    text = (run / "classification_report.txt").read_text()
    assert re.search(rf"accuracy\s+{report['accuracy']:.4f}\s+{TINY_TEST}", text) and text in stdout
    for name in ("confusion_matrix.png", "misclassified.png"):
        with Image.open(run / name) as image:
            assert image.width >= 500 and image.height >= 400

    test_events = tensorboard_events(run)  # the evaluation's own TensorBoard run, beside its files
    for name in ("confusion_matrix", "misclassified"):  # TensorBoard shows the very pictures of the files
        [logged] = test_events.Images(f"test_{name}")
        with (
            Image.open(run / f"{name}.png") as written,
            Image.open(io.BytesIO(logged.encoded_image_string)) as shown,
        ):
            assert np.array_equal(np.asarray(written.convert("RGB")), np.asarray(shown.convert("RGB")))
    assert any(tag.startswith("test_classification_report") for tag in test_events.Tags()["tensors"])
    fit_events = tensorboard_events(tiny_checkpoint.parents[1])
    assert len(fit_events.Images("val_confusion_matrix/epochs_000-009")) == 1  # none for the sanity check


def test_every_epochs_validation_confusion_matrix_is_kept_and_labelled(tmp_path, tiny_data):
    from tensorboard.backend.event_processing.data_ingester import DEFAULT_TENSOR_SIZE_GUIDANCE
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.image.metadata import PLUGIN_NAME

    epochs = 12
    status, _, stderr = run_main(
        "fit", f"--data.data_dir={tiny_data}", *QUICK, f"--trainer.max_epochs={epochs}",
        "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    # as many images of a tag as the TensorBoard server keeps by default (10)
    kept = {"images": DEFAULT_TENSOR_SIZE_GUIDANCE[PLUGIN_NAME]}
    events = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"), size_guidance=kept)
    events.Reload()
    tags = [tag for tag in events.Tags()["images"] if tag.startswith("val_confusion_matrix")]
    assert tags == ["val_confusion_matrix/epochs_000-009", "val_confusion_matrix/epochs_010-019"]
    images = [image for tag in tags for image in events.Images(tag)]
    steps = [scalar.step for scalar in events.Scalars("val_acc")]
    assert len(steps) == epochs and [image.step for image in images] == steps  # every epoch, beside val_acc
    with Image.open(io.BytesIO(images[-1].encoded_image_string)) as picture:
        pixels = np.asarray(picture.convert("RGB"))
    assert picture.width > 10 * 24 and picture.height > 10 * 24
    assert (pixels.max(axis=2) < 60).sum() > 500  # black text: labels, counts and the title


def tensorboard_events(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    return events
