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
import csv
import io
import json
import logging
import math
import os
import re
import socket
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mnist_lightning.errors import UserError, first_line
from mnist_lightning.quiet import quiet

DEFAULT_METRIC = "val_acc"
DEFAULT_TRIALS = 20
SWEEP_KEYS = {
    "metric", "direction", "trials", "sampler", "pruner", "params", "retry_failed", "test", "heartbeat",
}  # fmt: skip
PARAM_KEYS = {"type", "low", "high", "log", "step", "choices", "also"}
FINISHED = ("COMPLETE", "PRUNED")  # the trial states that count toward --trials
# system attributes of a trial: which process runs it, and when that process last said it was alive
HOST, PID, PID_START, HEARTBEAT = "sweep:host", "sweep:pid", "sweep:pid_start", "sweep:heartbeat"
RUN_DIR, BEST_CKPT, EPOCHS, FIT_SECONDS, TEST_ACC = (
    "run_dir",
    "best_checkpoint",
    "epochs",
    "fit_seconds",
    "test_acc",
)
PLOTS = ("optimization_history.png", "param_importances.png", "parallel_coordinate.png", "slice.png")

USAGE = """\
python -m mnist_lightning sweep --config CONFIG [--config ...] --sweep SWEEP.yaml
       [--trials N] [--timeout SECONDS] [--study NAME] [--storage URL] [--dir FOLDER] [--report]
       [--verbose] [fit options, e.g. --trainer.max_epochs 5]"""

