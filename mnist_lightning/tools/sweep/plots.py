"""Readable sweep plots: Optuna's matplotlib plots drawn with short parameter names and room for their labels.

Optuna names each axis by the whole option name and cuts it at 17 characters (two parameters became the same
``model.net.init_ar...``); the plots here show each parameter by its shortest unambiguous ending (``lr``,
``hidden_sizes``), keep axes and tick labels apart, and write the numbers of a log axis plainly.
"""

from __future__ import annotations

import math

LOG_SUBS = ((1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 5), (1, 2, 5), (1, 3), (1,))  # richest first


def short_names(keys: list[str]) -> dict[str, str]:
    """Each parameter's shortest dotted ending (``init_args`` left out) that no other parameter of the study
    ends in: ``model.optimizer.init_args.lr`` -> ``lr``, but ``optimizer.lr`` beside a ``scheduler.lr``."""
    parts = {key: [part for part in key.split(".") if part != "init_args"] for key in keys}
    names = {}
    for key, own in parts.items():
        endings = (own[-size:] for size in range(1, len(own) + 1))
        unique = (
            ending
            for ending in endings
            if all(p[-len(ending) :] != ending for k, p in parts.items() if k != key)
        )
        names[key] = ".".join(next(unique, [key]))
    return names


def plotted_study(study, names: dict[str, str]):
    """An in-memory copy of the study with each parameter under its short name. Only completed trials are
    plotted; the others are copied as failed ones without parameters, so that each trial keeps its number."""
    import optuna
    from optuna.trial import TrialState, create_trial

    copy = optuna.create_study(directions=study.directions)
    for trial in study.get_trials(deepcopy=False):
        if trial.state != TrialState.COMPLETE:
            copy.add_trial(create_trial(state=TrialState.FAIL))
            continue
        params = {names[key]: value for key, value in trial.params.items()}
        distributions = {names[key]: value for key, value in trial.distributions.items()}
        copy.add_trial(create_trial(values=trial.values, params=params, distributions=distributions))
    return copy


def plain_log_ticks(axis, most: int) -> None:
    """At most ``most`` ticks on a log axis, written as plain numbers: the richest of 1-9, 1-2-3-5, 1-2-5,
    1-3 and 1 per decade that fits (every n-th decade if even 1 does not), or evenly spaced ones on an axis
    too short for two of those. Matplotlib labels every minor tick of a short log axis, as 2x10^-5, 3x10^-5,
    ..., and they run into each other."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullLocator

    low, high = sorted(axis.get_view_interval())
    decades = range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)
    for subs in LOG_SUBS:
        ticks = [
            sub * 10.0**decade for decade in decades for sub in subs if low <= sub * 10.0**decade <= high
        ]
        if len(ticks) <= most:
            break
    if len(ticks) >= 2:
        axis.set_major_locator(FixedLocator(ticks[:: math.ceil(len(ticks) / most)]))
    else:
        axis.set_major_locator(MaxNLocator(most))
    axis.set_minor_locator(NullLocator())
    axis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def visible_trial_colors(figure) -> None:
    """Colour the trials by objective from mid blue (the worst) to dark blue (the best). Optuna's ``Blues``
    starts at white, which drew the worst trial white on the slice plot's grey (ggplot) background and on
    the parallel-coordinate plot's white one; its colour bars follow the new map."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap

    blues = colormaps["Blues"]
    trial_colors = ListedColormap(blues([0.5 + 0.5 * step / 255 for step in range(256)]), name="trial_blues")
    for ax in figure.axes:
        for collection in ax.collections:
            if collection.get_array() is not None and collection.cmap.name.startswith("Blues"):
                collection.set_cmap(
                    trial_colors if collection.cmap.name == "Blues" else trial_colors.reversed()
                )


def tidy_parallel_coordinate(ax, names: list[str]) -> None:
    """Room for each axis: 1.6 inches apart, its name whole (on two lines at a dot) and level, one grid (the
    objective's), and plain log ticks."""
    ticks = ax.get_xticks()
    ax.figure.set_size_inches(max(6.4, 1.6 * len(ticks) + 2), 4.8)
    labels = [label.get_text() for label in ax.get_xticklabels()]
    whole = [
        next((name for name in names if cut.endswith("...") and name.startswith(cut[:-3])), cut)
        for cut in labels
    ]
    ax.set_xticks(ticks, [name.replace(".", ".\n") for name in whole], rotation=0)
    for twin in ax.figure.axes:
        if twin is ax or not ax.get_shared_x_axes().joined(ax, twin):  # the colorbar
            continue
        twin.grid(False)  # each axis's own grid lines crossed the whole plot
        if twin.get_yscale() == "log":
            plain_log_ticks(twin.yaxis, most=8)


def tidy_slice(axes, study) -> None:
    """Room for each plot: 2.8 inches wide, its name on two lines at a dot, the choices of a categorical
    parameter away from the edges and without quotes, and at most three plain log ticks, so that no label
    runs into the next plot's."""
    from optuna.distributions import CategoricalDistribution

    distributions = {
        key: value for trial in study.get_trials(deepcopy=False) for key, value in trial.distributions.items()
    }
    plots = list(getattr(axes, "flat", [axes]))
    plots[0].figure.set_size_inches(max(6.4, 2.8 * len(plots) + 1.5), 4.8)
    for ax in plots:
        name = ax.get_xlabel()
        ax.set_xlabel(name.replace(".", ".\n"))
        if isinstance(distributions.get(name), CategoricalDistribution):
            ticks = ax.get_xticks()
            ax.set_xlim(-0.5, len(ticks) - 0.5)
            ax.set_xticks(ticks, [label.get_text().strip("'") for label in ax.get_xticklabels()])
        elif ax.get_xscale() == "log":
            plain_log_ticks(ax.xaxis, most=3)
