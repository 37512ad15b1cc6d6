"""Trials: the ``fit`` command line of each trial, with its logger moved into the trial's folder, and the
check of every parameter before any training."""

from __future__ import annotations

import contextlib
import math
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from jsonargparse import ArgumentError, Namespace
from lightning.pytorch.callbacks import Callback

from mnist_lightning import compat
from mnist_lightning.cli.lightning_cli import MNISTLightningCLI, build_cli
from mnist_lightning.cli.loggers import FOLDER_LOGGERS, is_a, logger_configs, name_trial_runs
from mnist_lightning.cli.quiet import silenced
from mnist_lightning.errors import UserError
from mnist_lightning.tools.sweep.spec import SweepSpec


class TrialCLI(MNISTLightningCLI):
    """``fit`` (or ``test``) of one trial: logs, config and checkpoints in ``run_dir``, its tracker runs
    (MLflow, W&B) named after it and grouped under the ``study``, no final print."""

    def __init__(self, *args, run_dir: Path, study: str, **kwargs) -> None:
        self.run_dir = run_dir
        self.study = study
        super().__init__(*args, **kwargs)

    def adjust_config(self, subcommand, config) -> None:
        place_logger(config.trainer, self.run_dir)
        name_trial_runs(config.trainer, self.run_dir.name, self.study)

    def after_fit(self) -> None:  # the sweep prints one line per trial instead
        pass


@compat.runs_no_subcommand
class ProbeCLI(MNISTLightningCLI):
    """A CLI that only parses and builds the model and data objects: the sweep's check before training."""

    def before_instantiate_classes(self) -> None:
        pass

    def instantiate_classes(self) -> None:  # the model, data and callback objects, no Trainer
        self.parser.instantiate(self.config)

    def after_instantiate_classes(self) -> None:
        self.checkpoint = None


def place_logger(trainer_config, run_dir: Path) -> None:
    """Point the configured TensorBoard and CSV loggers (a TensorBoard one when there is none) at
    ``run_dir``: ``save_dir`` its parent, ``name`` empty, ``version`` its name, so each trial is one run
    folder and TensorBoard shows them side by side under the sweep's folder."""
    placed = False
    for logger in logger_configs(trainer_config):
        init_args = logger.get("init_args")
        if is_a(logger, FOLDER_LOGGERS) and isinstance(init_args, Namespace):
            init_args.save_dir, init_args.name, init_args.version = str(run_dir.parent), "", run_dir.name
            placed = True
    if not placed:
        trainer_config.logger = Namespace(
            class_path="lightning.pytorch.loggers.TensorBoardLogger",
            init_args=Namespace(
                save_dir=str(run_dir.parent), name="", version=run_dir.name, default_hp_metric=False
            ),
        )
    trainer_config.default_root_dir = str(run_dir)


@contextlib.contextmanager
def bare_argv() -> Iterator[None]:
    """LightningCLI warns when given ``args`` while ``sys.argv`` has options too; the sweep's are its own."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def check_params(spec: SweepSpec, fit_args: list[str]) -> None:
    """Before any training: the fit options alone, then each parameter at both ends of its range and at each
    of its choices, parsed and built (model and data) by the same CLI as ``fit``, so a misspelt option name
    or a value the model refuses is reported with the parameter named, and nothing has run yet. A value
    refused alone is tried again with the other parameters at their first values: it may need one of them
    (``data.fold`` needs ``data.folds``)."""
    if any(arg == "--ckpt_path" or arg.startswith("--ckpt_path=") for arg in fit_args):
        raise UserError("a sweep's trials start from scratch; leave out --ckpt_path.")
    with bare_argv():
        probe = build_cli(["fit", *fit_args], cli_class=ProbeCLI)  # exits 2 on a bad fit option
    for parser in (probe.parser, *compat.subcommand_parsers(probe).values()):
        parser.exit_on_error = False
    for param in spec.params:
        others = [
            option for other in spec.params if other is not param
            for option in other.options(other.probe_values()[0])
        ]  # fmt: skip
        for value in param.probe_values():
            options = param.options(value)
            error = _refusal(probe, [*fit_args, *options])
            if error is not None and others and _refusal(probe, [*fit_args, *others, *options]) is None:
                continue  # accepted with the other parameters' values
            if isinstance(error, UserError):
                raise UserError(f"{spec.path}: params.{param.key} = {value!r}: {error}") from None
            if error is not None:
                message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
                unknown = re.search(
                    r"Option '[^']+' is not accepted|[Uu]nrecognized arguments?: \S+", message
                )
                if unknown:
                    raise UserError(
                        f"{spec.path}: params.{param.key}: '{param.key}' is not an option of 'fit' "
                        f"({unknown.group(0)}). Use the dotted names of 'fit --help', e.g. "
                        f"model.optimizer.init_args.lr."
                    ) from None
                raise UserError(
                    f"{spec.path}: params.{param.key} = {value!r} is not accepted: {message[:400]}"
                ) from None


def _refusal(probe: ProbeCLI, args: list[str]) -> Exception | None:
    """What parsing ``fit ARGS`` and building its model and data raises, or None."""
    try:
        with bare_argv(), silenced():
            probe.parse_arguments(probe.parser, ["fit", *args])
            probe.instantiate_classes()
    except (UserError, ArgumentError, TypeError, ValueError) as err:
        return err
    return None


class BestMetric(Callback):
    """Records the monitored metric after each validation epoch (sanity check excluded); ``best`` of them."""

    def __init__(self, monitor: str, direction: str) -> None:
        self.monitor, self.direction, self.values = monitor, direction, []

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None:
            self.values.append(float(value))

    @property
    def best(self) -> float | None:
        finite = [value for value in self.values if math.isfinite(value)]
        if not finite:
            return None
        return max(finite) if self.direction == "maximize" else min(finite)