EPILOG = """\
Any other option (--config files, --trainer.max_epochs 5, --data.data_dir ...) is a 'fit' option and applies
to every trial (see: python -m mnist_lightning fit --help). Each trial's sampled values are added after them.

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


# ----------------------------------------------------------------------------------------------------------
# The sweep file


@dataclass
class Param:
    """One dimension of the search space: a float or int range (log scale or not) or a list of choices."""

    key: str
    kind: str  # "float", "int" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] = field(default_factory=list)
    also: list[str] = field(default_factory=list)  # further options set to the same value (seeds)

    def suggest(self, trial) -> Any:
        """The trial's value of this parameter, as the option takes it."""
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return self.decode(trial.suggest_categorical(self.key, self.optuna_choices))

    @property
    def optuna_choices(self) -> list[Any]:
        """The choices as Optuna stores them: plain values as they are, lists and mappings as JSON text."""
        return [self.encode(choice) for choice in self.choices]

    @staticmethod
    def encode(value: Any) -> Any:
        return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)

    def decode(self, stored: Any) -> Any:
        return next((choice for choice in self.choices if self.encode(choice) == stored), stored)

    def probe_values(self) -> list[Any]:
        """The values that check the parameter before any training: both ends of a range, every choice."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]

    def options(self, value: Any) -> list[str]:
        """``--key=value`` for the command line (and for each ``also`` key)."""
        text = value if isinstance(value, str) else json.dumps(value)
        return [f"--{key}={text}" for key in (self.key, *self.also)]


@dataclass
class SweepSpec:
    """The contents of a sweep file."""

    path: Path
    params: list[Param]
    metric: str = DEFAULT_METRIC
    direction: str = "maximize"
    trials: int = DEFAULT_TRIALS
    sampler: dict[str, Any] = field(default_factory=lambda: {"name": "TPESampler", "args": {}})
    pruner: dict[str, Any] | None = field(default_factory=lambda: {"name": "MedianPruner", "args": {}})
    retry_failed: int = 1
    test: bool = False
    heartbeat: float = 30.0  # seconds between "still alive" marks of a running trial

    @property
    def grace(self) -> float:
        """After this long without a heartbeat, a trial of another machine counts as dead."""
        return 4 * self.heartbeat


def load_sweep_file(path: str | Path) -> SweepSpec:
    """Read and check a sweep file (everything but the option names, which :func:`check_params` checks)."""
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read the sweep file '{path}': {err.strerror or err}.") from None
    except yaml.YAMLError as err:
        raise UserError(f"the sweep file '{path}' is not valid YAML: {first_line(err)}") from None
    where = f"the sweep file '{path}'"
    if not isinstance(content, dict):
        raise UserError(f"{where} must be a mapping with at least 'params'.")
    unknown = sorted(set(content) - SWEEP_KEYS)
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(unknown)}; accepted: {', '.join(sorted(SWEEP_KEYS))}."
        )
    params_spec = content.get("params")
    if not isinstance(params_spec, dict) or not params_spec:
        raise UserError(f"{where} needs 'params': a mapping of option names to ranges or choices.")
    spec = SweepSpec(path=path, params=[parse_param(key, value, where) for key, value in params_spec.items()])
    if "metric" in content:
        spec.metric = str(content["metric"])
    if "direction" in content:
        if content["direction"] not in ("maximize", "minimize"):
            raise UserError(
                f"{where}: direction must be 'maximize' or 'minimize', got {content['direction']!r}."
            )
        spec.direction = content["direction"]
    for key in ("trials", "retry_failed"):
        if key in content:
            value = content[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "trials" else 0):
                raise UserError(f"{where}: {key} must be a whole number >= {1 if key == 'trials' else 0}.")
            setattr(spec, key, value)
    if "test" in content:
        spec.test = bool(content["test"])
    if "heartbeat" in content:
        spec.heartbeat = float(content["heartbeat"])
    for key in ("sampler", "pruner"):
        if key in content:
            setattr(spec, key, parse_class_spec(content[key], key, where))
    return spec


def parse_param(key: str, value: Any, where: str) -> Param:
    """A ``params`` entry: ``{low, high[, log, step, type]}`` or ``{choices: [...]}`` (or a bare list)."""
    name = f"{where}: params.{key}"
    if isinstance(value, list):
        value = {"choices": value}
    if not isinstance(value, dict):
        raise UserError(f"{name} must be {{low: ..., high: ...}} or {{choices: [...]}}, got {value!r}.")
    unknown = sorted(set(value) - PARAM_KEYS)
    if unknown:
        raise UserError(
            f"{name}: unknown field(s) {', '.join(unknown)}; accepted: {', '.join(sorted(PARAM_KEYS))}."
        )
    also = value.get("also") or []
    also = [also] if isinstance(also, str) else list(also)
    if "choices" in value:
        choices = value["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{name}: choices must be a non-empty list.")
        if value.get("type") not in (None, "categorical"):
            raise UserError(f"{name}: choices go with type categorical, not {value['type']!r}.")
        return Param(key, "categorical", choices=choices, also=also)
    if "low" not in value or "high" not in value:
        raise UserError(f"{name} needs both low and high (a range) or choices (a list).")
    low, high = value["low"], value["high"]
    for bound, number in (("low", low), ("high", high)):
        if not isinstance(number, (int, float)) or isinstance(number, bool) or not math.isfinite(number):
            raise UserError(f"{name}: {bound} must be a number, got {number!r}.")
    kind = value.get("type") or ("int" if isinstance(low, int) and isinstance(high, int) else "float")
    if kind not in ("int", "float"):
        raise UserError(f"{name}: type must be float, int or categorical, got {kind!r}.")
    if low > high:
        raise UserError(f"{name}: low ({low}) is greater than high ({high}).")
    log = bool(value.get("log", False))
    if log and low <= 0:
        raise UserError(f"{name}: a log range needs low > 0, got {low}.")
    step = value.get("step")
    if step is not None and (log or not isinstance(step, (int, float)) or step <= 0):
        raise UserError(f"{name}: step must be a positive number, and cannot go with log: true.")
    return Param(key, kind, low=low, high=high, log=log, step=step, also=also)


def parse_class_spec(value: Any, key: str, where: str) -> dict[str, Any] | None:
    """``{name: TPESampler, args: {...}}``, or just the class name; ``null`` for no pruner."""
    if value is None and key == "pruner":
        return None
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or set(value) - {"name", "args"}:
        raise UserError(f"{where}: {key} must be {{name: ClassName, args: {{...}}}}, got {value!r}.")
    args = value.get("args") or {}
    if not isinstance(args, dict):
        raise UserError(f"{where}: {key}.args must be a mapping, got {args!r}.")
    return {"name": value["name"], "args": args}


def make_sampler(spec: SweepSpec, seed_offset: int = 0):
    """The sampler the sweep file names; ``GridSampler`` gets its grid from the ``choices`` of ``params``.

    A ``seed`` is offset by ``seed_offset``: a continued study or a second process must not draw the same
    parameters again as a fresh sampler with the same seed would.
    """
    import optuna

    name, args = spec.sampler["name"], dict(spec.sampler["args"])
    if seed_offset and isinstance(args.get("seed"), int):
        args["seed"] += seed_offset
    if name == "GridSampler" and "search_space" not in args:
        ranges = [param.key for param in spec.params if param.kind != "categorical"]
        if ranges:
            raise UserError(f"GridSampler needs choices for every parameter; {', '.join(ranges)} are ranges.")
        args["search_space"] = {param.key: param.optuna_choices for param in spec.params}
    return _optuna_object(optuna.samplers, "BaseSampler", "sampler", name, args)


def make_pruner(spec: SweepSpec):
    import optuna

    if spec.pruner is None:
        return optuna.pruners.NopPruner()
    return _optuna_object(optuna.pruners, "BasePruner", "pruner", spec.pruner["name"], spec.pruner["args"])


def _optuna_object(module, base: str, what: str, name: str, args: dict[str, Any]):
    cls = getattr(module, name, None)
    if not isinstance(cls, type) or not issubclass(cls, getattr(module, base)) or name.startswith("Base"):
        known = sorted(
            attr for attr in dir(module)
            if not attr.startswith(("_", "Base")) and isinstance(getattr(module, attr), type)
            and issubclass(getattr(module, attr), getattr(module, base))
        )  # fmt: skip
        raise UserError(f"unknown {what} '{name}'; Optuna's {what}s are: {', '.join(known)}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning of some samplers: not news to the user
            return cls(**args)
    except (TypeError, ValueError) as err:
        raise UserError(f"{what} {name}({_call_args(args)}): {first_line(err)}") from None


def _call_args(args: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in args.items())


# ----------------------------------------------------------------------------------------------------------
# Trials: the fit command line, with the logger moved into the trial's folder


def trial_cli_class():
    """The CLI class of trials (defined on first use: it needs Lightning)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException  # noqa: F401 (imported for the sweep)

    from mnist_lightning.cli import MNISTLightningCLI

    class TrialCLI(MNISTLightningCLI):
        """``fit`` (or ``test``) of one trial: logs, config and checkpoints in ``run_dir``, no final print."""

        def __init__(self, *args, run_dir: Path, **kwargs) -> None:
            self.run_dir = run_dir
            super().__init__(*args, **kwargs)

        def adjust_config(self, subcommand, config) -> None:
            place_logger(config.trainer, self.run_dir)

        def after_fit(self) -> None:  # the sweep prints one line per trial instead
            pass

    return TrialCLI


