"""``python -m mnist_lightning runs``: finished, tested, interrupted, killed and swept runs in one table."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mnist_lightning import run_states
from mnist_lightning.cli.main import main

from helpers.commands import CONFIG, QUICK
from helpers.inprocess import run_main
from helpers.sweeps import run_sweep, sweep_args, write_sweep


def list_runs(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["runs", *args])
    return out.getvalue()


@dataclass
class LogFolder:
    """A log folder holding a finished and tested run, one interrupted before its summary, one whose summary
    says running without naming its process (written before runs did), a test of a checkpoint from outside
    the log folder, a failed run without checkpoints, a live run and a killed one, and a sweep of two
    trials."""

    logs: Path
    best: str  # the finished run's best checkpoint
    test_acc: float  # and its test accuracy
    summary: dict  # and its summary.json

    def rows(self) -> dict[str, dict[str, str]]:
        return {
            row["run"]: row
            for row in csv.DictReader(io.StringIO(list_runs(str(self.logs), "--format", "csv")))
        }


@pytest.fixture(scope="module")
def log_folder(tmp_path_factory, tiny_data) -> LogFolder:
    tmp_path = tmp_path_factory.mktemp("runs")
    status, out, err = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK, cwd=tmp_path
    )
    assert status == 0, err[-3000:]
    best = re.search(r"Best checkpoint: (\S+)", out).group(1)
    status, _, err = run_main(
        "test", "--config", CONFIG, f"--data.data_dir={tiny_data}", "--ckpt_path", best, cwd=tmp_path
    )
    assert status == 0, err[-3000:]
    logs = tmp_path / "lightning_logs"
    [metrics] = (logs / "version_0" / "test").glob("*/metrics.json")  # the test went into the run it tested
    test_acc = json.loads(metrics.read_text())["test_acc"]
    summary = json.loads((logs / "version_0" / "summary.json").read_text())
    # interrupted before it wrote a summary (an older run, or SIGTERM'd): from its config and checkpoint names
    interrupted = logs / "version_2"
    (interrupted / "checkpoints").mkdir(parents=True)
    config = yaml.safe_load((logs / "version_0" / "config.yaml").read_text())
    one_cycle = {"class_path": "torch.optim.lr_scheduler.OneCycleLR"}
    config["model"]["scheduler"] = {**one_cycle, "init_args": {"total_steps": None, "max_lr": 0.02}}
    (interrupted / "config.yaml").write_text(yaml.safe_dump(config))
    (interrupted / "checkpoints" / "epoch=2-val_acc=0.4375.ckpt").write_bytes(b"")
    (interrupted / "checkpoints" / "interrupted.ckpt").write_bytes(b"")
    # killed (SIGKILL) while training: its summary still says running
    killed = logs / "version_3"
    killed.mkdir()
    config = yaml.safe_load((logs / "version_0" / "config.yaml").read_text())
    config["data"]["batch_size"] = 16
    config["model"]["scheduler"] = {**one_cycle, "init_args": {"total_steps": None, "max_lr": 0.01}}
    (killed / "config.yaml").write_text(yaml.safe_dump(config))
    (killed / "summary.json").write_text(
        json.dumps({**summary, "status": "running", "epochs": 0, "best_score": None})
    )
    # a test of a checkpoint from outside the log folder: its own version_4/test/model
    outside = tmp_path / "elsewhere" / "model.ckpt"
    outside.parent.mkdir()
    outside.write_bytes((tmp_path / best).read_bytes())
    status, _, err = run_main(
        "test", "--config", CONFIG, f"--data.data_dir={tiny_data}", "--ckpt_path", outside, cwd=tmp_path
    )
    assert status == 0, err[-3000:]
    # failed before its first checkpoint; its summary names version_0's best (a checkpoint callback's state)
    failed = logs / "version_5"
    failed.mkdir()
    (failed / "config.yaml").write_text((logs / "version_0" / "config.yaml").read_text())
    (failed / "summary.json").write_text(json.dumps({**summary, "status": "failed"}))
    # training now in this process (pid and start time), and one whose process is gone (its pid reused)
    this = {
        "host": run_states.host_id(),
        "pid": os.getpid(),
        "pid_start": run_states.process_start(os.getpid()),
    }
    for name, process, limit in (("version_6", this, 4), ("version_7", {**this, "pid_start": "1"}, 30)):
        (logs / name).mkdir()
        config = yaml.safe_load((logs / "version_0" / "config.yaml").read_text())
        config["trainer"].update(limit_train_batches=limit, max_epochs=20)
        (logs / name / "config.yaml").write_text(yaml.safe_dump(config))
        live = {**summary, "status": "running", "epochs": 15, "max_epochs": 20, "process": process}
        (logs / name / "summary.json").write_text(json.dumps(live))
    sweep_file = write_sweep(tmp_path, "s", trials=2)
    status, _, err = run_sweep(*sweep_args(sweep_file, tiny_data), cwd=tmp_path)
    assert status == 0, err[-3000:]
    return LogFolder(logs, best, test_acc, summary)


def test_every_run_is_listed_finished_interrupted_killed_and_swept(log_folder):
    rows = log_folder.rows()
    assert set(rows) == {
        *(
            "version_0",
            "version_2",
            "version_3",
            "version_4/test/model",
            "version_5",
            "version_6",
            "version_7",
        ),
        *("sweeps/s/trial_0", "sweeps/s/trial_1"),
    }


def test_a_finished_and_tested_run_shows_its_results(log_folder):
    finished = log_folder.rows()["version_0"]
    assert finished["status"] == "finished" and finished["epochs"] == "1"
    assert float(finished["val_acc"]) == log_folder.summary["best_score"]
    assert float(finished["test_acc"]) == log_folder.test_acc
    assert finished["best_checkpoint"] == log_folder.best and float(finished["fit_s"]) > 0


def test_a_run_interrupted_before_its_summary_is_read_from_its_config_and_checkpoints(log_folder):
    interrupted = log_folder.rows()["version_2"]
    assert (interrupted["status"], interrupted["val_acc"]) == ("interrupted", "0.4375")
    assert interrupted["epochs"] == ">=3" and interrupted["test_acc"] == ""


def test_a_run_whose_summary_names_no_process_shows_as_running_or_killed(log_folder):
    killed = log_folder.rows()["version_3"]
    assert (killed["status"], killed["data.batch_size"]) == ("running/killed", "16")


def test_a_live_run_shows_its_epoch_and_one_whose_process_is_gone_is_killed(log_folder):
    rows = log_folder.rows()
    assert (rows["version_6"]["status"], rows["version_6"]["epochs"]) == ("running epoch 16/20", "15")
    assert (rows["version_7"]["status"], rows["version_7"]["epochs"]) == ("killed", "15")


def test_a_failed_run_without_checkpoints_lists_no_best_checkpoint(log_folder):
    failed = log_folder.rows()["version_5"]
    assert (failed["status"], failed["best_checkpoint"]) == ("failed", "")


def test_a_test_of_a_checkpoint_from_outside_the_log_folder_is_listed(log_folder):
    evaluation = log_folder.rows()["version_4/test/model"]
    assert (evaluation["status"], evaluation["best_checkpoint"]) == (
        "evaluated",
        str(log_folder.logs.parent / "elsewhere" / "model.ckpt"),
    )
    assert float(evaluation["test_acc"]) == log_folder.test_acc  # the same weights as version_0's best


def test_trainer_settings_that_change_results_show_where_runs_differ(log_folder):
    rows = log_folder.rows()
    limits = {
        name: rows[name]["trainer.limit_train_batches"] for name in ("version_0", "version_6", "version_7")
    }
    assert limits == {"version_0": "4", "version_6": "4", "version_7": "30"}
    assert "trainer.devices" not in rows["version_0"]  # where a run goes, not what it learns


def test_swept_trials_show_their_sampled_settings(log_folder):
    rows = log_folder.rows()
    study = [rows[f"sweeps/s/trial_{n}"] for n in (0, 1)]
    assert all(row["status"] == "finished" for row in study)
    assert study[0]["optimizer.lr"] != study[1]["optimizer.lr"]  # sampled, from each trial's config.yaml


def test_a_setting_is_a_column_only_where_runs_differ(log_folder):
    rows = log_folder.rows()
    assert rows["version_0"]["data.batch_size"] == "32" and "data.dataset" not in rows["version_0"]
    assert "seed" not in rows["version_0"]
    # a scheduler's arguments: only those set differently between the runs that use it
    assert [rows[name]["scheduler"] for name in ("version_0", "version_2")] == ["", "OneCycleLR"]
    max_lr = "scheduler.max_lr"
    assert (rows["version_2"][max_lr], rows["version_3"][max_lr]) == ("0.02", "0.01")
    assert "scheduler.total_steps" not in rows["version_0"]


def test_runs_sort_filter_group_and_markdown(log_folder):
    logs = log_folder.logs
    by_acc = list(csv.DictReader(io.StringIO(list_runs(str(logs), "--format", "csv", "--sort=-val_acc"))))
    accs = [float(row["val_acc"]) for row in by_acc if row["val_acc"]]
    assert accs == sorted(accs, reverse=True) and by_acc[-1]["val_acc"] == ""
    swept = list_runs(str(logs), "--filter", "sweeps/*", "--format", "csv")
    assert [row["run"] for row in csv.DictReader(io.StringIO(swept))] == [
        "sweeps/s/trial_0",
        "sweeps/s/trial_1",
    ]
    grouped = list(csv.DictReader(io.StringIO(list_runs(str(logs / "sweeps"), "--group", "--format", "csv"))))
    assert len(grouped) == 2 and all(row["runs"] == "1" for row in grouped)
    markdown = list_runs(str(logs), "--format", "markdown", "--filter", "version_0")
    assert (
        markdown.splitlines()[0].startswith("| run | when | status |")
        and f"{100 * log_folder.test_acc:.2f}%" in markdown
    )


def test_runs_lists_the_table_without_importing_torch_or_lightning(log_folder):
    check = (
        "import sys; from mnist_lightning.cli.main import main; main(['runs', sys.argv[1]]); "
        "assert not {'torch', 'lightning'} & set(sys.modules), 'runs imported torch or lightning'"
    )
    result = subprocess.run(
        [sys.executable, "-c", check, str(log_folder.logs)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "running/killed" in result.stdout and "interrupted" in result.stdout


def write_runs(logs: Path, accuracies: list[float]) -> None:
    """Finished runs as ``fit`` leaves them (summary.json, config.yaml), one learning rate each."""
    for number, val_acc in enumerate(accuracies):
        folder = logs / f"version_{number}"
        folder.mkdir(parents=True)
        summary = {"status": "finished", "epochs": 1, "monitor": "val_acc", "best_score": val_acc}
        (folder / "summary.json").write_text(json.dumps(summary))
        optimizer = {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.01 / (number + 1)}}
        config = {"model": {"optimizer": optimizer, "label_smoothing": 0.1}, "data": {"batch_size": 32}}
        (folder / "config.yaml").write_text(yaml.safe_dump(config))


def test_sort_by_a_column_descending_with_a_minus(tmp_path):
    write_runs(tmp_path, [0.91, 0.95, 0.93])
    for sort in (["--sort", "-val_acc"], ["--sort=-val_acc"], ["--sort", "val_acc", "--desc"]):
        rows = csv.DictReader(io.StringIO(list_runs(str(tmp_path), "--format", "csv", *sort)))
        assert [row["val_acc"] for row in rows] == ["0.95", "0.93", "0.91"], sort


def test_sort_by_an_unknown_column_names_the_close_ones_and_the_tables(tmp_path, capsys):
    write_runs(tmp_path, [0.91, 0.95])
    with pytest.raises(SystemExit) as exit_:
        list_runs(str(tmp_path), "--sort", "val_accc")
    assert exit_.value.code == 2
    columns = "run, when, status, optimizer.lr, epochs, val_acc, test_acc, fit_s, best_checkpoint"
    expected = (
        f"error: --sort val_accc: no such column (did you mean val_acc?); the table's columns: {columns}.\n"
    )
    assert capsys.readouterr().err == expected


def write_run(folder, lr: float, weight_decay: float, label_smoothing: float, batch_size: int) -> None:
    """A finished run as ``fit`` leaves it, as far as ``runs`` reads it: its config and summary."""
    folder.mkdir(parents=True)
    optimizer = {"class_path": "torch.optim.AdamW", "init_args": {"lr": lr, "weight_decay": weight_decay}}
    config = {
        "model": {"optimizer": optimizer, "label_smoothing": label_smoothing},
        "data": {"batch_size": batch_size},
        "trainer": {"max_epochs": 10},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    checkpoint = folder / "checkpoints" / "epoch=9-val_acc=0.9812.ckpt"
    summary = {
        "status": "finished", "epochs": 10, "monitor": "val_acc", "best_score": 0.9812, "fit_seconds": 61.5,
        "best_checkpoint": str(checkpoint), "started": "2026-12-03T02:00:00+00:00",
    }  # fmt: skip
    (folder / "summary.json").write_text(json.dumps(summary))


def test_runs_fits_the_terminal_and_names_columns_as_the_csv_does(tmp_path, monkeypatch):
    runs = [(0.001, 0.0, 0.0, 32), (0.002, 0.01, 0.1, 64), (0.003, 0.05, 0.05, 128)]
    for index, settings in enumerate(runs):
        write_run(tmp_path / "lightning_logs" / f"version_{index}", *settings)
    logs = str(tmp_path / "lightning_logs")
    monkeypatch.setenv("COLUMNS", "80")
    table = list_runs(logs)
    assert max(map(len, table.splitlines())) <= 80, table
    assert "columns left out to fit 80 characters" in table and "--wide shows them all" in table
    assert table.split()[:3] == ["run", "status", "optimizer.lr"]  # the settings that differ, as many as fit
    wide = list_runs(logs, "--wide")
    csv_header = list_runs(logs, "--format", "csv").splitlines()[0].split(",")
    assert wide.splitlines()[0].split() == csv_header  # one name per column, in the table and the CSV
    assert {"optimizer.weight_decay", "label_smoothing", "data.batch_size"} < set(csv_header)


def test_runs_shows_each_runs_commit_and_groups_only_runs_of_one_commit(tmp_path):
    """The commit column (``+`` for a dirty tree) from provenance.json; two seeds of one configuration at
    two commits are two groups."""
    logs = tmp_path / "lightning_logs"
    commits = {"version_0": ("3fa2c1d" + "0" * 33, False), "version_1": ("3fa2c1d" + "0" * 33, False)}
    commits["version_2"] = ("77e0b5a" + "1" * 33, True)
    for index, (name, (commit, dirty)) in enumerate(commits.items()):
        write_run(logs / name, 0.001, 0.0, 0.0, 32)
        config = yaml.safe_load((logs / name / "config.yaml").read_text())
        config["seed_everything"] = index
        (logs / name / "config.yaml").write_text(yaml.safe_dump(config))
        session = {"command": "fit", "git": {"commit": commit, "branch": "main", "dirty": dirty}}
        (logs / name / "provenance.json").write_text(json.dumps({"format": 1, "sessions": [session]}))
    rows = list(csv.DictReader(io.StringIO(list_runs(str(logs), "--format", "csv", "--sort", "run"))))
    assert [row["commit"] for row in rows] == ["3fa2c1d", "3fa2c1d", "77e0b5a+"]
    grouped = list_runs(str(logs), "--group", "--filter", "version_*", "--format", "csv", "--sort", "commit")
    assert [(row["commit"], row["runs"]) for row in csv.DictReader(io.StringIO(grouped))] == [
        ("3fa2c1d", "2"),
        ("77e0b5a+", "1"),
    ]
