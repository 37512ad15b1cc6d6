"""``runs --plot METRIC``: curves of the listed runs read from the event files (or metrics.csv) that the test
writes, drawn one line per run or per configuration; what is drawn is what was written."""

from __future__ import annotations

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from helpers.inprocess import run_main

STEPS_PER_EPOCH = 8
# val_acc per epoch and the learning rate every 4 steps of each run (values a float32 holds exactly)
VAL_ACC = {
    "a": [0.5, 0.75, 0.875], "b": [0.625, 0.6875, 0.9375], "c": [0.25, 0.5, 0.5625], "d": [0.375, 0.5, 0.625],
}  # fmt: skip
LR = {name: [(step, (step + 1) / 1024) for step in range(0, 3 * STEPS_PER_EPOCH, 4)] for name in VAL_ACC}
SETTINGS = {"a": (0.001, 1), "b": (0.001, 2), "c": (0.01, 1), "d": (0.01, 2)}  # lr, seed


def write_run(folder: Path, name: str, csv_logger: bool = False) -> None:
    run = folder / name
    run.mkdir(parents=True)
    lr, seed = SETTINGS[name]
    config = {
        "seed_everything": seed,
        "model": {"optimizer": {"class_path": "torch.optim.Adam", "init_args": {"lr": lr}}},
        "data": {"batch_size": 64, "seed": seed},
    }
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    git = {"commit": "3fa2c1d" + "0" * 33, "dirty": False}  # the same code for every run
    (run / "provenance.json").write_text(json.dumps({"sessions": [{"git": git}]}))
    ends = [(epoch + 1) * STEPS_PER_EPOCH - 1 for epoch in range(3)]
    if csv_logger:  # as Lightning's CSVLogger writes it: one row per log call, blanks for the other metrics
        with (run / "metrics.csv").open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["epoch", "lr-Adam", "step", "val_acc"])
            writer.writerows(["", value, step, ""] for step, value in LR[name])
            writer.writerows([epoch, "", ends[epoch], value] for epoch, value in enumerate(VAL_ACC[name]))
        return
    writer = SummaryWriter(str(run))  # as Lightning's TensorBoardLogger writes
    for step, value in LR[name]:
        writer.add_scalar("lr-Adam", value, step)
    for epoch, value in enumerate(VAL_ACC[name]):
        writer.add_scalar("val_acc", value + (0.5 if name == "a" and epoch == 2 else 0), ends[epoch])
        writer.add_scalar("epoch", epoch, ends[epoch])
    writer.close()
    if name == "a":  # resumed at its last epoch: logged again (a new file), the later value counts
        writer = SummaryWriter(str(run))
        writer.add_scalar("val_acc", VAL_ACC[name][2], ends[2])
        writer.add_scalar("epoch", 2, ends[2])
        writer.close()


@pytest.fixture
def logs(tmp_path) -> Path:
    for name in "abc":
        write_run(tmp_path / "logs", name)
    write_run(tmp_path / "logs", "d", csv_logger=True)
    return tmp_path / "logs"


