"""The preset configs (best and debug) compose with the default config and run, as a user runs them."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import CONFIG, QUICK, REPO, run_cli
from test_cli import best_checkpoint

BEST = REPO / "configs" / "best.yaml"
DEBUG = REPO / "configs" / "debug"
SMALL_DATA = ("--trainer.enable_progress_bar=false", "--data.batch_size=32", "--data.val_size=64")


def run_presets(subcommand: str, presets: list, *args: str, cwd):
    """``python -m mnist_lightning SUBCOMMAND --config default.yaml --config PRESET ... ARGS``."""
    configs = [arg for preset in [CONFIG, *presets] for arg in ("--config", preset)]
    return run_cli(subcommand, *configs, *args, cwd=cwd)


@pytest.mark.parametrize(
    "preset,key,expected",
    [
        (BEST, ("data", "augment", "rotation"), 10.0),
        (DEBUG / "fast_dev_run.yaml", ("trainer", "fast_dev_run"), True),
        (DEBUG / "overfit.yaml", ("trainer", "overfit_batches"), 2),
        (DEBUG / "profiler.yaml", ("trainer", "profiler"), "simple"),
        (DEBUG / "limit.yaml", ("trainer", "limit_train_batches"), 10),
    ],
)
def test_preset_composes_with_the_default_config(tmp_path, preset, key, expected):
    printed = run_presets("fit", [preset], "--print_config", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr[-3000:]
    config = yaml.safe_load(printed.stdout)
    value = config
    for part in key:
        value = value[part]
    assert value == expected
    assert config["data"]["data_dir"] == "data", "the default config's other settings stay in force"


def test_best_preset_fits_and_its_checkpoint_tests(tmp_path, tiny_data):
    data = f"--data.data_dir={tiny_data}"
    fitted = run_presets("fit", [BEST], data, *QUICK, "--trainer.limit_train_batches=2", cwd=tmp_path)
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    checkpoint = tmp_path / best_checkpoint(fitted)
    hparams = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    expected = yaml.safe_load(BEST.read_text())["model"]["net"]["init_args"]["hidden_sizes"]
    assert hparams["net"]["init_args"]["hidden_sizes"] == expected

    tested = run_presets("test", [BEST], data, "--ckpt_path", str(checkpoint), cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr[-3000:]
    metrics = json.loads((checkpoint.parent.parent / "test" / checkpoint.stem / "metrics.json").read_text())
    assert 0.0 <= metrics["test_acc"] <= 1.0


def test_fast_dev_run_runs_one_batch_and_writes_nothing(tmp_path, tiny_data):
    result = run_presets(
        "fit", [DEBUG / "fast_dev_run.yaml"], f"--data.data_dir={tiny_data}", *SMALL_DATA, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "fast_dev_run" in result.stdout + result.stderr
    assert not (tmp_path / "lightning_logs").exists()


def test_overfit_preset_memorizes_its_batches(tmp_path, tiny_data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_presets(
        "fit",
        [BEST, DEBUG / "overfit.yaml"],
        "--model.net.init_args.hidden_sizes=[64]",
        "--model.net.init_args.dropout=0",
        f"--data.data_dir={tiny_data}",
        *SMALL_DATA,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "shuffling" not in result.stderr, "the data module itself must turn shuffling off"
    events = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"))
    events.Reload()
    assert events.Scalars("train_acc")[-1].value == 1.0
    assert events.Scalars("train_acc")[-1].step == 2 * 30 - 1, "2 batches per epoch for 30 epochs"


def test_profiler_preset_prints_a_report(tmp_path, tiny_data):
    presets = [DEBUG / "limit.yaml", DEBUG / "profiler.yaml"]
    result = run_presets("fit", presets, f"--data.data_dir={tiny_data}", *SMALL_DATA, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "FIT Profiler Report" in output and "run_training_batch" in output


def test_limit_preset_takes_few_batches_per_epoch(tmp_path, tiny_data):
    data = f"--data.data_dir={tiny_data}"
    result = run_presets("fit", [DEBUG / "limit.yaml"], data, *SMALL_DATA, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 2 * 10, "2 epochs of 10 batches"
