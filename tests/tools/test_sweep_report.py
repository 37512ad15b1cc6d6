"""The sweep's plots: every parameter by a whole, distinct name, and no label drawn over another."""

from __future__ import annotations

import itertools
import json

import matplotlib
import numpy as np
import optuna
import pytest
from matplotlib.figure import Figure
from optuna.distributions import CategoricalDistribution, FloatDistribution

from mnist_lightning.tools.sweep.plots import short_names
from mnist_lightning.tools.sweep.report import write_plots

matplotlib.use("Agg")
SPACE = {
    "model.optimizer.init_args.lr": FloatDistribution(1e-4, 1e-2, log=True),
    "data.batch_size": CategoricalDistribution([16, 32]),
    "model.net.init_args.hidden_sizes": CategoricalDistribution([json.dumps([32]), json.dumps([48, 16])]),
    "model.net.init_args.dropout": FloatDistribution(0.0, 0.5),
    "model.optimizer.init_args.weight_decay": FloatDistribution(1e-5, 1e-3, log=True),
    "model.scheduler.init_args.weight_decay": FloatDistribution(2.2e-5, 7e-5, log=True),  # half a decade
}


def test_short_names_are_the_shortest_endings_no_other_parameter_shares():
    assert short_names(
        [*SPACE, "model.scheduler.init_args.weight_decay", "model.scheduler.init_args.lr"]
    ) == {
        "model.optimizer.init_args.lr": "optimizer.lr",
        "data.batch_size": "batch_size",
        "model.net.init_args.hidden_sizes": "hidden_sizes",
        "model.net.init_args.dropout": "dropout",
        "model.optimizer.init_args.weight_decay": "optimizer.weight_decay",
        "model.scheduler.init_args.weight_decay": "scheduler.weight_decay",
        "model.scheduler.init_args.lr": "scheduler.lr",
    }


def texts(figure: Figure) -> list:
    """The labels a drawn figure shows: titles, axis labels, and the tick labels within each axis's limits."""
    found = []
    for ax in figure.axes:
        found += [ax.title, ax.xaxis.label, ax.yaxis.label]
        for axis, limits, coordinate in ((ax.xaxis, ax.get_xlim(), 0), (ax.yaxis, ax.get_ylim(), 1)):
            low, high = sorted(limits)
            shown = [
                label for label in axis.get_ticklabels() if low <= label.get_position()[coordinate] <= high
            ]
            found += shown if axis.get_visible() else []
    return [text for text in found if text.get_visible() and text.get_text().strip()]


@pytest.fixture
def drawn(tmp_path, monkeypatch) -> dict[str, Figure]:
    """The figures write_plots saves, by file name, for a study of 12 trials over SPACE (one failed)."""
    rng = np.random.default_rng(0)
    study = optuna.create_study(direction="maximize")
    for number in range(12):
        params = {
            key: (
                float(np.exp(rng.uniform(np.log(space.low), np.log(space.high))))
                if isinstance(space, FloatDistribution) and space.log
                else float(rng.uniform(space.low, space.high))
                if isinstance(space, FloatDistribution)
                else space.choices[number % len(space.choices)]
            )
            for key, space in SPACE.items()
        }
        state = optuna.trial.TrialState.FAIL if number == 3 else optuna.trial.TrialState.COMPLETE
        value = None if number == 3 else float(rng.uniform(0.1, 1.0))
        study.add_trial(
            optuna.trial.create_trial(state=state, value=value, params=params, distributions=SPACE)
        )
    figures = {}
    save = Figure.savefig

    def keep(figure, path, **kwargs):
        figure.canvas.draw()  # where each label is, before savefig's tight layout moves them for its own draw
        figure.boxes = [(text.get_text(), text.get_window_extent()) for text in texts(figure)]
        figures[path.name] = figure
        save(figure, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    notes = write_plots(study, tmp_path)
    assert notes[0].startswith("Plots in") and len(notes) == 1, notes
    return figures


def test_the_parallel_coordinate_plot_names_each_axis_whole(drawn):
    names = [label.get_text() for label in drawn["parallel_coordinate.png"].axes[0].get_xticklabels()]
    assert names == [
        "Objective Value", "batch_size", "dropout", "hidden_sizes", "lr", "optimizer.\nweight_decay",
        "scheduler.\nweight_decay",
    ]  # fmt: skip


def test_the_slice_plot_names_each_parameter_and_its_choices(drawn):
    axes = [ax for ax in drawn["slice.png"].axes if ax.get_xlabel() != ""]
    assert [ax.get_xlabel() for ax in axes] == [
        "batch_size", "dropout", "hidden_sizes", "lr", "optimizer.\nweight_decay", "scheduler.\nweight_decay",
    ]  # fmt: skip
    assert [label.get_text() for label in axes[2].get_xticklabels()] == ["[32]", "[48, 16]"]


@pytest.mark.parametrize("name", ["parallel_coordinate.png", "slice.png", "param_importances.png"])
def test_no_label_is_drawn_over_another(drawn, name):
    pairs = itertools.combinations(drawn[name].boxes, 2)
    assert [(first, second) for (first, a), (second, b) in pairs if a.overlaps(b)] == []


def contrast(first, second) -> float:
    """WCAG's contrast ratio of two RGB(A) colours (1: the same; 3: the least for a graphic to be seen)."""

    def luminance(color) -> float:
        channels = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in color[:3]]
        return 0.2126 * channels[0] + 0.7152 * channels[1] + 0.0722 * channels[2]

    light, dark = sorted((luminance(first), luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


@pytest.mark.parametrize("name", ["parallel_coordinate.png", "slice.png"])
def test_every_trial_stands_out_from_the_background_the_worst_too(drawn, name):
    figure = drawn[name]
    checked = 0
    for ax in figure.axes:
        for collection in ax.collections:
            if collection.get_array() is None:  # not coloured by the objective
                continue
            colors = np.asarray(collection.cmap(collection.norm(collection.get_array()))).reshape(-1, 4)
            checked += len(colors)
            worst = min(contrast(color, ax.get_facecolor()) for color in colors)
            assert worst >= 1.6, f"{name}: a trial drawn with contrast {worst:.2f} to its background"
    assert checked >= 11  # the completed trials