@pytest.fixture
def drawn(monkeypatch) -> list[Figure]:
    """The figures that ``runs --plot`` saves."""
    figures, save = [], Figure.savefig

    def keep(figure, *args, **kwargs):
        figures.append(figure)
        return save(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    return figures


def test_one_line_per_run_with_the_values_written(logs, tmp_path, drawn):
    output = tmp_path / "out" / "curves.png"
    status, stdout, stderr = run_main(
        "runs", logs, "--plot", "val_acc", "--plot", "lr-Adam", "--output", output, "--sort", "run",
        cwd=tmp_path,
    )  # fmt: skip
    assert status == 0, stderr
    assert f"Wrote {output}: val_acc, lr-Adam of 4 runs." in stdout
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [figure] = drawn
    accuracy, rate = figure.axes[:2]
    labels = [line.get_label() for line in accuracy.get_lines()]
    assert labels == [  # the settings that differ between the lines; not the commit, the same for all
        f"{name} optimizer.lr={lr:g} data.seed={seed} seed={seed}" for name, (lr, seed) in SETTINGS.items()
    ]
    for line, name in zip(accuracy.get_lines(), SETTINGS, strict=True):  # epochs from 0, as Lightning's
        assert list(line.get_xdata()) == [0, 1, 2] and list(line.get_ydata()) == VAL_ACC[name]
    for line, name in zip(rate.get_lines(), SETTINGS, strict=True):
        assert list(zip(line.get_xdata(), line.get_ydata(), strict=True)) == LR[name]
    assert (accuracy.get_xlabel(), rate.get_xlabel()) == ("epoch", "step")
    assert [text.get_text() for text in figure.legends[0].get_texts()] == labels
    # the legend under the plots, not beside them: the curves keep the picture's width
    canvas = figure.canvas
    canvas.draw()
    legend = figure.legends[0].get_window_extent()
    assert legend.y1 <= min(ax.get_window_extent().y0 for ax in figure.axes) + 1
    assert figure.axes[0].get_window_extent().width >= 0.8 * figure.bbox.width


def test_group_draws_each_configuration_with_its_mean_and_band(logs, tmp_path, drawn):
    status, stdout, stderr = run_main(
        "runs", logs, "--plot", "val_acc", "--group", "--sort", "lr", cwd=tmp_path
    )
    assert status == 0, stderr
    assert (logs / "runs_val_acc.png").is_file() and not (tmp_path / "runs_val_acc.png").exists()
    assert "of 2 configuration(s) of 4 runs" in stdout
    [figure] = drawn
    axes = figure.axes[0]
    assert [line.get_label() for line in axes.get_lines()] == [
        "optimizer.lr=0.001 (n=2)",
        "optimizer.lr=0.01 (n=2)",
    ]
    for line, band, members in zip(axes.get_lines(), axes.collections, ("ab", "cd"), strict=True):
        values = [[VAL_ACC[name][epoch] for name in members] for epoch in range(3)]
        assert list(line.get_ydata()) == [statistics.fmean(epoch) for epoch in values]
        corners = band.get_paths()[0].vertices
        assert corners[:, 1].min() == min(map(min, values)) and corners[:, 1].max() == max(map(max, values))


def test_a_metric_no_run_logged_is_one_clear_error(logs, tmp_path):
    status, _, stderr = run_main("runs", logs, "--plot", "val_accuracy", cwd=tmp_path)
    assert status == 2 and "Traceback" not in stderr
    assert (
        "error: --plot val_accuracy: no such metric in the 4 runs listed; they logged: lr-Adam, val_acc"
        in stderr
    )
    status, _, stderr = run_main("runs", logs, "--output", "x.png", cwd=tmp_path)
    assert status == 2 and "error: --output names the image of --plot METRIC" in stderr
    assert not (tmp_path / "x.png").exists()


def test_a_run_without_the_metric_is_named_and_the_others_drawn(logs, tmp_path, drawn):
    (logs / "e").mkdir()
    (logs / "e" / "config.yaml").write_text((logs / "a" / "config.yaml").read_text())
    status, stdout, stderr = run_main("runs", logs, "--plot", "val_acc", cwd=tmp_path)
    assert status == 0, stderr
    assert "Note: 1 of the runs have no val_acc: e" in stderr
    assert len(drawn[0].axes[0].get_lines()) == 4


def test_the_table_imports_neither_plotting_nor_tensorboard(logs):
    check = (
        "import sys; from mnist_lightning.cli.main import main; main(['runs', sys.argv[1]]); "
        "loaded = {'matplotlib', 'tensorboard', 'torch'} & set(sys.modules); assert not loaded, loaded"
    )
    result = subprocess.run(
        [sys.executable, "-c", check, str(logs)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