def probe_cli_class():
    """A CLI that only parses and builds the model and data objects: the sweep's check before training."""
    from mnist_lightning.cli import MNISTLightningCLI

    class ProbeCLI(MNISTLightningCLI):
        def before_instantiate_classes(self) -> None:
            pass

        def instantiate_classes(self) -> None:  # the model, data and callback objects, no Trainer
            self.parser.instantiate(self.config)

        def after_instantiate_classes(self) -> None:
            self.checkpoint = None

        def _run_subcommand(self, subcommand: str) -> None:
            pass

    return ProbeCLI


def place_logger(trainer_config, run_dir: Path) -> None:
    """Point the configured logger (a TensorBoard one when none is) at ``run_dir``: ``save_dir`` its parent,
    ``name`` empty, ``version`` its name, so each trial is one run folder and TensorBoard shows them side
    by side under the sweep's folder."""
    from jsonargparse import Namespace

    loggers = trainer_config.get("logger")
    placed = False
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
        if isinstance(init_args, Namespace) and "save_dir" in init_args:
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
    or a value the model refuses is reported with the parameter named, and nothing has run yet."""
    from jsonargparse import ArgumentError

    from mnist_lightning.cli import build_cli

    if any(arg == "--ckpt_path" or arg.startswith("--ckpt_path=") for arg in fit_args):
        raise UserError("a sweep's trials start from scratch; leave out --ckpt_path.")
    with bare_argv():
        probe = build_cli(["fit", *fit_args], cli_class=probe_cli_class())  # exits 2 on a bad fit option
    for parser in (probe.parser, *probe._subcommand_parsers.values()):
        parser.exit_on_error = False
    for param in spec.params:
        for value in param.probe_values():
            options = param.options(value)
            try:
                with bare_argv(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    probe.parse_arguments(probe.parser, ["fit", *fit_args, *options])
                    probe.instantiate_classes()
            except UserError as err:
                raise UserError(f"{spec.path}: params.{param.key} = {value!r}: {err}") from None
            except (ArgumentError, TypeError, ValueError) as err:
                message = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
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


class BestMetric:
    """Records the monitored metric after each validation epoch (sanity check excluded); ``best`` of them."""

    def __init__(self, monitor: str, direction: str) -> None:
        from lightning.pytorch.callbacks import Callback

        owner = self

        class _Callback(Callback):
            def on_validation_end(self, trainer, pl_module) -> None:
                if trainer.sanity_checking:
                    return
                value = trainer.callback_metrics.get(owner.monitor)
                if value is not None:
                    owner.values.append(float(value))

        self.monitor, self.direction, self.values = monitor, direction, []
        self.callback = _Callback()

    @property
    def best(self) -> float | None:
        finite = [value for value in self.values if math.isfinite(value)]
        if not finite:
            return None
        return max(finite) if self.direction == "maximize" else min(finite)


# ----------------------------------------------------------------------------------------------------------
# Storage, and trials of processes that are gone


def open_storage(url: str | None, sweep_dir: Path):
    """The study's database.

    Default: a journal file, ``<sweep dir>/study.journal`` (Optuna's ``JournalStorage`` with a
    ``JournalFileBackend``): an append-only log guarded by a lock file, so several processes on one
    machine (or on a shared filesystem) write to it at once without SQLite's "database is locked" errors,
    and a killed process leaves at most an unfinished last record, which is skipped.

    ``--storage`` takes any Optuna storage URL: ``postgresql://...``, ``mysql://...`` and ``sqlite:///...``
    (SQLAlchemy; SQLite waits up to 60 s for a lock), ``journal:PATH`` or a ``*.journal`` file for a
    journal file elsewhere (e.g. on a filesystem all machines share), and ``redis://...``.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

    try:
        if url is None or url.startswith("journal:") or url.endswith(".journal"):
            path = sweep_dir / "study.journal" if url is None else Path(url.removeprefix("journal:"))
            if url is None:
                sweep_dir.mkdir(parents=True, exist_ok=True)
            elif not path.parent.is_dir():
                raise UserError(f"--storage {url}: the folder '{path.parent}' does not exist.")
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("redis://"):
            return optuna.storages.JournalStorage(JournalRedisBackend(url))
        engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except UserError:
        raise
    except Exception as err:  # a driver missing, a server unreachable, a file that cannot be created
        raise UserError(
            f"cannot open the study storage '{url or sweep_dir / 'study.journal'}': "
            f"{type(err).__name__}: {first_line(err)}"
        ) from None


