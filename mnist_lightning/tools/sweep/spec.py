"""The sweep file: the search space, the metric, the sampler and the pruner, checked as it is read."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mnist_lightning.cli.quiet import silenced
from mnist_lightning.errors import UserError, first_line, yaml_problem

DEFAULT_METRIC = "val_acc"
DEFAULT_TRIALS = 20
SWEEP_KEYS = {
    "metric", "direction", "trials", "sampler", "pruner", "params", "retry_failed", "test", "heartbeat",
}  # fmt: skip
PARAM_KEYS = {"type", "low", "high", "log", "step", "choices", "also"}


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
    heartbeat: int = 30  # seconds between "still alive" marks of a running trial (Optuna takes whole seconds)

    @property
    def grace(self) -> int:
        """After this many seconds without a heartbeat, a trial of another machine counts as dead."""
        return 4 * self.heartbeat


def load_sweep_file(path: str | Path) -> SweepSpec:
    """Read and check a sweep file (everything but the option names, which :func:`check_params` checks)."""
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read the sweep file '{path}': {err.strerror or err}.") from None
    except yaml.YAMLError as err:
        raise UserError(f"the sweep file '{path}' is not valid YAML {yaml_problem(err)}.") from None
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
    for key, least in (("trials", 1), ("retry_failed", 0), ("heartbeat", 1)):
        if key in content:
            value = content[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise UserError(f"{where}: {key} must be a whole number >= {least}.")
            setattr(spec, key, value)
    if "test" in content:
        spec.test = bool(content["test"])
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
        with silenced():  # ExperimentalWarning of some samplers: not news to the user
            return cls(**args)
    except (TypeError, ValueError) as err:
        raise UserError(f"{what} {name}({_call_args(args)}): {first_line(err)}") from None


def _call_args(args: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in args.items())
