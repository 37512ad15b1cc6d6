"""``python -m mnist_lightning lr_find``: Lightning's learning-rate range test on a configured recipe, with
the optimizer the config builds, its plot in a folder of its own and a suggestion to pass on."""

from __future__ import annotations

import csv
import math
import re

import pytest
import torch
from matplotlib.figure import Figure

from mnist_lightning.models.classifier import MNISTClassifier

from helpers.commands import CONFIG, REPO, run_cli
from helpers.inprocess import run_main

CNN = REPO / "configs" / "cnn.yaml"
TINY = ("--data.val_size=64", "--data.batch_size=16", "--num_training=30")


@pytest.mark.parametrize(
    ("presets", "optimizer", "scheduler"),
    [([], torch.optim.Adam, None), (["--config", CNN], torch.optim.AdamW, "OneCycleLR")],
    ids=["default", "cnn"],
)
def test_lr_find_suggests_a_rate_for_the_configured_optimizer(
    tmp_path, tiny_data, monkeypatch, presets, optimizer, scheduler
):
    built = []

    def configure_optimizers(model):
        built.append(configured(model))
        return built[-1]

    configured = MNISTClassifier.configure_optimizers
    monkeypatch.setattr(MNISTClassifier, "configure_optimizers", configure_optimizers)
    figures, save = [], Figure.savefig
    monkeypatch.setattr(
        Figure, "savefig", lambda figure, *a, **k: (figures.append(figure), save(figure, *a, **k))
    )
    status, stdout, stderr = run_main(
        "lr_find", "--config", CONFIG, *presets, f"--data.data_dir={tiny_data}", *TINY, cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    [searched] = built  # the optimizer alone: a configured scheduler is left out
    assert type(searched) is optimizer
    assert searched.defaults["weight_decay"] == (0.01 if scheduler else 0)  # cnn.yaml's AdamW argument
    assert f"{optimizer.__name__} as configured, " in stdout
    assert ("the scheduler OneCycleLR was left out during the search" in stdout) == bool(scheduler)
    assert "weights_only" not in stderr  # Lightning's notice about the finder's own checkpoint: left out

    folder = tmp_path / "lightning_logs" / "lr_find" / "version_0"
    assert sorted(path.name for path in folder.iterdir()) == ["lr_find.csv", "lr_find.png"]  # no checkpoint
    assert [path.name for path in (tmp_path / "lightning_logs").iterdir()] == ["lr_find"]  # no run folder
    assert [path.name for path in folder.parent.iterdir()] == ["version_0"]  # the initial weights removed
    assert (folder / "lr_find.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((folder / "lr_find.csv").open()))
    points = [(float(row["lr"]), float(row["smoothed_loss"])) for row in rows]
    rates = [lr for lr, _ in points]
    assert 10 < len(points) <= 30 and rates[0] == pytest.approx(1e-6) and rates == sorted(rates)
    # an untrained network's loss is about ln(10) = 2.30, and the smoothed curve starts where the loss does
    assert float(rows[0]["loss"]) == pytest.approx(math.log(10), abs=0.3)
    assert points[0][1] == pytest.approx(float(rows[0]["loss"]))

    rate = re.search(r"Suggested learning rate: (\S+) ", stdout).group(1)
    assert any(f"{lr:.2g}" == rate for lr in rates[10:])
    if scheduler:  # one cycle peaks at a tenth of the rate of the lowest loss (past the first 10 steps)
        peak = f"{min(points[10:], key=lambda point: point[1])[0] / 10:.2g}"
        assert f"OneCycleLR's peak (max_lr): {peak}, " in stdout
        options = f"--model.optimizer.init_args.lr {peak} --model.scheduler.init_args.max_lr {peak}"
    else:
        options = f"--model.optimizer.init_args.lr {rate}"
    assert f"Train with it: {options}\n" in stdout
    [figure] = figures  # the plot marks the rate the printed options train with
    [marked] = [line for line in figure.axes[0].get_lines() if line.get_label().startswith("train with")]
    trained_with = re.search(r"init_args.lr (\S+)", options).group(1)
    assert f"{marked.get_xdata()[0]:.2g}" == trained_with and trained_with in marked.get_label()

    status, stdout, _ = run_main("runs", "lightning_logs", cwd=tmp_path)
    assert status == 0 and stdout == ""  # the search is not a run


def test_lr_find_refuses_bad_ranges_before_building_anything(tmp_path):
    for options, message in (
        (("--min_lr", "0.1", "--max_lr", "0.01"), "--min_lr and --max_lr must be 0 < min < max"),
        (("--ckpt_path", "last"), "lr_find starts from the recipe's initial weights"),
    ):
        status, _, stderr = run_main("lr_find", "--config", CONFIG, *options, cwd=tmp_path)
        assert status == 2 and f"error: {message}" in stderr and "Traceback" not in stderr


@pytest.mark.slow  # DDP starts its second process by running the command again
def test_lr_find_under_ddp_searches_once_and_writes_one_folder(tmp_path, tiny_data):
    ddp = ("--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp")
    result = run_cli("lr_find", "--config", CONFIG, f"--data.data_dir={tiny_data}", *TINY, *ddp, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Suggested learning rate: ") == 1  # printed by rank 0 alone
    folders = list((tmp_path / "lightning_logs" / "lr_find").iterdir())
    assert [path.name for path in folders] == ["version_0"]
    assert sorted(path.name for path in folders[0].iterdir()) == ["lr_find.csv", "lr_find.png"]
