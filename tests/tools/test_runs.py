"""``python -m mnist_lightning runs``: finished, tested, interrupted, killed and swept runs in one table."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mnist_lightning.cli.main import main

from helpers.commands import CONFIG, QUICK
from helpers.inprocess import run_main
from helpers.sweeps import run_sweep, sweep_args, write_sweep


def list_runs(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["runs", *args])
    return out.getvalue()


def test_runs_lists_finished_tested_interrupted_and_swept_runs(tmp_path, tiny_data):
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
    sweep_file = write_sweep(tmp_path, "s", trials=2)
    status, _, err = run_sweep(*sweep_args(sweep_file, tiny_data), cwd=tmp_path)
    assert status == 0, err[-3000:]

    rows = {row["run"]: row for row in csv.DictReader(io.StringIO(list_runs(str(logs), "--format", "csv")))}
    assert set(rows) == {"version_0", "version_2", "version_3", "sweeps/s/trial_0", "sweeps/s/trial_1"}
    finished = rows["version_0"]
    assert finished["status"] == "finished" and finished["epochs"] == "1"
    assert float(finished["val_acc"]) == summary["best_score"] and float(finished["test_acc"]) == test_acc
    assert finished["best_checkpoint"] == best and float(finished["fit_s"]) > 0
    assert finished["batch_size"] == "32" and "dataset" not in finished  # the same in all: no column
    assert (rows["version_2"]["status"], rows["version_2"]["val_acc"]) == ("interrupted", "0.4375")
    assert rows["version_2"]["epochs"] == ">=3" and rows["version_2"]["test_acc"] == ""
    assert (rows["version_3"]["status"], rows["version_3"]["batch_size"]) == ("running/killed", "16")
    study = json.loads(json.dumps([rows[f"sweeps/s/trial_{n}"] for n in (0, 1)]))
    assert all(row["status"] == "finished" for row in study)
    assert study[0]["lr"] != study[1]["lr"]  # the sampled values, from each trial's config.yaml
    assert "seed_everything" not in rows["version_0"]  # a column only where runs differ
    # a scheduler's arguments: only those set differently between the runs that use it
    assert [rows[name]["scheduler"] for name in ("version_0", "version_2")] == ["", "OneCycleLR"]
    max_lr = "model.scheduler.init_args.max_lr"
    assert (rows["version_2"][max_lr], rows["version_3"][max_lr]) == ("0.02", "0.01")
    assert "model.scheduler.init_args.total_steps" not in rows["version_0"]

    # sorting, filtering, grouping, markdown
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
        and f"{100 * test_acc:.2f}%" in markdown
    )

    # the same table from a process that never imports torch or Lightning
    check = (
        "import sys; from mnist_lightning.cli.main import main; main(['runs', sys.argv[1]]); "
        "assert not {'torch', 'lightning'} & set(sys.modules), 'runs imported torch or lightning'"
    )
    result = subprocess.run(
        [sys.executable, "-c", check, str(logs)], capture_output=True, text=True, timeout=60
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
    columns = "run, when, status, lr, epochs, val_acc, test_acc, fit_s, best_checkpoint"
    expected = (
        f"error: --sort val_accc: no such column (did you mean val_acc?); the table's columns: {columns}.\n"
    )
    assert capsys.readouterr().err == expected
