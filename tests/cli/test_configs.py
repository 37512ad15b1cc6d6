"""The default recipe every command starts from, and the device presets in configs/ on top of it."""

from __future__ import annotations

import pytest
import yaml

from helpers.commands import CONFIG
from helpers.inprocess import run_main


@pytest.mark.parametrize(
    "preset,trainer",
    [
        ("cpu.yaml", {"accelerator": "cpu", "devices": 1}),
        ("gpu.yaml", {"accelerator": "gpu", "devices": 1}),
        ("ddp.yaml", {"accelerator": "gpu", "devices": -1, "strategy": "ddp"}),
        ("multinode.yaml", {"accelerator": "gpu", "devices": 4, "num_nodes": 2, "strategy": "ddp"}),
    ],
)
def test_preset_overrides_the_devices_and_keeps_the_recipe(tmp_path, preset, trainer):
    args = ("fit", "--config", CONFIG, "--config", CONFIG.parent / preset, "--print_config")
    status, stdout, stderr = run_main(*args, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    config = yaml.safe_load(stdout)
    assert {key: config["trainer"][key] for key in trainer} == trainer
    assert (
        config["model"]["net"]["init_args"]["hidden_sizes"] == [128, 64]
        and config["data"]["batch_size"] == 64
    )
    assert config["model"]["optimizer"]["init_args"]["lr"] == 0.001
    assert config["trainer"]["use_distributed_sampler"] is False  # the data module shards exactly itself


def test_every_command_starts_from_the_default_recipe_shipped_with_the_package(tmp_path):
    status, stdout, stderr = run_main("fit", "--print_config", cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    config = yaml.safe_load(stdout)
    assert config["trainer"]["logger"]["class_path"] == "lightning.pytorch.loggers.TensorBoardLogger"
    callbacks = [callback["class_path"] for callback in config["trainer"]["callbacks"]]
    assert "mnist_lightning.callbacks.TestReport" in callbacks and len(callbacks) == 10
    assert {"mnist_lightning.callbacks.Provenance", "mnist_lightning.callbacks.TrackerRuns"} <= set(callbacks)
    assert config["trainer"]["max_epochs"] == 20 and config["seed_everything"] == 42
    assert CONFIG.resolve() == CONFIG.parent.parent / "mnist_lightning" / "configs" / "default.yaml", (
        "configs/default.yaml is a link to the packaged recipe, for users to read and to pass as --config"
    )
    assert config["data"]["batch_size"] == 64, "the data module's default"


def test_a_checkpoint_is_tested_without_a_config_quietly(tmp_path, tiny_data, tiny_checkpoint):
    status, stdout, stderr = run_main(
        "test", "--ckpt_path", tiny_checkpoint, f"--data.data_dir={tiny_data}", cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    [run] = (tmp_path / "lightning_logs").iterdir()
    evaluation = run / "test" / tiny_checkpoint.stem
    assert (evaluation / "metrics.json").is_file() and (evaluation / "confusion_matrix.png").is_file()
    noise = ("No seed found", "litmodels", "callbacks used to create the checkpoint", "is used instead of")
    assert not [line for line in (stdout + stderr).splitlines() if any(text in line for text in noise)]
