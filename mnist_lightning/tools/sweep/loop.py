"""The sweep: Optuna's study asks for trials, each one an ordinary ``fit`` in its own folder."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from lightning.pytorch.utilities.exceptions import SIGTERMException
from optuna.trial import TrialState
from optuna_integration import PyTorchLightningPruningCallback

from mnist_lightning import compat
from mnist_lightning.callbacks.interrupt import InterruptCheckpoint
from mnist_lightning.cli.lightning_cli import build_cli
from mnist_lightning.run_layout import trial_folder_name
from mnist_lightning.tools.sweep.report import BEST_CKPT, EPOCHS, FIT_SECONDS, RUN_DIR, TEST_ACC, plural
from mnist_lightning.tools.sweep.spec import SweepSpec, make_sampler
from mnist_lightning.tools.sweep.storage import RetryTrial, claim, fail_dead_trials
from mnist_lightning.tools.sweep.trials import BestMetric, TrialCLI, bare_argv

SWEEP_RESUME_HINT = "the same sweep command, which continues the study"


@dataclass
class Sweep:
    spec: SweepSpec
    fit_args: list[str]
    sweep_dir: Path
    verbose: bool = False

    def objective(self, trial) -> float:
        heartbeat = claim(trial, self.spec.heartbeat)
        run_dir = self.sweep_dir / trial_folder_name(trial.number)
        trial.set_user_attr(RUN_DIR, str(run_dir))
        values = {param.key: param.suggest(trial) for param in self.spec.params}
        options = [option for param in self.spec.params for option in param.options(values[param.key])]
        quiet = (
            []
            if self.verbose
            else ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
        )
        tracker = BestMetric(self.spec.metric, self.spec.direction)
        pruning = PyTorchLightningPruningCallback(trial, monitor=self.spec.metric)
        start = time.monotonic()
        try:
            with heartbeat, bare_argv():
                cli = build_cli(
                    ["fit", *quiet, *self.fit_args, *options],
                    cli_class=TrialCLI,
                    run_dir=run_dir,
                    study=trial.study.study_name,
                    trainer_defaults={"callbacks": [tracker, pruning]},
                    interrupt_checkpoint=InterruptCheckpoint(SWEEP_RESUME_HINT),
                )
        except optuna.TrialPruned:
            self._record(trial, None, tracker, start)
            raise
        except (SIGTERMException, KeyboardInterrupt) as err:
            # queued before it is marked interrupted: the retry takes the trial's user attributes
            RetryTrial(self.spec.retry_failed)(
                trial.study, compat.storage_of(trial.study).get_trial(compat.trial_id_of(trial))
            )
            trial.set_user_attr("interrupted", True)
            raise KeyboardInterrupt from err  # Optuna marks the trial FAIL
        checkpoint = cli.trainer.checkpoint_callback
        best_ckpt = (
            checkpoint.best_model_path if checkpoint is not None and checkpoint.best_model_path else None
        )
        self._record(trial, best_ckpt, tracker, start)
        if tracker.best is None:
            raise RuntimeError(f"the trial logged no '{self.spec.metric}' (the sweep file's metric).")
        if self.spec.test and best_ckpt:
            self.test(trial, best_ckpt, quiet, options, run_dir)
        return tracker.best

    def _record(self, trial, best_ckpt: str | None, tracker: BestMetric, start: float) -> None:
        trial.set_user_attr(EPOCHS, len(tracker.values))
        trial.set_user_attr(FIT_SECONDS, round(time.monotonic() - start, 2))
        if best_ckpt:
            trial.set_user_attr(BEST_CKPT, best_ckpt)

    def test(self, trial, best_ckpt: str, quiet: list[str], options: list[str], run_dir: Path) -> None:
        """``test`` on the trial's best checkpoint: its files go to ``<trial>/test/<checkpoint name>/``."""
        quiet_output = contextlib.redirect_stdout(sys.stderr if self.verbose else io.StringIO())
        with bare_argv(), quiet_output:  # the CLI ignores the fit's checkpoint callbacks' EVALUATION_WARNINGS
            cli = build_cli(
                ["test", *quiet, *self.fit_args, *options, f"--ckpt_path={best_ckpt}"],
                cli_class=TrialCLI,
                run_dir=run_dir,
                study=trial.study.study_name,
            )
        value = cli.trainer.callback_metrics.get("test_acc")
        if value is not None:
            trial.set_user_attr(TEST_ACC, float(value))

    def run(self, study, trials: int, timeout: float | None) -> str:
        """Run trials until the study has ``trials`` finished ones; returns why it stopped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        finished_states = (TrialState.COMPLETE, TrialState.PRUNED)
        while True:
            fail_dead_trials(study, self.spec)
            all_trials = study.get_trials(deepcopy=False)
            done = sum(trial.state in finished_states for trial in all_trials)
            running = sum(trial.state == TrialState.RUNNING for trial in all_trials)
            if done >= trials:
                return f"the study has {done} finished trials (--trials {trials})"
            if done + running >= trials:
                return f"{done} trials finished; the other {running} are running in other processes"
            if deadline is not None and time.monotonic() >= deadline:
                return f"--timeout reached with {done} of {trials} trials finished"
            is_exhausted = getattr(study.sampler, "is_exhausted", None)
            if is_exhausted is not None and is_exhausted(study):
                return f"the grid is done ({done} trials finished)"
            # A seeded sampler is seeded anew for each trial, from the trials so far (and this process when
            # others run): a continued or shared study draws new parameters, a fresh one is reproducible.
            study.sampler = make_sampler(self.spec, len(all_trials) + (os.getpid() if running else 0))
            study.optimize(self.objective, n_trials=1, callbacks=[self.report_trial], gc_after_trial=True)

    def report_trial(self, study, trial) -> None:
        """One line per trial."""
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        attrs = trial.user_attrs
        params = " ".join(f"{key.rsplit('.', 1)[-1]}={_short(value)}" for key, value in trial.params.items())
        test = f", test_acc {attrs[TEST_ACC]:.4f}" if TEST_ACC in attrs else ""
        print(
            f"trial {trial.number} {trial.state.name.lower()}: {self.spec.metric} {value} after "
            f"{plural(attrs.get(EPOCHS, 0), 'epoch')}, {attrs.get(FIT_SECONDS, 0):.1f} s{test}  [{params}]",
            flush=True,
        )


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace(" ", "")