def _host_id() -> str:
    """This machine and PID namespace: process ids are only comparable within one."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux), so a reused pid is not mistaken for the old process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start is None or _process_start(pid) in (None, start)


def is_dead(trial, grace: float, now: float) -> bool:
    """A RUNNING trial whose process is gone: on this machine, its pid no longer runs (exact, at once); on
    another, it has not sent a heartbeat for ``grace`` seconds. Live processes never fail each other's
    trials."""
    attrs = trial.system_attrs
    if HOST not in attrs:  # asked for but not yet claimed (or its process died right then)
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - started > grace
    if attrs[HOST] == _host_id():
        return not _alive(int(attrs[PID]), attrs.get(PID_START))
    return now - float(attrs.get(HEARTBEAT, 0)) > grace


def fail_dead_trials(study, spec: SweepSpec) -> None:
    """Mark the RUNNING trials of dead processes FAIL and, up to ``retry_failed`` times, queue them again.

    Marking is a state change the storage refuses on a finished trial, so when two processes find the same
    dead trial only one of them marks it and queues the retry.
    """
    from optuna.trial import TrialState

    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_dead(trial, spec.grace, now):
            continue
        try:
            marked = study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        except Exception:  # another process marked it first
            continue
        if not marked:
            continue
        retried = queue_retry(study, trial, spec)
        print(
            f"Trial {trial.number} was left running by a process that is gone: marked failed"
            f"{'; its parameters are queued again' if retried else ''}.",
            flush=True,
        )


def queue_retry(study, trial, spec: SweepSpec) -> bool:
    retries = int(trial.user_attrs.get("retries", 0))
    if retries >= spec.retry_failed or not trial.params:
        return False
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number, "retries": retries + 1})
    return True


class Heartbeat:
    """Marks the trial as alive in the storage every ``interval`` seconds while it runs (a daemon thread)."""

    def __init__(self, study, trial_id: int, interval: float) -> None:
        self.study, self.trial_id, self.interval = study, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                self.study._storage.set_trial_system_attr(self.trial_id, HEARTBEAT, time.time())

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------------------------------------
# The sweep


@dataclass
class Sweep:
    spec: SweepSpec
    fit_args: list[str]
    sweep_dir: Path
    verbose: bool = False

    def objective(self, trial) -> float:
        import optuna
        from lightning.pytorch.utilities.exceptions import SIGTERMException
        from optuna_integration import PyTorchLightningPruningCallback

        from mnist_lightning.cli import build_cli

        storage = trial.study._storage
        pid = os.getpid()
        for key, value in (
            (HOST, _host_id()),
            (PID, pid),
            (PID_START, _process_start(pid)),
            (HEARTBEAT, time.time()),
        ):
            storage.set_trial_system_attr(trial._trial_id, key, value)
        run_dir = self.sweep_dir / f"trial_{trial.number}"
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
            with Heartbeat(trial.study, trial._trial_id, self.spec.heartbeat), bare_argv():
                cli = build_cli(
                    ["fit", *quiet, *self.fit_args, *options],
                    cli_class=trial_cli_class(),
                    run_dir=run_dir,
                    trainer_defaults={"callbacks": [tracker.callback, pruning]},
                )
        except optuna.TrialPruned:
            self._record(trial, None, tracker, start)
            raise
        except (SIGTERMException, KeyboardInterrupt) as err:
            trial.set_user_attr("interrupted", True)
            queue_retry(trial.study, trial.study._storage.get_trial(trial._trial_id), self.spec)
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
        from mnist_lightning.cli import build_cli

        quiet_output = contextlib.redirect_stdout(sys.stderr if self.verbose else io.StringIO())
        with bare_argv(), quiet_output, warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="The dirpath has changed"
            )  # the fit's checkpoint callbacks
            cli = build_cli(
                ["test", *quiet, *self.fit_args, *options, f"--ckpt_path={best_ckpt}"],
                cli_class=trial_cli_class(),
                run_dir=run_dir,
            )
        value = cli.trainer.callback_metrics.get("test_acc")
        if value is not None:
            trial.set_user_attr(TEST_ACC, float(value))

    def run(self, study, trials: int, timeout: float | None) -> str:
        """Run trials until the study has ``trials`` finished ones; returns why it stopped."""
        from optuna.trial import TrialState

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
            f"{attrs.get(EPOCHS, 0)} epochs, {attrs.get(FIT_SECONDS, 0):.1f} s{test}  [{params}]",
            flush=True,
        )


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace(" ", "")


# ----------------------------------------------------------------------------------------------------------
# Report: best trial, trials.csv, plots


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
        print(f"Pruned: {len(pruned)} trials, stopped after {epochs} epochs in all.")
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
                + [trial.datetime_start or "", trial.datetime_complete or "", attrs.get("retry_of", "")]
            )
    return path


def write_plots(study, sweep_dir: Path) -> list[str]:
    """Optuna's matplotlib plots as PNG files; returns a line per plot (written, or why not)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
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
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning: the plots are stable enough for this
                axes = make(study)
            figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
            figure.savefig(sweep_dir / name, dpi=100, bbox_inches="tight")
            plt.close(figure)
            written.append(name)
        except Exception as err:  # e.g. importances with one distinct value per parameter
            plt.close("all")
            notes.append(f"{name}: not drawn ({type(err).__name__}: {first_line(err)}).")
    if written:
        notes.insert(0, f"Plots in {sweep_dir}: {', '.join(written)}")
    return notes


