"""A clean terminal on ordinary commands: none of the library notices that do not apply to this project's runs
(issue 20, item 17), while what a user needs still shows."""

from __future__ import annotations

import re

from helpers.commands import REPO
from helpers.inprocess import run_main

ARGS = ("--data.val_size=64", "--trainer.enable_progress_bar=false")


def fit(tmp_path, tiny_data, *extra: object) -> str:
    status, stdout, stderr = run_main("fit", f"--data.data_dir={tiny_data}", *ARGS, *extra, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    return stdout + stderr


def test_the_model_summary_counts_real_flops(tmp_path, tiny_data):
    output = fit(tmp_path, tiny_data, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2")
    total = re.search(r"^(\S+ ?\S*)\s+Total Flops$", output, re.M)
    assert total and total.group(1).strip() == "218 K", output[-3000:]  # 784*128 + 128*64 + 64*10, twice


def test_the_limit_preset_neither_echoes_its_limits_nor_warns_about_the_logging_interval(tmp_path, tiny_data):
    output = fit(tmp_path, tiny_data, "--config", REPO / "configs" / "debug" / "limit.yaml")
    assert "was configured so" not in output
    assert "smaller than the logging interval" not in output


def test_a_one_cycle_schedule_does_not_announce_loading_the_training_data(tmp_path, tiny_data):
    output = fit(
        tmp_path, tiny_data, "--config", REPO / "configs" / "fast.yaml", "--trainer.limit_train_batches=2"
    )
    assert "to estimate number of stepping batches" not in output
    assert "Best checkpoint:" in output


def test_resuming_a_run_does_not_warn_that_its_checkpoint_folder_is_not_empty(tmp_path, tiny_data):
    fit(tmp_path, tiny_data, "--trainer.max_epochs=1", "--trainer.limit_train_batches=2")
    output = fit(
        tmp_path, tiny_data, "--trainer.max_epochs=2", "--trainer.limit_train_batches=2", "--ckpt_path=last"
    )
    assert "Resuming from" in output
    assert "exists and is not empty" not in output
