"""The device presets in configs/: each composes with the default config by repeating --config."""

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