# ----------------------------------------------------------------------------------------------------------
# The command


def parse_args(args: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        prog="python -m mnist_lightning sweep",
        usage=USAGE,
        description="Search hyperparameters with Optuna: each trial is a 'fit' run in its own folder, "
        "unpromising "
        "trials are pruned, and the study is stored in a database, so it resumes and can be shared.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
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
    return parser.parse_known_args(args)


def main(args: list[str]) -> None:
    options, fit_args = parse_args(list(args))
    try:
        with quiet():
            run(options, fit_args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(
            "Interrupted: the running trial is marked failed (and queued again if retry_failed allows); "
            "run the same command to continue the study.",
            file=sys.stderr,
        )
        raise SystemExit(130) from None


@contextlib.contextmanager
def quiet_trials() -> Iterator[None]:
    """While the trials run: Lightning's info lines left out, a library warning shown once per sweep instead
    of once per trial; both undone afterwards (``sweep.main`` may be called from a longer-lived process)."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("once", append=True)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def run(options: argparse.Namespace, fit_args: list[str]) -> None:
    if options.trials is not None and options.trials < 0:
        raise UserError(f"--trials must be 0 or more, got {options.trials}.")
    if options.timeout is not None and options.timeout <= 0:
        raise UserError(f"--timeout must be a positive number of seconds, got {options.timeout}.")
    spec = load_sweep_file(options.sweep)
    study_name = options.study or spec.path.stem
    sweep_dir = Path(options.dir or Path("lightning_logs") / "sweeps" / study_name)
    trials = spec.trials if options.trials is None else options.trials

    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if options.verbose else optuna.logging.WARNING)
    sampler, pruner = make_sampler(spec), make_pruner(spec)
    if not options.report:
        from mnist_lightning.cli import prepare_process

        prepare_process()
        check_params(spec, fit_args)
    storage = open_storage(options.storage, sweep_dir)
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
        start = time.monotonic()
        with contextlib.nullcontext() if options.verbose else quiet_trials():
            reason = Sweep(spec, fit_args, sweep_dir, options.verbose).run(study, trials, options.timeout)
        print(f"Stopped: {reason}. Sweep time {time.monotonic() - start:.1f} s.")
    report(study, spec, sweep_dir)
