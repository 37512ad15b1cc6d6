"""The callbacks of training that users expect: the learning rate in TensorBoard, early stopping."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
import yaml

from helpers.commands import CONFIG, REPO
from helpers.inprocess import run_main

FAST = REPO / "configs" / "fast.yaml"
EARLY_STOPPING = REPO / "configs" / "early_stopping.yaml"
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


RECIPES = {"default": [], "fast": ["fast.yaml"], "cnn": ["cnn.yaml"], "best": ["best.yaml"]}


@pytest.mark.parametrize("recipe", RECIPES.values(), ids=RECIPES.keys())
def test_early_stopping_adds_to_the_callbacks_of_every_recipe(tmp_path, recipe):
    configs = [arg for name in recipe for arg in ("--config", REPO / "configs" / name)]
    status, stdout, stderr = run_main(
        "fit", "--config", CONFIG, *configs, "--config", EARLY_STOPPING, "--print_config", cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    callbacks = yaml.safe_load(stdout)["trainer"]["callbacks"]
    names = [callback["class_path"].rsplit(".", 1)[-1] for callback in callbacks]
    assert names[:3] == ["ModelCheckpoint", "ModelCheckpoint", "LearningRateMonitor"]  # the recipe's, kept
    assert names.count("EarlyStopping") == 1 and "RunSummary" in names
    stopping = callbacks[names.index("EarlyStopping")]["init_args"]
    assert (stopping["monitor"], stopping["mode"], stopping["patience"]) == ("val_acc", "max", 3)


def test_a_run_whose_val_acc_stalls_stops_early_and_runs_says_when(tmp_path, tiny_data):
    status, _, stderr = run_main(
        "fit", "--config", CONFIG, "--config", EARLY_STOPPING, f"--data.data_dir={tiny_data}", *TINY_RUN,
        "--trainer.max_epochs=10", "--model.optimizer.init_args.lr=1e-12", cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0"
    summary = json.loads((run / "summary.json").read_text())
    # val_acc of epoch 0, then 3 epochs (the patience) without a better one: stopped after epoch 3, 4 trained
    assert (summary["status"], summary["early_stop_epoch"], summary["epochs"]) == ("stopped early", 3, 4)
    status, stdout, stderr = run_main("runs", "lightning_logs", "--format", "csv", cwd=tmp_path)
    assert status == 0, stderr
    [row] = csv.DictReader(io.StringIO(stdout))
    assert (row["status"], row["epochs"]) == ("stopped early after 4/10 epochs", "4")
