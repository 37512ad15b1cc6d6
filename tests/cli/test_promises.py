"""What the README promises, checked the way a user would see it: TensorBoard's HPARAMS tab, the debug
presets' batch counts, a resumed epoch's metrics, evaluations kept with their run, and a quiet terminal."""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

from mnist_lightning.data.datamodule import MNISTDataModule
from mnist_lightning.models.classifier import MNISTClassifier

from helpers.commands import CONFIG, QUICK, REPO
from helpers.inprocess import run_main

DEBUG = REPO / "configs" / "debug"


def events_of(run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return events


def fit_in(cwd: Path, data: Path, *extra: object) -> str:
    status, stdout, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={data}", *QUICK, *extra, cwd=cwd
    )
    assert status == 0, stderr[-3000:]
    return stdout


def evaluate(cwd: Path, subcommand: str, data: Path, checkpoint: object, *extra: object) -> str:
    status, stdout, stderr = run_main(
        subcommand, "--config", CONFIG, f"--data.data_dir={data}", "--ckpt_path", checkpoint, *extra, cwd=cwd
    )
    assert status == 0, stderr[-3000:]
    return stdout


# ---- TensorBoard's HPARAMS tab --------------------------------------------------------------------------


def test_hparams_tab_lists_each_run_with_val_acc_best_and_test_acc(tmp_path, tiny_data):
    from tensorboard.plugins.hparams import plugin_data_pb2

    fit_in(tmp_path, tiny_data)
    fit_in(tmp_path, tiny_data, "--model.optimizer.init_args.lr=0.002", "--data.batch_size=16")
    evaluate(tmp_path, "test", tiny_data, tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt")
    for version, lr, batch in (("version_0", 0.001, 32), ("version_1", 0.002, 16)):
        events = events_of(tmp_path / "lightning_logs" / version)
        content = events.PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hparams = {key: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
                   for key, value in start.session_start_info.hparams.items()}  # fmt: skip
        assert hparams["optimizer"] == "Adam" and hparams["optimizer.lr"] == pytest.approx(lr)
        assert hparams["net"] == "MLP" and hparams["net.hidden_sizes"] == "[128, 64]"
        assert hparams["data.batch_size"] == batch and hparams["data.dataset"] == "MNIST"
        assert hparams["seed"] == 42
        experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
        assert [info.name.tag for info in experiment.metric_infos] == ["val_acc_best", "test_acc"]
        assert events.Scalars("val_acc_best")  # the values the tab shows
    # the test of version_0's last checkpoint: a session of its own, beside the fit's, with its test_acc
    evaluation = events_of(tmp_path / "lightning_logs" / "version_0" / "test" / "last")
    content = evaluation.PluginTagToContent("hparams")
    assert "_hparams_/experiment" not in content  # the fit's list of columns stays the tab's
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hparams = start.session_start_info.hparams
    assert hparams["optimizer.lr"].number_value == pytest.approx(0.001) and "seed" not in hparams
    assert [event.step for event in evaluation.Scalars("test_acc")] == [4]


# ---- the presets do what the README says --------------------------------------------------------------


class BatchCounter(L.Callback):
    """Counts the batches and images of each loop in the last epoch (validation: not the sanity check)."""

    seen: dict = {}

    def on_train_epoch_start(self, trainer, pl_module):
        BatchCounter.seen.update(train=[], epochs=trainer.current_epoch + 1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        BatchCounter.seen["train"].append(len(batch[1]))

    def on_validation_epoch_start(self, trainer, pl_module):
        if not trainer.sanity_checking:
            BatchCounter.seen["val"] = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            BatchCounter.seen["val"].append(len(batch[1]))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        BatchCounter.seen.setdefault("test", []).append(len(batch[1]))


def batches(cwd: Path, subcommand: str, data: Path, preset: str, *extra: object) -> dict:
    BatchCounter.seen = {}
    counter = "--trainer.callbacks+=test_promises.BatchCounter"
    args = (subcommand, "--config", CONFIG, "--config", DEBUG / preset, f"--data.data_dir={data}", counter)
    status, _, stderr = run_main(*args, "--data.batch_size=32", "--data.val_size=64", *extra, cwd=cwd)
    assert status == 0, stderr[-3000:]
    return BatchCounter.seen


def test_limit_preset_takes_10_training_batches_and_one_evaluation_batch(
    tmp_path, tiny_data, tiny_checkpoint
):
    # README: 2 epochs of 10 training batches, 1000 val and 1000 test images (one evaluation batch of 1000)
    seen = batches(tmp_path, "fit", tiny_data, "limit.yaml", "--data.eval_batch_size=16")
    assert seen["epochs"] == 2 and seen["train"] == [32] * 10 and seen["val"] == [16]
    seen = batches(
        tmp_path, "test", tiny_data, "limit.yaml", "--data.eval_batch_size=16", "--ckpt_path", tiny_checkpoint
    )
    assert seen["test"] == [16]


def test_fast_dev_run_preset_runs_one_batch_of_each_and_writes_no_files(tmp_path, tiny_data, tiny_checkpoint):
    seen = batches(tmp_path, "fit", tiny_data, "fast_dev_run.yaml", "--data.eval_batch_size=16")
    assert seen["train"] == [32] and seen["val"] == [16] and "test" not in seen
    evaluation = ("fast_dev_run.yaml", "--data.eval_batch_size=16", "--ckpt_path", tiny_checkpoint)
    seen = batches(tmp_path, "test", tiny_data, *evaluation)
    assert seen["test"] == [16]
    batches(tmp_path, "predict", tiny_data, *evaluation)
    assert not list(tmp_path.iterdir())  # no summary.json, metrics, report or predictions in the folder


def test_overfit_preset_trains_the_same_2_batches_for_30_epochs(tmp_path, tiny_data):
    seen = batches(
        tmp_path,
        "fit",
        tiny_data,
        "overfit.yaml",
        "--data.eval_batch_size=16",
        "--trainer.enable_progress_bar=false",
    )
    assert seen["epochs"] == 30 and seen["train"] == [32, 32] and seen["val"] == [16, 16]


# ---- a resumed epoch logs the metrics of an uninterrupted one ----------------------------------------


class StopAtStep20(L.Callback):
    """Sends this process SIGTERM after training step 20 (mid-epoch 2 of 14-step epochs)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 20:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_run_resumed_mid_epoch_logs_the_training_metrics_of_an_uninterrupted_one(tmp_path, tiny_data):
    args = ("--trainer.max_epochs=2", "--trainer.limit_train_batches=1.0")
    (tmp_path / "whole").mkdir()
    (tmp_path / "resumed").mkdir()
    fit_in(tmp_path / "whole", tiny_data, *args)
    status, _, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK, *args,
        "--trainer.callbacks+=test_promises.StopAtStep20", cwd=tmp_path / "resumed",
    )  # fmt: skip
    assert status == 128 + signal.SIGTERM, stderr[-3000:]
    fit_in(tmp_path / "resumed", tiny_data, *args, "--ckpt_path", "last")
    whole, resumed = (
        events_of(tmp_path / run / "lightning_logs" / "version_0") for run in ("whole", "resumed")
    )
    # by step, as TensorBoard plots them: the resumed run's two event files were written by one process within
    # a second, so their names (time, pid, a counter compared as text) may list them in either order
    for tag in ("train_loss", "train_acc"):
        expected = sorted((event.step, event.value) for event in whole.Scalars(tag))
        assert sorted((event.step, event.value) for event in resumed.Scalars(tag)) == expected, tag


def test_a_run_resumed_mid_epoch_shows_that_epochs_progress_bar_from_where_it_stopped(tmp_path, tiny_data):
    args = (*QUICK, "--trainer.max_epochs=2", "--trainer.limit_train_batches=1.0")
    status, _, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *args,
        "--trainer.callbacks+=test_promises.StopAtStep20", cwd=tmp_path,
    )  # fmt: skip
    assert status == 128 + signal.SIGTERM, stderr[-3000:]
    stdout = fit_in(tmp_path, tiny_data, *args, "--trainer.enable_progress_bar=true", "--ckpt_path", "last")
    epoch_1 = [line for line in re.split(r"[\r\n]", stdout) if line.startswith("Epoch 1:")]
    assert epoch_1, stdout[-3000:]
    assert any("| 6/14 [" in line for line in epoch_1), epoch_1  # step 20 of 14-step epochs: 6 done
    assert "| 14/14 [" in epoch_1[-1], epoch_1


# ---- evaluations are kept with their run ---------------------------------------------------------------


def test_evaluating_a_runs_checkpoint_writes_into_that_run(tmp_path, tiny_data):
    fit_in(tmp_path, tiny_data)
    run = tmp_path / "lightning_logs" / "version_0"
    last = run / "checkpoints" / "last.ckpt"
    stdout = evaluate(tmp_path, "test", tiny_data, last)
    assert "Test metrics written to lightning_logs/version_0/test/last/metrics.json" in stdout
    assert "Replacing" not in stdout
    assert (run / "test" / "last" / "confusion_matrix.png").is_file()
    evaluate(tmp_path, "predict", tiny_data, "best")
    assert len(list(run.glob("predict/epoch=0-val_acc=*/test_set/predictions.csv"))) == 1
    stdout = evaluate(tmp_path, "test", tiny_data, last)
    assert "Replacing the earlier test results in lightning_logs/version_0/test/last." in stdout
    assert sorted(path.name for path in run.parent.iterdir()) == ["version_0"], "no new version_N"
    # TensorBoard agrees with the files: one test_acc, the newest, at the step last.ckpt was saved (4
    # batches), in a TensorBoard run of its own beside the training curves, which it leaves alone
    metrics = json.loads((run / "test" / "last" / "metrics.json").read_text())
    [point] = events_of(run / "test" / "last").Scalars("test_acc")
    assert (point.step, point.value) == (4, pytest.approx(metrics["test_acc"]))
    assert "test_acc" not in events_of(run).Tags()["scalars"] and events_of(run).Scalars("train_loss")
    assert "ckpt_path: null" in (run / "config.yaml").read_text(), "the fit's config, re-runnable"
    assert f"ckpt_path: {last}" in (run / "test" / "last" / "config.yaml").read_text()


def test_evaluating_a_checkpoint_of_a_run_deeper_in_the_log_folder_writes_into_that_run(tmp_path, tiny_data):
    fit_in(tmp_path, tiny_data)  # then moved where a sweep keeps its trials
    trial = tmp_path / "lightning_logs" / "sweeps" / "mine" / "trial_3"
    trial.parent.mkdir(parents=True)
    (tmp_path / "lightning_logs" / "version_0").rename(trial)
    stdout = evaluate(tmp_path, "test", tiny_data, trial / "checkpoints" / "last.ckpt")
    assert "Test metrics written to lightning_logs/sweeps/mine/trial_3/test/last/metrics.json" in stdout
    assert (trial / "test" / "last" / "metrics.json").is_file()
    assert sorted(path.name for path in (tmp_path / "lightning_logs").iterdir()) == ["sweeps"], "no version_N"
    assert len(events_of(trial / "test" / "last").Scalars("test_acc")) == 1


def test_a_checkpoint_from_elsewhere_gets_a_new_run_and_without_a_logger_no_file_lands_in_cwd(
    tmp_path, tiny_data, tiny_checkpoint
):
    shutil.copy(tiny_checkpoint, tmp_path / "model.ckpt")
    (tmp_path / "lightning_logs" / "version_0").mkdir(parents=True)  # an earlier run: this one is version_1
    status, _, stderr = run_main(
        "test", "--config", CONFIG, f"--data.data_dir={tiny_data}", "--ckpt_path", "model.ckpt", cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    assert (tmp_path / "lightning_logs" / "version_1" / "test" / "model" / "metrics.json").is_file()
    # its ModelCheckpoint's folder (version_0/checkpoints) is not this run's: Lightning's notice about that
    # concerns resuming a fit, not a test
    assert "dirpath has changed" not in stderr and "Warning" not in stderr, stderr[-3000:]
    before = set(os.listdir(tmp_path))
    stdout = evaluate(
        tmp_path, "test", tiny_data, "model.ckpt", "--trainer.logger=false", "--trainer.default_root_dir=out"
    )
    assert set(os.listdir(tmp_path)) == before | {"out"}
    assert "Test metrics written to out/test/model/metrics.json" in stdout


@pytest.mark.parametrize("subcommand", ["test", "validate", "predict"])
def test_evaluating_without_a_checkpoint_is_an_error(tmp_path, tiny_data, subcommand):
    status, _, stderr = run_main(subcommand, "--config", CONFIG, f"--data.data_dir={tiny_data}", cwd=tmp_path)
    assert status == 2 and "--ckpt_path best|last|<file>" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "lightning_logs").exists()


def test_a_run_that_fails_before_its_first_step_leaves_no_folder(tmp_path, tiny_data):
    fit_in(tmp_path, tiny_data)
    status, _, stderr = run_main("fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", cwd=tmp_path)
    assert status == 2 and "val_size" in stderr  # 5000 of the 512 tiny training images
    assert sorted(path.name for path in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]


def test_help_names_the_command_as_it_is_run(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mnist_lightning", "--help"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.stdout.startswith("usage: python -m mnist_lightning "), result.stdout[:300]
    assert "__main__.py" not in result.stdout


def help_of(cwd: Path, *args: object) -> str:
    status, stdout, stderr = run_main(*args, "--help", cwd=cwd)
    assert status == 0, stderr[-3000:]
    return stdout


def first_paragraph(obj: object) -> str:
    return " ".join(inspect.getdoc(obj).split("\n\n")[0].split()).rstrip(".")


def test_help_describes_each_subcommand_and_group_in_whole_sentences(tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # one line per description
    listed = re.findall(r"^  (fit|validate|test|predict) +(.+)$", help_of(tmp_path), re.M)
    assert len(listed) == 4 and all(help.endswith(".") for _, help in listed), listed
    paragraphs = {first_paragraph(obj) for obj in (L.Trainer.__init__, MNISTClassifier, MNISTDataModule)}
    for subcommand, help in listed:
        text = help_of(tmp_path, subcommand)
        assert text.split("\n\n")[1] == help  # its own --help opens with the same sentence
        for title in re.findall(r"^([A-Z].*):$", text, re.M):  # argparse adds ':', jsonargparse drops '.'
            assert title in paragraphs | {help.rstrip("."), "Linked arguments"}, title


# ---- one paragraph, no traceback ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,fragment",
    [
        (("--data.augment.scale=2",), "data.augment.scale must be in [0, 1), got 2"),
        (("--config", REPO / "configs" / "gpu.yaml"), "Run here with --config configs/cpu.yaml"),
        (("--trainer.accelerator=gpu",), "but this machine has"),
        (("--config", "broken.yaml"), "--config broken.yaml: not valid YAML at line 3"),
        (("--ckpt_path", "a_folder"), "'a_folder' is a folder"),
        (("--ckpt_path", "empty.ckpt"), "'empty.ckpt' is an empty file"),
        (("--trainer.max_epochs=0",), "trainer.max_epochs must be at least 1"),
    ],
)
def test_a_mistake_is_one_paragraph(tmp_path, tiny_data, args, fragment):
    if torch_has_gpu() and "gpu" in str(args):
        pytest.skip("this machine has a GPU")
    (tmp_path / "broken.yaml").write_text("trainer:\n  max_epochs: [1\n")
    (tmp_path / "a_folder").mkdir()
    (tmp_path / "empty.ckpt").touch()
    status, _, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK, *args, cwd=tmp_path
    )
    assert status == 2 and "Traceback" not in stderr, stderr[-3000:]
    message = "".join(line for line in stderr.splitlines(True) if not line.startswith("INFO: "))  # "Seed set"
    assert message.startswith("error: ") and fragment in message, stderr[-3000:]
    assert not (tmp_path / "lightning_logs").exists()


def test_max_epochs_minus_one_says_it_trains_until_stopped(tmp_path, tiny_data):
    status, stdout, _ = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK, "--trainer.max_epochs=-1",
        "--trainer.callbacks+=test_promises.StopAtStep20", cwd=tmp_path,
    )  # fmt: skip
    assert status == 128 + signal.SIGTERM and "training goes on until you stop it" in stdout


def torch_has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()
