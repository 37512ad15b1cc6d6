"""Each logger in its own form, without a server: MLflow in a local ``file:`` store, W&B offline."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers.commands import CONFIG, QUICK
from helpers.inprocess import run_main

PRESETS = CONFIG.parent / "loggers"


def test_mlflow_in_a_file_store_gets_the_fit_and_the_test_of_its_checkpoint(
    tmp_path, tiny_data, tiny_checkpoint, monkeypatch
):
    """MLFLOW_TRACKING_URI names the store (MLflow 3 opens a file: store only when allowed); the run folder
    is lightning_logs/version_0 as with any logger, a CSVLogger holding it. A checkpoint whose run has no
    MLflow run is tested into a new one named after it."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:./mlruns")
    args = ("--config", CONFIG, "--config", PRESETS / "mlflow.yaml", f"--data.data_dir={tiny_data}")
    status, stdout, stderr = run_main("fit", *args, *QUICK, "--trainer.max_epochs=2", cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    best = tmp_path / re.search(r"Best checkpoint: (\S+)", stdout).group(1)
    folder = tmp_path / "lightning_logs" / "version_0"
    assert best.parent == folder / "checkpoints" and (folder / "metrics.csv").is_file()
    last = folder / "checkpoints" / "last.ckpt"  # of the second epoch
    status, _, stderr = run_main("test", *args, "--ckpt_path", last, cwd=tmp_path)
    assert status == 0, stderr[-3000:]

    store = f"file:{tmp_path / 'mlruns'}"
    assert json.loads((folder / "trackers.json").read_text())["mlflow"]["tracking_uri"] == store
    client = MlflowClient(store)
    [run] = client.search_runs([client.get_experiment_by_name("mnist-lightning").experiment_id])
    assert run.info.status == "FINISHED" and len(client.get_metric_history(run.info.run_id, "val_acc")) == 2
    metrics = json.loads((folder / "test" / "last" / "metrics.json").read_text())
    assert run.data.metrics["test_acc"] == pytest.approx(metrics["test_acc"])
    epochs = client.get_metric_history(run.info.run_id, "epoch")  # the test's at its checkpoint's epoch
    tested_epoch = max(epochs, key=lambda point: point.step).value
    assert tested_epoch == torch.load(last, weights_only=True)["epoch"] == 1
    tested = {entry.path for entry in client.list_artifacts(run.info.run_id, "test/last")}
    assert "test/last/misclassified.png" in tested

    status, _, stderr = run_main("test", *args, "--ckpt_path", tiny_checkpoint, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    runs = client.search_runs([run.info.experiment_id], order_by=["attributes.start_time DESC"])
    assert len(runs) == 2 and runs[0].info.run_name == f"test {tiny_checkpoint.name}"
    assert runs[0].data.tags["mnist_lightning.checkpoint"] == str(tiny_checkpoint.resolve())
    assert "test_acc" in runs[0].data.metrics


def test_an_evaluation_of_a_checkpoint_logs_into_its_runs_mlflow_run_without_the_logger_given_again(
    tmp_path, tiny_data, monkeypatch
):
    """trackers.json leads test and validate of the run's checkpoint to its MLflow run and store, though
    their command line names no MLflow logger and no store (docs/tracking.md)."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:./mlruns")
    data = f"--data.data_dir={tiny_data}"
    status, _, stderr = run_main(
        "fit", "--config", CONFIG, "--config", PRESETS / "mlflow.yaml", data, *QUICK, cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    monkeypatch.delenv("MLFLOW_TRACKING_URI")  # the store, too, is the run's: from its trackers.json
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    for command in ("test", "validate"):
        status, _, stderr = run_main(command, "--config", CONFIG, data, "--ckpt_path", last, cwd=tmp_path)
        assert status == 0, stderr[-3000:]

    client = MlflowClient(f"file:{tmp_path / 'mlruns'}")
    [run] = client.search_runs([client.get_experiment_by_name("mnist-lightning").experiment_id])
    metrics = json.loads(
        (tmp_path / "lightning_logs" / "version_0" / "test" / "last" / "metrics.json").read_text()
    )
    assert run.data.metrics["test_acc"] == pytest.approx(metrics["test_acc"])
    assert len(client.get_metric_history(run.info.run_id, "val_acc")) == 2  # the fit's epoch, the validate
    assert "test/last/metrics.json" in {
        entry.path for entry in client.list_artifacts(run.info.run_id, "test/last")
    }
    assert not (tmp_path / "mlflow.db").exists()  # nothing logged to MLflow's default store


def test_wandb_offline_keeps_the_config_metrics_and_provenance_in_its_run_files(
    tmp_path, tiny_data, monkeypatch
):
    """W&B's own record (the .wandb file) holds the hyperparameters and the metrics' values; the run
    folder's files are among its files; the run is finished when the command returns, so the next command
    in the process (a sweep's next trial) gets a run of its own."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    args = ("--config", CONFIG, "--config", PRESETS / "wandb.yaml", f"--data.data_dir={tiny_data}")
    status, _, stderr = run_main("fit", *args, *QUICK, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    assert sys.modules["wandb"].run is None
    [run] = (tmp_path / "wandb").glob("offline-run-*")
    folder = tmp_path / "lightning_logs" / "version_0"
    files = run / "files" / "version_0"
    for name in ("config.yaml", "provenance.json", "summary.json", "metrics.csv"):
        assert (files / name).read_text() == (folder / name).read_text(), name
    val_acc = json.loads((folder / "summary.json").read_text())["best_score"]
    wanted = (b"val_acc", repr(val_acc).encode(), b"hidden_sizes", b"media/images/val_confusion_matrix")
    record = wandb_record(run, wanted)
    assert [text for text in wanted if text not in record] == []
    recorded = json.loads((folder / "trackers.json").read_text())["wandb"]
    assert recorded["project"] == "mnist-lightning" and recorded["id"] in run.name


def test_an_evaluation_of_a_checkpoint_logs_into_its_runs_wandb_run_without_the_logger_given_again(
    tmp_path, tiny_data, monkeypatch
):
    """trackers.json leads a test of the run's checkpoint to its W&B run (the same id, in the same wandb
    folder: the evaluation's files and images are among the run's), though its command line names no W&B
    logger (docs/tracking.md)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    data = f"--data.data_dir={tiny_data}"
    status, _, stderr = run_main(
        "fit", "--config", CONFIG, "--config", PRESETS / "wandb.yaml", data, *QUICK, cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    folder = tmp_path / "lightning_logs" / "version_0"
    run_id = json.loads((folder / "trackers.json").read_text())["wandb"]["id"]
    last = folder / "checkpoints" / "last.ckpt"
    status, _, stderr = run_main("test", "--config", CONFIG, data, "--ckpt_path", last, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    assert sys.modules["wandb"].run is None

    # offline, each session of a run has a folder, named after the time it started and the run's id (and "-1"
    # after the id for a session that started in the same second as the one before it)
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(re.search(rf"-{run_id}(-\d+)?$", run.name) for run in runs), runs
    tested = runs[-1] / "files"  # the test's session: its folder is named after the time it started
    metrics = folder / "test" / "last" / "metrics.json"
    assert (tested / "version_0" / "test" / "last" / "metrics.json").read_text() == metrics.read_text()
    assert list((tested / "media" / "images").glob("test_confusion_matrix_*.png"))


def wandb_record(run: Path, wanted: tuple[bytes, ...], deadline: float = 60) -> bytes:
    """The run's ``.wandb`` record once it holds ``wanted`` (or at the deadline): W&B's own service process
    writes it (and may create it), sometimes a moment after the run has finished."""
    end = time.monotonic() + deadline
    while True:
        found = next(run.glob("*.wandb"), None)
        record = found.read_bytes() if found is not None else b""
        if all(text in record for text in wanted) or time.monotonic() > end:
            return record
        time.sleep(0.2)
