"""``python -m mnist_lightning sweep``: a hyperparameter search with Optuna over ordinary ``fit`` runs.

Every trial is built by the same LightningCLI path as ``fit`` (``cli.build_cli``): the user's configs and
options, then the trial's sampled values as ``--key=value`` options, so every preset, check and callback
applies. A trial lands in ``<sweep dir>/trial_<N>/`` with its ``config.yaml``, TensorBoard curves, hparams,
``summary.json`` and checkpoints, and reports its validation metric to Optuna after each epoch through
``optuna_integration.PyTorchLightningPruningCallback``, which stops unpromising trials early.

The study lives in a real database, so any number of processes, on one machine or many, can run the same
command on the same study, and a command run again after a crash continues it (see :func:`open_storage`
and :func:`fail_dead_trials`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from mnist_lightning.cli.console import CommandParser, program_name
from mnist_lightning.cli.quiet import quiet, quiet_trials
from mnist_lightning.errors import UserError, first_line
from mnist_lightning.run_layout import LOG_ROOT, SWEEPS_FOLDER
from mnist_lightning.tools.sweep.report import report
from mnist_lightning.tools.sweep.spec import load_sweep_file, make_pruner, make_sampler
from mnist_lightning.tools.sweep.storage import open_storage

USAGE = """\
{program} sweep --config CONFIG [--config ...] --sweep SWEEP.yaml
       [--trials N] [--timeout SECONDS] [--study NAME] [--storage URL] [--dir FOLDER] [--report]
       [--verbose] [fit options, e.g. --trainer.max_epochs 5]"""

EPILOG = """\
Any other option (--config files, --trainer.max_epochs 5, --data.data_dir ...) is a 'fit' option and applies
to every trial (see: {program} fit --help). Each trial's sampled values are added after them.

The sweep file (YAML) names the search space by the same dotted option names as the command line:
  params:
    model.optimizer.init_args.lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # float range, log scale
    model.net.init_args.dropout: {low: 0.0, high: 0.4}                      # float range
    data.batch_size: {choices: [64, 128, 256]}                              # categorical
    model.net.init_args.hidden_sizes: {choices: [[128, 64], [256, 128]]}
  metric: val_acc   direction: maximize   trials: 20   retry_failed: 1   test: false
  sampler: {name: TPESampler, args: {seed: 0}}       # any class of optuna.samplers
  pruner: {name: MedianPruner, args: {n_warmup_steps: 1}}   # any class of optuna.pruners, or null

Run the same command again (after a crash, Ctrl-C or kill) to continue the study; run it in several
processes or on several machines (with a shared --storage) to share the trials."""


def parse_args(args: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = CommandParser(
        "sweep",
        usage=USAGE.replace("{program}", program_name()),
        description="Search hyperparameters with Optuna: each trial is a 'fit' run in its own folder, "
        "unpromising "
        "trials are pruned, and the study is stored in a database, so it resumes and can be shared.",
        epilog=EPILOG.replace("{program}", program_name()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sweep", required=True, help="the sweep file: search space, metric, sampler, pruner"
    )
    parser.add_argument(
        "--trials",
        type=int,
        help="finished (completed or pruned) trials the study should reach, counted over all processes and "
        "restarts (default: the sweep file's 'trials', else 20)",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, help="start no new trial after this many seconds")
    parser.add_argument("--study", help="the study's name (default: the sweep file's name, e.g. mlp)")
    parser.add_argument(
        "--storage", help="an Optuna storage URL shared by all processes of the study: postgresql://..., "
        "mysql://..., sqlite:///FILE, journal:FILE or redis://... (default: the journal file "
        "<dir>/study.journal)",
    )  # fmt: skip
    parser.add_argument("--dir", help="the sweep's folder (default: lightning_logs/sweeps/<study>)")
    parser.add_argument(
        "--report",
        action="store_true",
        help="run no trials: print the best trial, write trials.csv and the plots",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="Optuna's and Lightning's logs and progress bars"
    )
    return parser.parse_own_and_fit_options(args)


def main(args: list[str]) -> None:
    options, fit_args = parse_args(list(args))
    try:
        with quiet():
            run(options, fit_args)
    except KeyboardInterrupt:
        print(
            "Interrupted: the running trial is marked failed (and queued again if retry_failed allows); "
            "run the same command to continue the study.",
            file=sys.stderr,
        )
        raise SystemExit(130) from None


def run(options: argparse.Namespace, fit_args: list[str]) -> None:
    if options.trials is not None and options.trials < 1 and not options.report:
        raise UserError(
            f"--trials must be 1 or more, got {options.trials} (--report shows the study without running "
            "trials)."
        )
    if options.timeout is not None and options.timeout <= 0:
        raise UserError(f"--timeout must be a positive number of seconds, got {options.timeout}.")
    spec = load_sweep_file(options.sweep)
    study_name = options.study or spec.path.stem
    sweep_dir = Path(options.dir or Path(LOG_ROOT, SWEEPS_FOLDER, study_name))
    trials = spec.trials if options.trials is None else options.trials

    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if options.verbose else optuna.logging.WARNING)
    sampler, pruner = make_sampler(spec), make_pruner(spec)
    if not options.report:
        from mnist_lightning.cli.process import prepare_process
        from mnist_lightning.tools.sweep.trials import check_params  # Lightning: only when trials run

        prepare_process()
        check_params(spec, fit_args)
    storage = open_storage(options.storage, sweep_dir, spec)
    try:
        study = optuna.create_study(
            storage=storage, study_name=study_name, direction=spec.direction, sampler=sampler, pruner=pruner,
            load_if_exists=True,
        )  # fmt: skip
    except ValueError as err:  # e.g. the stored study has the other direction
        raise UserError(f"study '{study_name}': {first_line(err)}") from None
    if not options.report:
        existing = len(study.get_trials(deepcopy=False))
        print(
            f"Study '{study_name}' ({f'continued, {existing} trials so far' if existing else 'new'}) in "
            f"{options.storage or sweep_dir / 'study.journal'}; trials in {sweep_dir}/trial_<N>/",
            flush=True,
        )
        from mnist_lightning.tools.sweep.loop import Sweep

        start = time.monotonic()
        with contextlib.nullcontext() if options.verbose else quiet_trials():
            reason = Sweep(spec, fit_args, sweep_dir, options.verbose).run(study, trials, options.timeout)
        print(f"Stopped: {reason}. Sweep time {time.monotonic() - start:.1f} s.")
    report(study, spec, sweep_dir)
