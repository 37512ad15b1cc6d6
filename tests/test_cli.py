"""The command line end to end, as a user runs it: subprocesses in a fresh directory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from conftest import CONFIG, QUICK, run_cli, run_on_checkpoint


def fit_tiny(tmp_path: Path, tiny_data: Path, *extra: str):
    result = run_cli("fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK, *extra, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def best_checkpoint(result) -> Path:
    match = re.search(r"Best checkpoint: (\S+)", result.stdout)
    assert match, result.stdout[-2000:]
    return Path(match.group(1))


def test_fit_then_test_writes_checkpoints_config_events_and_metrics(tmp_path, tiny_data):
    result = fit_tiny(tmp_path, tiny_data)
    run_dir = tmp_path / "lightning_logs" / "version_0"
    best = tmp_path / best_checkpoint(result)
    assert best.is_file() and best.parent == run_dir / "checkpoints"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "config.yaml").is_file()
    assert list(run_dir.glob("events.out.tfevents.*"))

    tested = run_cli(
        "test", "--config", CONFIG, f"--data.data_dir={tiny_data}", "--ckpt_path", best, cwd=tmp_path
    )
    assert tested.returncode == 0, tested.stderr[-3000:]
    metrics = json.loads((run_dir / "test" / best.stem / "metrics.json").read_text())  # kept with its run
    assert set(metrics) >= {"test_acc", "test_loss"}
    assert 0.0 <= metrics["test_acc"] <= 1.0


def test_checkpointing_off_on_the_command_line_trains_and_saves_no_checkpoint(tmp_path, tiny_data):
    result = fit_tiny(tmp_path, tiny_data, "--trainer.enable_checkpointing=false")
    assert "checkpoint callbacks are left out" in result.stdout
    run_dir = tmp_path / "lightning_logs" / "version_0"
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert not list(tmp_path.rglob("*.ckpt"))


def test_evaluation_batch_size_does_not_change_test_metrics(tmp_path, tiny_data, tiny_checkpoint):
    metrics = []
    for eval_batch_size in (7, 1000):
        tested = run_on_checkpoint(
            "test",
            tiny_checkpoint,
            f"--data.data_dir={tiny_data}",
            f"--data.eval_batch_size={eval_batch_size}",
            cwd=tmp_path,
        )
        assert tested.returncode == 0, tested.stderr[-3000:]
        path = re.search(r"Test metrics written to (\S+)", tested.stdout).group(1)
        metrics.append(json.loads((tmp_path / path).read_text()))
    assert metrics[0]["test_acc"] == metrics[1]["test_acc"]
    assert metrics[0]["test_loss"] == pytest.approx(metrics[1]["test_loss"], rel=1e-6)


def test_tensorboard_events_hold_epoch_curves(tmp_path, tiny_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    fit_tiny(tmp_path, tiny_data, "--trainer.max_epochs=2")
    events = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "val_acc_best"} <= tags
    assert len(events.Scalars("val_acc")) == 2 and len(events.Scalars("train_loss")) == 2


def test_print_config_is_valid_yaml_and_saved_config_reruns(tmp_path, tiny_data):
    printed = run_cli("fit", "--config", CONFIG, "--print_config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    config = yaml.safe_load(printed.stdout)
    assert config["model"]["net"]["class_path"] == "mnist_lightning.nets.MLP"
    assert config["model"]["net"]["init_args"]["hidden_sizes"] == [128, 64]
    assert config["model"]["optimizer"]["init_args"]["lr"] == 0.001
    assert config["data"]["batch_size"] == 64

    fit_tiny(tmp_path, tiny_data)
    saved = tmp_path / "lightning_logs" / "version_0" / "config.yaml"
    rerun = run_cli("fit", "--config", saved, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert (tmp_path / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt").is_file()


def test_missing_checkpoint_is_a_clear_error(tmp_path, tiny_data):
    result = run_cli(
        "test", "--config", CONFIG, f"--data.data_dir={tiny_data}", "--ckpt_path", "nope.ckpt", cwd=tmp_path
    )
    assert result.returncode != 0
    assert "nope.ckpt" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_config_key_is_a_clear_error(tmp_path):
    result = run_cli("fit", "--config", CONFIG, "--model.net.init_args.hiden_sizes=[10]", cwd=tmp_path)
    assert result.returncode != 0
    assert "hiden_sizes" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_without_network_is_a_clear_error(tmp_path):
    result = run_cli("fit", "--config", CONFIG, "--data.data_dir=empty", *QUICK, cwd=tmp_path)
    assert result.returncode != 0
    assert str((tmp_path / "empty" / "MNIST" / "raw").resolve()) in result.stderr
    assert "t10k-labels-idx1-ubyte" in result.stderr
    assert "Traceback" not in result.stderr


def test_one_epoch_on_real_mnist_reaches_90_percent(tmp_path, real_data):
    result = run_cli(
        "fit",
        "--config",
        CONFIG,
        f"--data.data_dir={real_data}",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    val_acc = float(re.search(r"val_acc=([0-9.]+)\.ckpt", best_checkpoint(result).name).group(1))
    assert val_acc > 0.9
