"""The command line: one true end-to-end run as a user starts it (a subprocess), the rest in-process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mnist_lightning.cli.main import LIGHTNING_COMMANDS, PROJECT_COMMANDS

from helpers.commands import (
    CONFIG,
    OTHER_COMMANDS,
    QUICK,
    REPO,
    imported,
    run_cli,
    subprocess_env,
    watching_imports,
    without_import_times,
)
from helpers.inprocess import run_main, run_on_checkpoint


def fit_tiny(tmp_path: Path, tiny_data: Path, *extra: str) -> str:
    status, stdout, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK, *extra, cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    return stdout


def best_checkpoint(stdout: str) -> Path:
    match = re.search(r"Best checkpoint: (\S+)", stdout)
    assert match, stdout[-2000:]
    return Path(match.group(1))


USER_CALLBACK = """
import warnings
import lightning as L

class Loud(L.Callback):
    def on_fit_start(self, trainer, pl_module):
        warnings.warn("the user's own warning")
"""
# what Lightning, jsonargparse and TensorBoard would print that does not apply to this project's runs
NOISE = ("litlogger", "LeafSpec", "v_num", "sync_dist", "args parameter", "Traceback")


@pytest.mark.slow  # whole processes
def test_fit_then_test_as_a_user_runs_them(tmp_path, tiny_data):
    """``python -m mnist_lightning fit`` then ``test``, warnings on as in a terminal, with a callback of the
    user's own that warns: checkpoints, config, curves and metrics on disk; the user's warning shown and no
    library notice; none of the other commands' libraries imported."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (tmp_path / "usercallback.py").write_text(USER_CALLBACK)
    env = watching_imports(tmp_path / "stand_ins")
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"
    args = ("--config", CONFIG, f"--data.data_dir={tiny_data}")
    fitted = run_cli(
        "fit", *args, *QUICK, "--trainer.max_epochs=2", "--trainer.callbacks+=usercallback.Loud",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert fitted.returncode == 0, fitted.stderr[-3000:]
    assert not imported(fitted.stderr) & set(OTHER_COMMANDS)
    assert "mnist_lightning.models.classifier" in imported(fitted.stderr)  # (the import listing works)
    run_dir = tmp_path / "lightning_logs" / "version_0"
    best = tmp_path / best_checkpoint(fitted.stdout)
    assert best.is_file() and best.parent == run_dir / "checkpoints"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "config.yaml").is_file()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert {"train_loss", "train_acc", "val_loss", "val_acc", "val_acc_best"} <= set(events.Tags()["scalars"])
    assert len(events.Scalars("val_acc")) == 2 and len(events.Scalars("train_loss")) == 2
    assert "the user's own warning" in fitted.stderr

    tested = run_cli("test", *args, "--ckpt_path", best, cwd=tmp_path, env=env)
    assert tested.returncode == 0, tested.stderr[-3000:]
    assert not imported(tested.stderr) & set(OTHER_COMMANDS)
    metrics = json.loads((run_dir / "test" / best.stem / "metrics.json").read_text())  # kept with its run
    accuracy, loss = metrics_of(best, tiny_data)  # the checkpoint's own numbers on the test images
    assert metrics["test_acc"] == pytest.approx(accuracy, abs=1e-6)
    assert metrics["test_loss"] == pytest.approx(loss, rel=1e-5)
    for run in (fitted, tested):
        output = run.stdout + without_import_times(run.stderr)
        assert not [noise for noise in NOISE if noise in output], output[-3000:]
        assert not cli_warnings_in(run.stderr), output[-3000:]


def cli_warnings_in(stderr: str) -> list[str]:
    """The warnings LightningCLI printed (``.../lightning/pytorch/cli.py:LINE: message``), about how the
    project drives it. (Other libraries' notices are issue 14's quiet output.)"""
    return re.findall(r"^.*/lightning/pytorch/cli\.py:\d+: .*$", without_import_times(stderr), re.M)


