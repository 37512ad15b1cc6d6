"""Checkpoints and configs written before the package was laid out in layers still work: they name their
network ``mnist_lightning.nets.MLP``, a module that has moved (``mnist_lightning.legacy``)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from helpers.commands import CONFIG, QUICK
from helpers.inprocess import run_main, run_on_checkpoint

OLD_PATHS = {"mnist_lightning.models.nets.MLP": "mnist_lightning.nets.MLP"}
REPLACED_NOTICE = "it is used instead of the"


def with_old_class_paths(value):
    if isinstance(value, dict):
        return {key: with_old_class_paths(item) for key, item in value.items()}
    if isinstance(value, list):
        return [with_old_class_paths(item) for item in value]
    return OLD_PATHS.get(value, value) if isinstance(value, str) else value


@pytest.fixture(scope="module")
def old_run(tmp_path_factory, tiny_checkpoint) -> Path:
    """A copy of tiny_checkpoint's run whose checkpoint and config.yaml name the flat layout's modules."""
    run = tmp_path_factory.mktemp("old") / "lightning_logs" / "version_0"
    shutil.copytree(tiny_checkpoint.parent.parent, run)
    for path in (run / "checkpoints").glob("*.ckpt"):
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        checkpoint["hyper_parameters"] = with_old_class_paths(dict(checkpoint["hyper_parameters"]))
        torch.save(checkpoint, path)
    config = (run / "config.yaml").read_text()
    for new, old in OLD_PATHS.items():
        config = config.replace(new, old)
    (run / "config.yaml").write_text(config)
    saved = torch.load(next((run / "checkpoints").glob("epoch=*.ckpt")), weights_only=True)
    assert saved["hyper_parameters"]["net"]["class_path"] == "mnist_lightning.nets.MLP"
    assert "mnist_lightning.nets.MLP" in config
    return run


def old_checkpoint(run: Path) -> Path:
    return next((run / "checkpoints").glob("epoch=*.ckpt"))


@pytest.mark.parametrize("subcommand", ["test", "validate", "predict"])
def test_an_old_checkpoint_evaluates_without_a_notice_about_its_network(old_run, tiny_data, subcommand):
    status, stdout, stderr = run_on_checkpoint(
        subcommand,
        old_checkpoint(old_run),
        f"--data.data_dir={tiny_data}",
        "--data.val_size=64",
        cwd=old_run.parent.parent,
    )
    assert status == 0, stderr[-3000:]
    assert REPLACED_NOTICE not in stdout + stderr


def test_an_old_checkpoint_resumes_training(tmp_path, old_run, tiny_data):
    last = old_run / "checkpoints" / "last.ckpt"
    status, stdout, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK, "--trainer.max_epochs=2",
        f"--ckpt_path={last}", cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    assert re.search(r"Best checkpoint: \S+epoch=1", stdout)


def test_an_old_runs_config_reruns(tmp_path, old_run, tiny_data):
    status, stdout, stderr = run_main(
        "fit", "--config", old_run / "config.yaml", f"--data.data_dir={tiny_data}", *QUICK, cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    saved = (tmp_path / "lightning_logs" / "version_0" / "config.yaml").read_text()
    assert "mnist_lightning.models.nets.MLP" in saved  # saved under the class's path of today


def test_an_old_checkpoint_exports_and_serves(tmp_path, old_run, tiny_data, capsys):
    from mnist_lightning.cli.main import main
    from mnist_lightning.tools.export import load_probability_model

    main(["export", "--ckpt_path", str(old_checkpoint(old_run)), "--output", str(tmp_path / "m.onnx"),
          "--data_dir", str(tiny_data)])  # fmt: skip
    assert "Check passed" in capsys.readouterr().out
    model, spec = load_probability_model(str(old_checkpoint(old_run)))  # what serve --ckpt_path loads
    probabilities = model(torch.zeros(2, 1, 28, 28))
    assert spec.name == "MNIST" and probabilities.shape == (2, 10)
    assert json.loads(json.dumps(spec.classes)) == [str(digit) for digit in range(10)]
