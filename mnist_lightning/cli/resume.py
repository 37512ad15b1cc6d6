"""``fit --ckpt_path``: resuming means the same experiment, continued.

LightningCLI rebuilds the model from the checkpoint's hyperparameters, whatever the command line says, so a
resume with a new learning rate trained on at the old one without a word, in the first run's folder. Here a
resume is checked against the run it continues: the settings the user gives (parsed by jsonargparse itself,
without defaults, so only what the command line and the user's ``--config`` files say) must equal the run's
(the checkpoint's model and data hyperparameters, the trainer settings of the run's ``config.yaml``); the
run's trainer settings fill in what the user did not give; a finished run is left untouched; more epochs
than a fixed-length learning-rate schedule was planned for is refused. A new experiment from the weights is
``fit --init_from CKPT``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from mnist_lightning import compat, schema
from mnist_lightning.callbacks.progress import tell
from mnist_lightning.cli.console import DEFAULT_CONFIG, LIGHTNING_COMMANDS
from mnist_lightning.errors import UserError
from mnist_lightning.run_layout import CONFIG_FILE, INTERRUPTED_CHECKPOINT, run_folder_of
from mnist_lightning.schema import FREE_TRAINER_SETTINGS

NOT_SETTINGS = frozenset({"config", "ckpt_path", "init_from", "weights_only"})  # options of the command
FIXED_LENGTH_SCHEDULES = ("OneCycleLR",)  # laid out over the run's planned number of steps


class RunComplete(Exception):
    """``fit --ckpt_path`` on a run that has finished training: nothing to do (exit status 0)."""


def add_init_from(fit_parser: Any) -> None:
    """``fit --init_from CKPT``: a new run from a checkpoint's weights."""
    fit_parser.add_argument(
        "--init_from",
        type=str | None,
        default=None,
        help="a checkpoint whose weights a new run starts from, with this command's settings "
        "(--ckpt_path continues its run instead)",
    )


def continue_run(parser: Any, config: Any, checkpoint: dict, args: list[str]) -> Any:
    """``fit --ckpt_path`` (``config``: the whole parsed configuration; ``args``: the user's options): the
    same experiment, continued. Settings that differ from the run's are refused and the run's trainer
    settings restored; returns the configuration to run (:func:`announce_resume` then checks that there is
    something left to train)."""
    ckpt_path = config.fit.ckpt_path
    run_config = read_run_config(run_folder_of(ckpt_path))
    given = given_settings(parser, "fit", args)
    recorded = recorded_settings(checkpoint, run_config)
    check_same_experiment(ckpt_path, given, recorded)
    check_schedule_allows(ckpt_path, given, recorded)
    restored = trainer_settings_to_restore(given, run_config)
    return parser.parse_object({"fit": restored}, config) if restored else config


def announce_resume(config: Any, checkpoint: dict) -> None:
    """Once the checkpoint fits the model: RunComplete when its run has nothing left to train, else one line
    saying where the run continues."""
    ckpt_path, run = config.ckpt_path, run_folder_of(config.ckpt_path)
    scheduler = (checkpoint.get("hyper_parameters") or {}).get("scheduler")
    fixed_schedule = schema.class_name((scheduler or {}).get("class_path")) in FIXED_LENGTH_SCHEDULES
    check_not_complete(ckpt_path, checkpoint, config.trainer.get("max_epochs"), run, fixed_schedule)
    where = f"; this run continues in {run}" if run is not None else ""
    tell(None, f"Resuming from {ckpt_path}{where}.")


def start_from_weights(parser: Any, config: Any, checkpoint: dict, args: list[str]) -> Any:
    """``fit --init_from CKPT``: a new run with the command's own settings, whose weights the CLI loads from
    ``checkpoint``; it takes the checkpoint's network unless ``args`` name one. Returns the configuration."""
    given = given_settings(parser, "fit", args)
    net = (checkpoint.get("hyper_parameters") or {}).get("net")
    if net is not None and not any(key.startswith("model.net") for key in given):
        config = parser.parse_object({"fit": {"model": {"net": net}}}, config)
    return config


def given_settings(parser: Any, subcommand: str, args: list[str]) -> dict[str, Any]:
    """The settings ``args`` give (the command line and its ``--config`` files), by dotted name."""
    parsed = compat.parse_without_defaults(parser, [subcommand, *args])
    return _flat(parsed.get(subcommand).as_dict() if parsed.get(subcommand) else {})


def recorded_settings(checkpoint: dict, run_config: dict) -> dict[str, Any]:
    """The settings of the run that wrote ``checkpoint``: its model and data hyperparameters, and the
    trainer settings and seed of the run's ``config.yaml`` (``run_config``, {} without one)."""
    config = {
        "model": checkpoint.get("hyper_parameters") or {},
        "data": checkpoint.get("datamodule_hyper_parameters") or {},
        "trainer": run_config.get("trainer") or {},
    }
    if "seed_everything" in run_config:
        config["seed_everything"] = run_config["seed_everything"]
    return _flat(config)


def read_run_config(run: Path | None) -> dict:
    """The run's ``config.yaml`` (plain YAML, read as data), {} when there is none or it does not parse."""
    try:
        content = yaml.safe_load((run / CONFIG_FILE).read_text()) if run is not None else {}
    except (OSError, yaml.YAMLError):
        return {}
    return content if isinstance(content, dict) else {}


def _flat(config: dict) -> dict[str, Any]:
    flat = {key: value for key, value in schema.flatten(config).items() if not key.startswith("model._")}
    for key, value in (config.get("trainer") or {}).items():
        flat[f"trainer.{key}"] = value
    flat.pop("data._instantiator", None)
    return {key: value for key, value in flat.items() if key not in NOT_SETTINGS}


