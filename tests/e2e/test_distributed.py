"""Two CPU processes with DDP, as a user runs them (true subprocesses: DDP starts its second process by
running the command again): per-device batches, metrics and the report exactly those of one device, files
written once, and checkpoints that move between one device and two."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_confusion_matrix

from mnist_lightning.callbacks.report_drawing import classification_report
from mnist_lightning.data.datasets import load_split
from mnist_lightning.models.classifier import MNISTClassifier

from helpers.commands import CONFIG, run_cli
from helpers.idx import DIGITS, mnist_normalize, write_mnist
from helpers.inprocess import run_main

ONE_DEVICE = ("--trainer.accelerator=cpu", "--trainer.devices=1")
TWO_PROCESSES = ("--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp")
TEST_IMAGES = 101  # odd: a sampler that pads to a multiple of 2 would count one image twice
SMALL = ("--trainer.enable_progress_bar=false", "--data.batch_size=32", "--data.val_size=64")
# 448 training images: 14 steps of 32 on one device, 7 steps of 2 x 32 on two; a low learning rate keeps
# the test accuracy below 100% so that the image count is visible in it
SLOW_LEARNING = "--model.optimizer.init_args.lr=0.0001"
pytestmark = pytest.mark.slow  # whole processes, four of them


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One epoch on one device (in-process), then a second epoch resumed from its checkpoint with two."""
    data = write_mnist(tmp_path_factory.mktemp("odd"), train=512, test=TEST_IMAGES)
    work = tmp_path_factory.mktemp("ddp")
    common = ("--config", CONFIG, f"--data.data_dir={data}", *SMALL, SLOW_LEARNING)
    status, _, stderr = run_main("fit", *common, *ONE_DEVICE, "--trainer.max_epochs=1", cwd=work)
    assert status == 0, stderr[-3000:]
    single_ckpt = work / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    ddp = run_cli(
        "fit",
        *common,
        *TWO_PROCESSES,
        "--trainer.max_epochs=2",
        "--ckpt_path",
        single_ckpt,
        cwd=work,
        timeout=600,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    return {"data": data, "work": work, "single_ckpt": single_ckpt, "ddp": ddp}


def test_ddp_fit_resumes_a_one_device_checkpoint_with_per_device_batches_and_writes_files_once(runs):
    logs = runs["work"] / "lightning_logs"
    assert sorted(path.name for path in logs.iterdir()) == ["version_0", "version_1"]
    assert torch.load(runs["single_ckpt"], weights_only=True)["global_step"] == 14
    run_dir = logs / "version_1"
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 14 + 7  # global batch = 32 x 2 processes
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert (run_dir / "config.yaml").is_file()
    assert runs["ddp"].stdout.count("Best checkpoint:") == 1
    [session] = json.loads((run_dir / "provenance.json").read_text())["sessions"]  # written by rank 0 alone
    assert (session["processes"]["world_size"], session["processes"]["strategy"]) == (2, "DDPStrategy")
    assert session["checkpoint"] == str(runs["single_ckpt"].resolve())


def test_ddp_test_of_a_checkpoint_is_exact_over_uneven_shards_and_loads_on_one_device(runs, tmp_path):
    """101 test images in steps of 10 on two processes (51 + 50): metrics.json equals the one-device run's
    to the last digit, and report.json equals the model's numbers on the whole set, computed here."""
    ddp_ckpt = runs["work"] / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt"
    common = (
        "test", "--config", CONFIG, f"--data.data_dir={runs['data']}", *SMALL, "--data.eval_batch_size=10",
        "--ckpt_path", ddp_ckpt,
    )  # fmt: skip
    status, _, stderr = run_main(*common, *ONE_DEVICE, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    two = run_cli(*common, *TWO_PROCESSES, cwd=tmp_path, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("Test metrics written to") == 1
    logs = tmp_path / "lightning_logs"
    assert sorted(path.name for path in logs.iterdir()) == ["version_0", "version_1"]
    on_one, on_two = (
        json.loads((logs / version / "test" / "last" / "metrics.json").read_text())
        for version in ("version_0", "version_1")
    )
    assert on_one == on_two

    model = MNISTClassifier.load_from_checkpoint(ddp_ckpt, map_location="cpu").eval()
    images, labels = load_split(runs["data"], train=False)
    with torch.no_grad():
        logits = model(mnist_normalize(images))
    correct = (logits.argmax(dim=1) == labels).sum().item()
    assert correct < TEST_IMAGES and on_two["test_acc"] == pytest.approx(correct / TEST_IMAGES, abs=1e-7)
    assert on_two["test_loss"] == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)

    report = json.loads((logs / "version_1" / "test" / "last" / "report.json").read_text())
    expected = classification_report(multiclass_confusion_matrix(logits, labels, num_classes=10), DIGITS)
    assert {key: report[key] for key in expected} == expected
    confidences, predictions = logits.softmax(dim=1).max(dim=1)
    wrong = torch.nonzero(predictions != labels).flatten()
    worst = wrong[confidences[wrong].argsort(descending=True)[:32]]
    assert [(m["true"], m["predicted"]) for m in report["most_confident_mistakes"]] == list(
        zip(map(str, labels[worst].tolist()), map(str, predictions[worst].tolist()), strict=True)
    )
    written = [m["confidence"] for m in report["most_confident_mistakes"]]
    assert written == pytest.approx(confidences[worst].tolist(), abs=1e-5)
