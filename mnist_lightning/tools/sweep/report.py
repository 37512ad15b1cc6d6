"""The sweep's report: the best trial, ``trials.csv`` and Optuna's plots."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from mnist_lightning.cli.quiet import silenced
from mnist_lightning.errors import first_line
from mnist_lightning.tools.sweep.spec import SweepSpec
from mnist_lightning.tools.sweep.storage import retried_from

# the user attributes the sweep's loop records on each trial, shown by the report and trials.csv
RUN_DIR, BEST_CKPT, EPOCHS, FIT_SECONDS, TEST_ACC = (
    "run_dir",
    "best_checkpoint",
    "epochs",
    "fit_seconds",
    "test_acc",
)


def plural(count: int, noun: str) -> str:
    """``1 epoch``, ``3 epochs``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


PLOTS = ("optimization_history.png", "param_importances.png", "parallel_coordinate.png", "slice.png")


def report(study, spec: SweepSpec, sweep_dir: Path) -> None:
    """Print the best trial, write ``trials.csv`` and the plots into ``sweep_dir``."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(trial.state == state for trial in trials) for state in TrialState}
    print(
        f"Study '{study.study_name}': {len(trials)} trials: "
        + ", ".join(f"{count} {state.name.lower()}" for state, count in counts.items() if count)
    )
    pruned = [trial for trial in trials if trial.state == TrialState.PRUNED]
    if pruned:
        epochs = sum(int(trial.user_attrs.get(EPOCHS, 0)) for trial in pruned)
        print(f"Pruned: {plural(len(pruned), 'trial')}, stopped after {plural(epochs, 'epoch')} in all.")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = write_trials_csv(trials, sweep_dir / "trials.csv")
    print(f"Trials: {path}")
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        print(f"Best trial: {best.number}, {spec.metric} {best.value:.4f}")
        for key, value in best.params.items():
            print(f"  {key}: {value}")
        print(f"  run folder: {best.user_attrs.get(RUN_DIR)}")
        print(f"  best checkpoint: {best.user_attrs.get(BEST_CKPT)}")
        if TEST_ACC in best.user_attrs:
            print(f"  test_acc: {best.user_attrs[TEST_ACC]:.4f}")
    else:
        print("No trial has completed yet: no best trial.")
    for note in write_plots(study, sweep_dir):
        print(note)


def write_trials_csv(trials: Sequence, path: Path) -> Path:
    params = list(dict.fromkeys(key for trial in trials for key in trial.params))
    columns = ["number", "state", "value", *params, EPOCHS, FIT_SECONDS, TEST_ACC, RUN_DIR, BEST_CKPT]
    columns += ["datetime_start", "datetime_complete", "retry_of"]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for trial in trials:
            attrs = trial.user_attrs
            writer.writerow(
                [trial.number, trial.state.name, "" if trial.value is None else trial.value]
                + [trial.params.get(key, "") for key in params]
                + [attrs.get(key, "") for key in (EPOCHS, FIT_SECONDS, TEST_ACC, RUN_DIR, BEST_CKPT)]
                + [trial.datetime_start or "", trial.datetime_complete or "", _retry_of(trial)]
            )
    return path


def _retry_of(trial) -> int | str:
    """The trial this one retries (a user attribute in a study swept before Optuna's callback retried)."""
    retried = retried_from(trial)
    return trial.user_attrs.get("retry_of", "") if retried is None else retried


def write_plots(study, sweep_dir: Path) -> list[str]:
    """Optuna's matplotlib plots as PNG files; returns a line per plot (written, or why not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as plots

    from mnist_lightning.tools.sweep.plots import (
        plotted_study,
        short_names,
        tidy_parallel_coordinate,
        tidy_slice,
        visible_trial_colors,
    )

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = short_names(list(dict.fromkeys(key for trial in complete for key in trial.params)))
    plotted = plotted_study(study, names)  # each parameter by its short name (plots.py)
    makers = {
        "optimization_history.png": (plots.plot_optimization_history, 1),
        "param_importances.png": (plots.plot_param_importances, 2),
        "parallel_coordinate.png": (plots.plot_parallel_coordinate, 1),
        "slice.png": (plots.plot_slice, 1),
    }
    notes, written = [], []
    for name, (make, needed) in makers.items():
        if len(complete) < needed:
            notes.append(
                f"{name}: not drawn, it needs {needed} completed trial(s), the study has {len(complete)}."
            )
            continue
        try:
            with silenced():  # ExperimentalWarning: the plots are stable enough for this
                axes = make(plotted)
            if name == "parallel_coordinate.png":
                tidy_parallel_coordinate(axes, list(names.values()))
            elif name == "slice.png":
                tidy_slice(axes, plotted)
            figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
            visible_trial_colors(figure)
            figure.savefig(sweep_dir / name, dpi=100, bbox_inches="tight")
            plt.close(figure)
            written.append(name)
        except Exception as err:  # e.g. importances with one distinct value per parameter
            plt.close("all")
            notes.append(f"{name}: not drawn ({type(err).__name__}: {first_line(err)}).")
    if written:
        notes.insert(0, f"Plots in {sweep_dir}: {', '.join(written)}")
    return notes
