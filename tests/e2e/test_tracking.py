"""The MLflow preset against a real ``mlflow server`` subprocess (SQLite database, proxied artifacts): what
``fit``, ``test`` and a sweep log is read back through ``mlflow.MlflowClient``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from helpers.commands import CONFIG, QUICK
from helpers.inprocess import run_main
from helpers.sweeps import run_sweep, sweep_args, write_sweep
from helpers.tracking import MlflowServer, git_work_tree

MLFLOW_PRESET = CONFIG.parent / "loggers" / "mlflow.yaml"
pytestmark = pytest.mark.slow  # a server process


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    server = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    try:
        server.wait_until_healthy()
        yield server
    finally:
        server.stop()


def artifact_names(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {Path(entry.path).name for entry in client.list_artifacts(run_id, path)}


def test_fit_and_test_log_into_one_run_of_the_server(mlflow_server, tmp_path, tiny_data):
    """Params, the per-epoch val_acc history, test_acc at the checkpoint's step, the git commit tags, the
    run's files and the test report's pictures as artifacts; the run id kept in the run folder."""
    commit = git_work_tree(tmp_path)
    args = (
        "--config", CONFIG, "--config", MLFLOW_PRESET, f"--data.data_dir={tiny_data}",
        f"--trainer.logger.init_args.tracking_uri={mlflow_server.uri}",
    )  # fmt: skip
    status, stdout, stderr = run_main("fit", *args, *QUICK, "--trainer.max_epochs=2", cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    best = tmp_path / re.search(r"Best checkpoint: (\S+)", stdout).group(1)
    status, _, stderr = run_main("test", *args, "--ckpt_path", best, cwd=tmp_path)
    assert status == 0, stderr[-3000:]

    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("mnist-lightning")
    [run] = client.search_runs([experiment.experiment_id])  # the test logged into the training's run
    run_id, folder = run.info.run_id, tmp_path / "lightning_logs" / "version_0"
    recorded = json.loads((folder / "trackers.json").read_text())["mlflow"]
    assert (recorded["run_id"], recorded["tracking_uri"]) == (run_id, mlflow_server.uri)
    assert run.info.status == "FINISHED" and run.info.run_name == "version_0"
    params = run.data.params
    assert params["optimizer/init_args/lr"] == "0.001" and params["net/init_args/hidden_sizes"] == "[128, 64]"
    assert params["batch_size"] == "32"
    history = client.get_metric_history(run_id, "val_acc")
    summary = json.loads((folder / "summary.json").read_text())
    assert len(history) == 2 and history[0].step < history[1].step
    assert max(point.value for point in history) == pytest.approx(summary["best_score"])
    metrics = json.loads((folder / "test" / best.stem / "metrics.json").read_text())
    [test_acc] = client.get_metric_history(run_id, "test_acc")
    trained_steps = torch.load(best, map_location="cpu", weights_only=True)["global_step"]
    assert test_acc.value == pytest.approx(metrics["test_acc"]) and test_acc.step == trained_steps
    tags = run.data.tags
    assert (tags["mlflow.source.git.commit"], tags["mlflow.source.git.branch"]) == (commit, "main")
    assert tags["mnist_lightning.git.dirty"] == "false"
    assert tags["mnist_lightning.run_folder"] == str(folder.resolve())
    assert {"config.yaml", "provenance.json", "requirements.txt", "summary.json"} <= artifact_names(
        client, run_id
    )
    evaluation = artifact_names(client, run_id, f"test/{best.stem}")
    assert {"confusion_matrix.png", "misclassified.png", "classification_report.txt"} <= evaluation
    assert {"metrics.json", "config.yaml", "provenance.json"} <= evaluation
    config = Path(client.download_artifacts(run_id, "config.yaml", str(tmp_path / "downloaded")))
    assert config.read_text() == (folder / "config.yaml").read_text()
    assert artifact_names(client, run_id, "images")  # the per-epoch confusion matrices, by step


def test_a_sweep_gives_each_trial_its_own_finished_run_in_the_studys_experiment(
    mlflow_server, tmp_path, tiny_data
):
    sweep_file = write_sweep(tmp_path, "tracked", trials=2)
    extra = ("--config", str(MLFLOW_PRESET), f"--trainer.logger.init_args.tracking_uri={mlflow_server.uri}")
    status, _, stderr = run_sweep(*sweep_args(sweep_file, tiny_data, *extra), cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    client = MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("mnist-lightning/tracked")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert [(run.info.run_name, run.info.status) for run in runs] == [
        ("trial_0", "FINISHED"),
        ("trial_1", "FINISHED"),
    ]
    for run in runs:
        folder = tmp_path / "lightning_logs" / "sweeps" / "tracked" / run.info.run_name
        assert json.loads((folder / "trackers.json").read_text())["mlflow"]["run_id"] == run.info.run_id
        assert len(client.get_metric_history(run.info.run_id, "val_acc")) == 2  # its own epochs only