def is_free(key: str) -> bool:
    """Whether ``key`` may differ between a run and its resume (it does not change what the run learns)."""
    if key.startswith("trainer."):
        return key.removeprefix("trainer.").split(".")[0] in FREE_TRAINER_SETTINGS
    return not schema.is_hyperparameter(key) or key in NOT_SETTINGS


def _same(a: Any, b: Any) -> bool:
    def canonical(value: Any) -> str:
        return json.dumps(value, sort_keys=True, default=str)

    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-12)
    return canonical(a) == canonical(b)


def check_same_experiment(ckpt_path: str, given: dict[str, Any], recorded: dict[str, Any]) -> None:
    """A UserError listing the settings ``given`` that differ from the run's, with the two ways on."""
    differences = [
        f"{key} {given[key]!r} here, {recorded[key]!r} in the run"
        for key in sorted(given)
        if not is_free(key) and key in recorded and not _same(given[key], recorded[key])
    ]
    if differences:
        raise UserError(
            f"--ckpt_path '{ckpt_path}' continues a run, but this command changes what it learns: "
            f"{'; '.join(differences)}. To continue the run, leave those settings out (a resume takes the "
            f"run's own); to start a new run from its weights with these settings, use --init_from "
            f"'{ckpt_path}' instead of --ckpt_path. Settings that may change on a resume: the data folder, "
            f"loaders, devices, logging and max_epochs (docs/devices.md#resuming)."
        )


def check_schedule_allows(ckpt_path: str, given: dict[str, Any], recorded: dict[str, Any]) -> None:
    """More (or fewer) epochs than a fixed-length schedule (OneCycleLR) was laid out for: a UserError."""
    scheduler = recorded.get("model.scheduler")
    planned, asked = recorded.get("trainer.max_epochs"), given.get("trainer.max_epochs")
    if scheduler in FIXED_LENGTH_SCHEDULES and planned is not None and asked is not None and asked != planned:
        raise UserError(
            f"--ckpt_path '{ckpt_path}': the run's {scheduler} learning-rate schedule was laid out for "
            f"{planned} epochs and cannot stretch to trainer.max_epochs {asked}. Leave max_epochs out to "
            f"finish the run as planned, or start a new run from its weights with --init_from '{ckpt_path}' "
            f"and the epochs you want (its schedule then starts again)."
        )


def check_not_complete(
    ckpt_path: str, checkpoint: dict, max_epochs: int | None, run: Path | None, fixed_schedule: bool
) -> None:
    """RunComplete when ``checkpoint`` ends its run: every planned epoch trained, or stopped early."""
    if Path(ckpt_path).name == INTERRUPTED_CHECKPOINT:
        return
    progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    trained = progress.get("processed", 0)
    stopped_early = any(
        name.startswith("EarlyStopping") and isinstance(state, dict) and state.get("stopped_epoch", 0) > 0
        for name, state in (checkpoint.get("callbacks") or {}).items()
    )
    if stopped_early or (max_epochs is not None and max_epochs >= 0 and trained >= max_epochs):
        how = "stopped early" if stopped_early else f"trained all {max_epochs} epochs"
        where = f"The run in {run}" if run is not None else f"The run of '{ckpt_path}'"
        longer = "" if fixed_schedule else "Train longer with --trainer.max_epochs N, or s"
        raise RunComplete(
            f"{where} is complete ({how}): nothing to resume, and its files are left as they are. "
            f"{longer or 'S'}tart a new run from its weights with --init_from '{ckpt_path}'."
        )


def trainer_settings_to_restore(given: dict[str, Any], run_config: dict) -> dict[str, Any]:
    """The run's trainer settings (plain values) and seed that the command does not give: a resume runs on
    as the run was configured, not as the default recipe says."""
    trainer = {
        key: value
        for key, value in (run_config.get("trainer") or {}).items()
        if f"trainer.{key}" not in given
        and (key not in FREE_TRAINER_SETTINGS or key in ("max_epochs", "max_steps", "max_time"))
        and _is_plain(value)
    }
    restored: dict[str, Any] = {"trainer": trainer} if trainer else {}
    seed = run_config.get("seed_everything")
    if "seed_everything" not in given and _is_plain(seed) and seed is not None:
        restored["seed_everything"] = seed
    return restored


def _is_plain(value: Any) -> bool:
    """A value that names no class (a run's config.yaml is data: nothing in it is imported)."""
    if isinstance(value, list):
        return all(_is_plain(item) for item in value)
    return value is None or isinstance(value, bool | int | float | str)


def user_args(args: list[str]) -> list[str]:
    """The options the user chose: ``args`` without the subcommand and without ``--config`` files that are
    the default recipe (the one ``with_default_config`` puts first, or a copy of it the user passed), which
    choose nothing, as ``ckpt_path.data_settings_given`` counts them too."""
    at = 1 if args[:1] and args[0] in LIGHTNING_COMMANDS else 0
    chosen, rest = [], list(args[at:])
    while rest:
        arg = rest.pop(0)
        if arg == "--config" and rest and is_default_recipe(rest[0]):
            rest.pop(0)
        elif not (arg.startswith("--config=") and is_default_recipe(arg.partition("=")[2])):
            chosen.append(arg)
    return chosen


def is_default_recipe(path: str) -> bool:
    """Whether the config file ``path`` says what the default recipe says (it, or a byte copy)."""
    try:
        return Path(path).read_bytes() == DEFAULT_CONFIG.read_bytes()
    except OSError:
        return False
