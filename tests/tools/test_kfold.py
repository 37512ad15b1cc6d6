"""k-fold cross-validation as a user runs it: ``configs/sweeps/kfold.yaml``, then ``runs --group``."""

from __future__ import annotations

import csv
import io

import pytest
import yaml

from helpers.commands import CONFIG, REPO
from helpers.inprocess import run_main
from helpers.sweeps import run_sweep

KFOLD = REPO / "configs" / "sweeps" / "kfold.yaml"
TINY_TRIAL = (
    "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--model.net.init_args.hidden_sizes=[32]",
    "--data.batch_size=32", "--trainer.log_every_n_steps=1",
)  # fmt: skip


@pytest.mark.slow  # five trials, each fitted and tested, and the check of every parameter: 20-35 s
def test_kfold_sweep_validates_on_each_fold_and_runs_groups_the_folds_in_one_row(tmp_path, tiny_data):
    status, _, stderr = run_sweep(
        "--config", str(CONFIG), "--sweep", str(KFOLD), "--study", "cv", f"--data.data_dir={tiny_data}",
        *TINY_TRIAL, cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    sweep = tmp_path / "lightning_logs" / "sweeps" / "cv"
    configs = [yaml.safe_load((sweep / f"trial_{n}" / "config.yaml").read_text())["data"] for n in range(5)]
    assert sorted(config["fold"] for config in configs) == [0, 1, 2, 3, 4]
    assert {config["folds"] for config in configs} == {5}

    status, stdout, stderr = run_main("runs", str(sweep), "--format", "csv", cwd=tmp_path)
    assert status == 0, stderr
    rows = list(csv.DictReader(io.StringIO(stdout)))
    assert len(rows) == 5 and len({row["val_acc"] for row in rows}) > 1, "each fold its own val_acc"
    status, stdout, stderr = run_main("runs", str(sweep), "--group", "--wide", cwd=tmp_path)
    assert status == 0, stderr
    header, *grouped = stdout.splitlines()
    assert len(grouped) == 1 and "±" in grouped[0], stdout  # one configuration: mean ± sd over the folds
    runs = header.split().index("runs")
    assert grouped[0].split()[runs] == "5", stdout
