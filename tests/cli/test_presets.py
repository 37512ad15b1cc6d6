"""The preset configs (best and debug) compose with the default config and run (in-process)."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch
import yaml
from test_cli import best_checkpoint, metrics_of

from helpers.commands import CONFIG, QUICK, REPO
from helpers.inprocess import run_main

BEST = REPO / "configs" / "best.yaml"
DEBUG = REPO / "configs" / "debug"
SMALL_DATA = ("--trainer.enable_progress_bar=false", "--data.batch_size=32", "--data.val_size=64")


def run_presets(subcommand: str, presets: list, *args: str, cwd) -> tuple[str, str]:
    """``mnist-lightning SUBCOMMAND --config default.yaml --config PRESET ... ARGS``: stdout, stderr."""
    configs = [arg for preset in [CONFIG, *presets] for arg in ("--config", preset)]
    status, stdout, stderr = run_main(subcommand, *configs, *args, cwd=cwd)
    assert status == 0, stderr[-3000:]
    return stdout, stderr


@pytest.mark.parametrize(
    "preset,key,expected",
    [
        (BEST, ("data", "augment", "rotation"), 10.0),
        (REPO / "configs" / "quick99.yaml", ("model", "net", "init_args", "channels"), [16, 32, 64]),
        (DEBUG / "fast_dev_run.yaml", ("trainer", "fast_dev_run"), True),
        (DEBUG / "overfit.yaml", ("trainer", "overfit_batches"), 2),
        (DEBUG / "profiler.yaml", ("trainer", "profiler"), "simple"),
        (DEBUG / "limit.yaml", ("trainer", "limit_train_batches"), 10),
    ],
)
def test_preset_composes_with_the_default_config(tmp_path, preset, key, expected):
    printed, _ = run_presets("fit", [preset], "--print_config", cwd=tmp_path)
    config = yaml.safe_load(printed)
    value = config
    for part in key:
        value = value[part]
    assert value == expected
    assert config["data"]["data_dir"] == "data", "the default config's other settings stay in force"


def test_best_preset_fits_and_its_checkpoint_tests(tmp_path, tiny_data):
    data = f"--data.data_dir={tiny_data}"
    fitted, _ = run_presets("fit", [BEST], data, *QUICK, "--trainer.limit_train_batches=2", cwd=tmp_path)
    checkpoint = tmp_path / best_checkpoint(fitted)
    hparams = torch.load(checkpoint, map_location="cpu", weights_only=True)["hyper_parameters"]
    expected = yaml.safe_load(BEST.read_text())["model"]["net"]["init_args"]["hidden_sizes"]
    assert hparams["net"]["init_args"]["hidden_sizes"] == expected

    run_presets("test", [BEST], data, "--ckpt_path", str(checkpoint), cwd=tmp_path)
    metrics = json.loads((checkpoint.parent.parent / "test" / checkpoint.stem / "metrics.json").read_text())
    accuracy, loss = metrics_of(checkpoint, tiny_data)
    assert metrics["test_acc"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-5)


def test_fast_dev_run_runs_one_batch_and_writes_nothing(tmp_path, tiny_data):
    stdout, stderr = run_presets(
        "fit", [DEBUG / "fast_dev_run.yaml"], f"--data.data_dir={tiny_data}", *SMALL_DATA, cwd=tmp_path
    )
    assert "fast_dev_run" in stdout + stderr
    assert not (tmp_path / "lightning_logs").exists()


class RecordBatches(L.Callback):
    """The labels of every training batch, by epoch (added to an in-process run through its config)."""

    epochs: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        RecordBatches.epochs.setdefault(trainer.current_epoch, []).append(batch[1].clone())


def test_overfit_preset_memorizes_the_same_batches_every_epoch(tmp_path, tiny_data, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setattr(RecordBatches, "epochs", {})
    run_presets(
        "fit",
        [BEST, DEBUG / "overfit.yaml"],
        "--model.net.init_args.hidden_sizes=[64]",
        "--model.net.init_args.dropout=0",
        f"--data.data_dir={tiny_data}",
        *SMALL_DATA,
        "--trainer.callbacks+=test_presets.RecordBatches",
        cwd=tmp_path,
    )
    first, *others = RecordBatches.epochs.values()
    assert len(others) == 29 and len(first) == 2
    assert all(torch.equal(torch.cat(epoch), torch.cat(first)) for epoch in others), "shuffled"
    events = EventAccumulator(str(tmp_path / "lightning_logs" / "version_0"))
    events.Reload()
    assert events.Scalars("train_acc")[-1].value == 1.0
    assert events.Scalars("train_acc")[-1].step == 2 * 30 - 1, "2 batches per epoch for 30 epochs"


def test_profiler_preset_prints_a_report(tmp_path, tiny_data):
    presets = [DEBUG / "limit.yaml", DEBUG / "profiler.yaml"]
    stdout, stderr = run_presets("fit", presets, f"--data.data_dir={tiny_data}", *SMALL_DATA, cwd=tmp_path)
    output = stdout + stderr
    assert "FIT Profiler Report" in output and "run_training_batch" in output


def test_limit_preset_takes_few_batches_per_epoch(tmp_path, tiny_data):
    data = f"--data.data_dir={tiny_data}"
    run_presets("fit", [DEBUG / "limit.yaml"], data, *SMALL_DATA, cwd=tmp_path)
    last = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["global_step"] == 2 * 10, "2 epochs of 10 batches"
