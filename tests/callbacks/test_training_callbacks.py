"""The callbacks of training that users expect: the learning rate in TensorBoard, early stopping."""

from __future__ import annotations

import pytest
import torch

from helpers.commands import CONFIG, REPO
from helpers.inprocess import run_main

FAST = REPO / "configs" / "fast.yaml"
TINY_RUN = (
    "--trainer.enable_progress_bar=false", "--data.batch_size=32", "--data.val_size=64",
    "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=1",
)  # fmt: skip


def test_the_one_cycle_learning_rate_of_every_step_is_in_tensorboard(tmp_path, tiny_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    status, _, stderr = run_main(
        "fit", "--config", CONFIG, "--config", FAST, f"--data.data_dir={tiny_data}", *TINY_RUN,
        "--trainer.max_epochs=2", "--trainer.log_every_n_steps=1", cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    events = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    logged = events.Scalars("lr-Adam")
    optimizer = torch.optim.Adam([torch.zeros(1)], lr=0.008)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.008, total_steps=8)
    expected = []
    for _ in range(8):
        expected.append(schedule.get_last_lr()[0])
        optimizer.step()
        schedule.step()
    assert [event.step for event in logged] == list(range(8)), "2 epochs of 4 steps, each step logged"
    assert [event.value for event in logged] == pytest.approx(expected, rel=1e-6)
    assert expected[0] == pytest.approx(0.008 / 25) and expected[0] < max(expected) > expected[-1]


def test_a_run_without_a_logger_trains_without_the_learning_rate_monitor(tmp_path, tiny_data):
    status, stdout, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *TINY_RUN, "--trainer.max_epochs=1",
        "--trainer.logger=false", cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    assert "LearningRateMonitor is left out" in stdout
