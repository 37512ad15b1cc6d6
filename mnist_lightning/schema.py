"""One description of a run's settings, shared by everything that shows or compares runs.

A run's configuration (the ``config.yaml`` that LightningCLI saves, or the parsed one) is flattened here to
dotted option names, a class setting (``class_path`` + ``init_args``) to its class name followed by its
arguments; :func:`is_hyperparameter` says which keys change what a run learns. The TensorBoard HPARAMS tab
(``callbacks/run_folder.py``), ``summary.json`` (``callbacks/run_summary.py``), the messages of the command
line and the ``runs`` table all read runs through this module, so they agree on names and on what counts.
It imports neither torch nor Lightning: ``runs`` reads a folder of many runs without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# settings that change where or how fast a run goes, not what it learns
NOT_HYPERPARAMETERS = frozenset(
    {
        "data.data_dir", "data.num_workers", "data.pin_memory", "data.data_on_device", "data.eval_batch_size",
        "data.invert", "data.predict_path", "data.loader", "model.num_classes",
    }
)  # fmt: skip
# arguments that select an implementation or are filled in from elsewhere (num_classes from data.dataset),
# and the bookkeeping keys LightningCLI adds to saved hyperparameters
SWITCHES = frozenset(
    {
        "num_classes",
        "fused",
        "foreach",
        "capturable",
        "differentiable",
        "maximize",
        "_class_path",
        "_instantiator",
    }
)
# trainer settings that change where, how fast or how long a run goes, or what it shows, not what it learns
# (a resume may change them: cli/resume.py; the runs table leaves them out, but for max_epochs)
FREE_TRAINER_SETTINGS = frozenset(
    {
        "accelerator", "devices", "num_nodes", "strategy", "logger", "callbacks", "enable_progress_bar",
        "enable_model_summary", "log_every_n_steps", "default_root_dir", "max_epochs", "max_steps",
        "max_time", "num_sanity_val_steps", "profiler", "enable_checkpointing", "plugins", "sync_batchnorm",
    }
)  # fmt: skip
# a run's seeds, and the fold of a k-fold cross-validation: not part of what identifies a recipe
SEED_KEYS = ("seed_everything", "data.seed", "data.fold")


def class_name(class_path: Any) -> Any:
    """``MLP`` for ``mnist_lightning.models.nets.MLP``; anything that is no class path as it is."""
    return class_path.rsplit(".", 1)[-1] if isinstance(class_path, str) else class_path


def is_class_config(value: Any) -> bool:
    """A ``{class_path: ..., init_args: {...}}`` setting (a dict or a jsonargparse Namespace)."""
    return isinstance(value, Mapping) and "class_path" in value


def class_arguments(config: Mapping) -> dict[str, Any]:
    """The ``init_args`` of a class setting that describe it (switches and filled-in values left out)."""
    return {key: value for key, value in dict(config.get("init_args") or {}).items() if key not in SWITCHES}


def describe_class(config: Any, format_value=repr) -> Any:
    """``MLP(hidden_sizes=[128, 64], dropout=0.2)``: a class setting in one phrase (other values as is)."""
    if not is_class_config(config):
        return config
    arguments = ", ".join(f"{key}={format_value(value)}" for key, value in class_arguments(config).items())
    return f"{class_name(config['class_path'])}({arguments})"


def flatten(config: Mapping) -> dict[str, Any]:
    """A run's settings by dotted option name: every ``model.*`` and ``data.*`` setting, then the trainer
    settings that change a run's results (``trainer.max_epochs``, ``trainer.limit_train_batches``,
    ``trainer.precision``, ...: all but :data:`FREE_TRAINER_SETTINGS`) and ``seed_everything`` when the
    config has them.

    A class setting becomes its class name (``model.optimizer: Adam``) followed by each argument
    (``model.optimizer.init_args.lr: 0.001``); other values (lists, plain mappings) are kept as they are.
    """
    flat: dict[str, Any] = {}
    for section in ("model", "data"):
        for key, value in dict(config.get(section) or {}).items():
            _flatten_into(flat, f"{section}.{key}", value)
    for key, value in dict(config.get("trainer") or {}).items():
        if key == "max_epochs" or key not in FREE_TRAINER_SETTINGS:
            _flatten_into(flat, f"trainer.{key}", value)
    if "seed_everything" in config:
        flat["seed_everything"] = config["seed_everything"]
    return flat


def _flatten_into(flat: dict[str, Any], key: str, value: Any) -> None:
    if is_class_config(value):
        flat[key] = class_name(value["class_path"])
        for name, argument in dict(value.get("init_args") or {}).items():
            _flatten_into(flat, f"{key}.init_args.{name}", argument)
    else:
        flat[key] = dict(value) if isinstance(value, Mapping) else value


def is_hyperparameter(key: str) -> bool:
    """Whether the setting ``key`` (a dotted name from :func:`flatten`) changes what a run learns."""
    return (
        key not in NOT_HYPERPARAMETERS
        and key.rsplit(".", 1)[-1] not in SWITCHES
        and not key.startswith("model._")
    )


def hyperparameters(config: Mapping) -> dict[str, Any]:
    """:func:`flatten`, only the keys that change what a run learns."""
    return {key: value for key, value in flatten(config).items() if is_hyperparameter(key)}


def short_name(key: str) -> str:
    """The name a setting is shown by, in TensorBoard's HPARAMS tab and in the ``runs`` table and CSV alike:
    the option name without ``model.`` and ``init_args``, ``seed`` for ``seed_everything`` and ``max_epochs``
    for ``trainer.max_epochs``: ``optimizer.lr``, ``label_smoothing``, ``data.batch_size``."""
    renamed = {"seed_everything": "seed", "trainer.max_epochs": "max_epochs"}
    return renamed.get(key, key.removeprefix("model.").replace(".init_args.", "."))


def tensorboard_hparams(config: Mapping) -> dict[str, Any]:
    """The run's hyperparameters as TensorBoard's HPARAMS tab lists them, short names (:func:`short_name`)
    and scalar values: ``seed: 42``, ``net: MLP``, ``net.hidden_sizes: [128, 64]``, ``optimizer.lr: 0.001``,
    ``data.batch_size: 64``, ``max_epochs: 20``; unset values are left out, and of the trainer's settings
    only ``max_epochs`` (the tab is the recipe's; ``runs`` shows the others where runs differ)."""
    settings = {
        key: value
        for key, value in hyperparameters(config).items()
        if not key.startswith("trainer.") or key == "trainer.max_epochs"
    }
    flat: dict[str, Any] = {"seed": settings.pop("seed_everything", None)}
    for key, value in settings.items():
        _scalars_into(flat, short_name(key), value)
    return {key: value for key, value in flat.items() if value is not None}


def _scalars_into(flat: dict[str, Any], key: str, value: Any) -> None:
    if isinstance(value, Mapping):
        for name, item in value.items():
            _scalars_into(flat, f"{key}.{name}", item)
    elif isinstance(value, (bool, int, float, str)) or value is None:
        flat[key] = value
    else:
        flat[key] = str(value)