def metrics_of(checkpoint: Path, data: Path) -> tuple[float, float]:
    """The checkpoint's accuracy and mean cross-entropy on the test images, computed without Lightning."""
    from mnist_lightning.data.datasets import load_split
    from mnist_lightning.models.classifier import MNISTClassifier

    from helpers.idx import mnist_normalize

    model = MNISTClassifier.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    images, labels = load_split(data, train=False)
    with torch.no_grad():
        logits = model(mnist_normalize(images))
    accuracy = (logits.argmax(dim=1) == labels).sum().item() / len(labels)
    return accuracy, torch.nn.functional.cross_entropy(logits, labels).item()


def test_top_level_help_lists_every_command_without_importing_torch():
    code = (
        "import sys; from mnist_lightning.cli.main import main; main(['--help']); "
        "print('torch' in sys.modules, 'lightning' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "False False"
    for name, (_, description) in PROJECT_COMMANDS.items():
        assert re.search(rf"^  {name} +{re.escape(description)}$", result.stdout, re.M)
    for name in LIGHTNING_COMMANDS:
        assert re.search(rf"^  {name} +\w", result.stdout, re.M)


@pytest.mark.slow  # whole processes
def test_fit_help_imports_neither_the_report_nor_the_other_commands_libraries(tmp_path):
    """Parsing only: not the report's plotting, nor Optuna, onnx or LitServe. (Runs of fit and test are
    watched the same way in test_fit_then_test_as_a_user_runs_them, of predict in test_predict.py.
    matplotlib itself comes with ``import lightning``: torchmetrics imports it.)"""
    result = run_cli("fit", "--help", cwd=tmp_path, env=watching_imports(tmp_path / "stand_ins"))
    assert result.returncode == 0, result.stderr[-3000:]
    modules = imported(result.stderr)
    assert "mnist_lightning.cli.lightning_cli" in modules
    assert not modules & {*OTHER_COMMANDS, "mnist_lightning.callbacks.report_drawing"}


def test_checkpointing_off_on_the_command_line_trains_and_saves_no_checkpoint(tmp_path, tiny_data):
    stdout = fit_tiny(tmp_path, tiny_data, "--trainer.enable_checkpointing=false")
    assert "checkpoint callbacks are left out" in stdout
    run_dir = tmp_path / "lightning_logs" / "version_0"
    assert list(run_dir.glob("events.out.tfevents.*"))
    assert not list(tmp_path.rglob("*.ckpt"))


def test_evaluation_batch_size_does_not_change_test_metrics(tmp_path, tiny_data, tiny_checkpoint):
    metrics = []
    for eval_batch_size in (7, 1000):
        status, stdout, stderr = run_on_checkpoint(
            "test",
            tiny_checkpoint,
            f"--data.data_dir={tiny_data}",
            f"--data.eval_batch_size={eval_batch_size}",
            cwd=tmp_path,
        )
        assert status == 0, stderr[-3000:]
        path = re.search(r"Test metrics written to (\S+)", stdout).group(1)
        metrics.append(json.loads((tmp_path / path).read_text()))
    assert metrics[0]["test_acc"] == metrics[1]["test_acc"]
    assert metrics[0]["test_loss"] == pytest.approx(metrics[1]["test_loss"], rel=1e-6)


def test_print_config_is_valid_yaml_and_saved_config_reruns(tmp_path, tiny_data):
    status, printed, stderr = run_main("fit", "--config", CONFIG, "--print_config", cwd=tmp_path)
    assert status == 0, stderr
    config = yaml.safe_load(printed)
    assert config["model"]["net"]["class_path"] == "mnist_lightning.models.nets.MLP"
    assert config["model"]["net"]["init_args"]["hidden_sizes"] == [128, 64]
    assert config["model"]["optimizer"]["init_args"]["lr"] == 0.001
    assert config["data"]["batch_size"] == 64

    fit_tiny(tmp_path, tiny_data)
    saved = tmp_path / "lightning_logs" / "version_0" / "config.yaml"
    status, _, stderr = run_main("fit", "--config", saved, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    rerun = torch.load(tmp_path / "lightning_logs/version_1/checkpoints/last.ckpt", weights_only=True)
    assert rerun["global_step"] == 4  # the saved config's limit_train_batches=4 and max_epochs=1


def test_validate_evaluates_a_checkpoint_on_the_validation_split(tmp_path, tiny_data, tiny_checkpoint):
    status, stdout, stderr = run_on_checkpoint(
        "validate", tiny_checkpoint, f"--data.data_dir={tiny_data}", *QUICK[3:], cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    # the checkpoint was chosen on the same 64 validation images: its file name carries their accuracy
    expected = float(re.search(r"val_acc=([0-9.]+)\.ckpt", tiny_checkpoint.name).group(1))
    reported = float(re.search(r"val_acc\s+│?\s*([0-9.]+)", stdout).group(1))
    assert reported == pytest.approx(expected, abs=1e-4)
    assert not list(tmp_path.rglob("metrics.json")) and not list(tmp_path.rglob("*.ckpt"))


def test_validate_and_predict_with_ckpt_path_best_use_the_newest_runs_best_checkpoint(tmp_path, tiny_data):
    stdout = fit_tiny(tmp_path, tiny_data, "--trainer.max_epochs=2")
    best = best_checkpoint(stdout)
    args = ("--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK[3:], "--ckpt_path", "best")
    run = tmp_path / "lightning_logs" / "version_0"  # evaluations are kept with the run they evaluate
    for subcommand in ("validate", "predict"):
        status, _, stderr = run_main(subcommand, *args, cwd=tmp_path)
        assert status == 0, stderr[-3000:]
        folder = run / subcommand / Path(best).stem / ("test_set" if subcommand == "predict" else "")
        assert yaml.safe_load((folder / "config.yaml").read_text())["ckpt_path"] == str(best)
    assert (run / "predict" / Path(best).stem / "test_set" / "predictions.csv").is_file()


def test_test_with_ckpt_path_best_reads_the_chosen_checkpoint_once_before_the_trainer(
    tmp_path, tiny_data, monkeypatch
):
    """``test --ckpt_path best`` loads the best checkpoint once to check it and take its settings, and the
    Trainer once to restore it: no third read of the whole file for LightningCLI's hyperparameter merge."""
    best = (tmp_path / best_checkpoint(fit_tiny(tmp_path, tiny_data, "--trainer.max_epochs=2"))).resolve()
    loaded, torch_load = [], torch.load

    def counting_load(source, *args, **kwargs):
        name = source if isinstance(source, (str, os.PathLike)) else getattr(source, "path", source.name)
        loaded.append(Path(name).resolve())
        return torch_load(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counting_load)
    args = ("--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK[3:], "--ckpt_path", "best")
    status, _, stderr = run_main("test", *args, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    assert loaded.count(best) == 2, loaded


def test_fast_config_trains_with_a_one_cycle_rate_stepped_per_batch(tmp_path, tiny_data):
    fast = REPO / "configs" / "fast.yaml"
    fit_tiny(tmp_path, tiny_data, "--config", fast, *QUICK, "--trainer.max_epochs=2")
    last = torch.load(tmp_path / "lightning_logs/version_0/checkpoints/last.ckpt", weights_only=True)
    [scheduler] = last["lr_schedulers"]
    assert scheduler["total_steps"] == 2 * 4  # spans the whole run: 2 epochs of 4 batches
    assert scheduler["last_epoch"] == 8  # stepped after every batch, not once per epoch
    [group] = last["optimizer_states"][0]["param_groups"]
    assert group["max_lr"] == 0.008
    config = yaml.safe_load((tmp_path / "lightning_logs/version_0/config.yaml").read_text())
    assert config["trainer"]["num_sanity_val_steps"] == 0


def test_one_epoch_on_real_mnist_reaches_90_percent(tmp_path, real_data):
    status, stdout, stderr = run_main(
        "fit",
        "--config",
        CONFIG,
        f"--data.data_dir={real_data}",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )
    assert status == 0, stderr[-3000:]
    val_acc = float(re.search(r"val_acc=([0-9.]+)\.ckpt", best_checkpoint(stdout).name).group(1))
    assert val_acc > 0.9
