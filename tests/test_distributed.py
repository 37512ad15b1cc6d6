"""Two CPU processes with DDP, as a user runs them: per-device batches, metrics exactly those of one device,
files written once, and checkpoints that move between one device and two."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import CONFIG, run_cli, write_mnist

ONE_DEVICE = ("--trainer.accelerator=cpu", "--trainer.devices=1")
TWO_PROCESSES = ("--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp")
TEST_IMAGES = 101  # odd: a sampler that pads to a multiple of 2 would count one image twice
SMALL = ("--trainer.enable_progress_bar=false", "--data.batch_size=32", "--data.val_size=64")
# 448 training images: 14 steps of 32 on one device, 7 steps of 2 x 32 on two; a low learning rate keeps
# the test accuracy below 100% so that the image count is visible in it
SLOW_LEARNING = "--model.optimizer.init_args.lr=0.0001"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One epoch on one device, then a second epoch resumed from its checkpoint with two processes."""
    data = write_mnist(tmp_path_factory.mktemp("odd"), train=512, test=TEST_IMAGES)
    work = tmp_path_factory.mktemp("ddp")
    common = ("--config", CONFIG, f"--data.data_dir={data}", *SMALL, SLOW_LEARNING)
    single = run_cli("fit", *common, *ONE_DEVICE, "--trainer.max_epochs=1", cwd=work)
    assert single.returncode == 0, single.stderr[-3000:]
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


def test_ddp_test_of_a_checkpoint_matches_one_device_to_the_last_digit_and_loads_on_one_device(
    runs, tmp_path
):
    ddp_ckpt = runs["work"] / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt"
    common = ("test", "--config", CONFIG, f"--data.data_dir={runs['data']}", *SMALL, "--ckpt_path", ddp_ckpt)
    one = run_cli(*common, *ONE_DEVICE, cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
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
    correct = on_one["test_acc"] * TEST_IMAGES
    assert on_one["test_acc"] < 1 and correct == pytest.approx(
        round(correct), abs=1e-4
    )  # counted over 101 images
