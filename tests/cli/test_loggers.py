"""The logger presets (configs/loggers/): they compose with the recipe, every run keeps a folder whatever its
loggers, and a tracker that cannot work is one error before anything runs."""

from __future__ import annotations

import csv
import io
import json
import re
import socket
import sys

import pytest
import yaml

from helpers.commands import CONFIG, QUICK
from helpers.inprocess import run_main

PRESETS = CONFIG.parent / "loggers"
LOGGERS = "lightning.pytorch.loggers."


@pytest.mark.parametrize(
    "preset,loggers",
    [
        ("tensorboard.yaml", ["TensorBoardLogger"]),
        ("csv.yaml", ["CSVLogger"]),
        ("mlflow.yaml", ["MLFlowLogger"]),
        ("wandb.yaml", ["WandbLogger"]),
        ("tensorboard-mlflow.yaml", ["TensorBoardLogger", "MLFlowLogger"]),
    ],
)
def test_a_logger_preset_composes_with_any_recipe(tmp_path, preset, loggers):
    fast = CONFIG.parent / "fast.yaml"
    args = ("fit", "--config", CONFIG, "--config", fast, "--config", PRESETS / preset, "--print_config")
    status, stdout, stderr = run_main(*args, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    config = yaml.safe_load(stdout)
    logger = config["trainer"]["logger"]
    listed = logger if isinstance(logger, list) else [logger]
    assert [item["class_path"] for item in listed] == [LOGGERS + name for name in loggers]
    assert config["data"]["batch_size"] == 256 and config["trainer"]["max_epochs"] == 3  # fast.yaml's
    recipe = yaml.safe_load(CONFIG.read_text())["trainer"]["callbacks"]
    kept = [item["class_path"] for item in config["trainer"]["callbacks"]]
    assert kept == [item["class_path"] for item in recipe]  # a logger preset keeps the recipe's callbacks


def test_the_tensorboard_preset_is_the_recipes_logger():
    preset = yaml.safe_load((PRESETS / "tensorboard.yaml").read_text())["trainer"]["logger"]
    assert preset == yaml.safe_load(CONFIG.read_text())["trainer"]["logger"]


@pytest.mark.parametrize("loggers", ["csv", "none"])
def test_with_csv_alone_or_no_logger_a_run_has_its_folder_and_keeps_its_evaluations(
    tmp_path, tiny_data, loggers
):
    """``runs`` lists the run with its test accuracy; the test's files are in the run's folder; CSV alone:
    the training's metrics.csv is left alone by the test, which writes its own beside its files."""
    chosen = ["--config", PRESETS / "csv.yaml"] if loggers == "csv" else ["--trainer.logger=false"]
    args = ("--config", CONFIG, *chosen, f"--data.data_dir={tiny_data}")
    status, stdout, stderr = run_main("fit", *args, *QUICK, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    best = re.search(r"Best checkpoint: (\S+)", stdout).group(1)
    run = tmp_path / "lightning_logs" / "version_0"
    assert (tmp_path / best).parent == run / "checkpoints"
    assert {"config.yaml", "summary.json", "provenance.json"} <= {path.name for path in run.iterdir()}
    status, _, stderr = run_main("test", *args, "--ckpt_path", best, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    evaluation = run / "test" / (tmp_path / best).stem
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert (evaluation / "provenance.json").is_file() and (evaluation / "confusion_matrix.png").is_file()
    if loggers == "csv":
        trained = list(csv.DictReader((run / "metrics.csv").open()))
        assert [row["val_acc"] for row in trained if row["val_acc"]] and "test_acc" not in trained[0]
        assert "test_acc" in next(csv.DictReader((evaluation / "metrics.csv").open()))
    status, stdout, _ = run_main("runs", "--format", "csv", cwd=tmp_path)
    [row] = csv.DictReader(io.StringIO(stdout))
    assert (row["run"], row["status"], float(row["test_acc"])) == (
        "version_0",
        "finished",
        metrics["test_acc"],
    )
    assert not (tmp_path / "checkpoints").exists()  # not Lightning's default_root_dir/checkpoints


@pytest.mark.parametrize("package,preset", [("mlflow", "mlflow.yaml"), ("wandb", "wandb.yaml")])
def test_a_missing_tracker_package_names_the_extra_to_install(
    tmp_path, tiny_data, monkeypatch, package, preset
):
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed
    status, _, stderr = run_main(
        "fit", "--config", CONFIG, "--config", PRESETS / preset, f"--data.data_dir={tiny_data}", cwd=tmp_path
    )
    assert status == 2
    assert stderr.startswith("error: trainer.logger ") and stderr.count("\n") == 1, stderr
    assert f"pip install 'mnist-lightning[{package}]'" in stderr
    assert not (tmp_path / "lightning_logs").exists()


def test_an_unreachable_mlflow_server_is_one_error_before_training(tmp_path, tiny_data):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    status, stdout, stderr = run_main(
        "fit", "--config", CONFIG, "--config", PRESETS / "mlflow.yaml", f"--data.data_dir={tiny_data}",
        f"--trainer.logger.init_args.tracking_uri={uri}", cwd=tmp_path,
    )  # fmt: skip
    assert status == 2
    assert stderr.startswith(f"error: the MLflow logger cannot reach a tracking server at {uri} ")
    assert stderr.count("\n") == 1, stderr
    assert f"mlflow server --host 127.0.0.1 --port {port}" in stderr and "sqlite:///mlflow.db" in stderr
    assert "Epoch" not in stdout and sorted(path.name for path in tmp_path.iterdir()) == []
