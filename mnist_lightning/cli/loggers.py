"""The run's loggers as the command line sets them up: the logger that holds the run's folder first (a run
has a folder whatever its loggers), the trackers' packages and servers checked before anything runs, and a
tracker run (MLflow, W&B) continued by the commands that work in the folder of the run that made it."""

from __future__ import annotations

import importlib.util
import os
import pydoc
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from jsonargparse import Namespace
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger, WandbLogger

from mnist_lightning.checkpointing.checkpoints import is_checkpoint_file
from mnist_lightning.errors import UserError
from mnist_lightning.run_layout import (
    LOG_ROOT,
    TRACKERS_FILE,
    next_version_folder,
    read_json,
    run_folder_of,
    version_folder_name,
)

FOLDER_LOGGERS = (TensorBoardLogger, CSVLogger)  # loggers whose log_dir is the run's folder
EXTRAS = ((MLFlowLogger, "mlflow"), (WandbLogger, "wandb"))  # a tracker's package, and the extra holding it
SERVER_TIMEOUT = 10.0  # seconds to wait for an MLflow tracking server to answer


def logger_configs(trainer_config: Namespace) -> list[Namespace]:
    """The configured loggers (``trainer.logger``: one, a list, or none)."""
    loggers = trainer_config.get("logger")
    listed = loggers if isinstance(loggers, list) else [loggers]
    return [logger for logger in listed if isinstance(logger, Namespace) and logger.get("class_path")]


def is_a(logger: Namespace, classes: type | tuple[type, ...]) -> bool:
    cls = pydoc.locate(logger.class_path)
    return isinstance(cls, type) and issubclass(cls, classes)


def folder_logger(trainer_config: Namespace) -> Namespace | None:
    """The logger whose folder is the run's: the first, when it is a TensorBoard or CSV logger with a
    ``save_dir`` (:func:`arrange_loggers` puts one first)."""
    loggers = logger_configs(trainer_config)
    if not loggers or not is_a(loggers[0], FOLDER_LOGGERS):
        return None
    init_args = loggers[0].get("init_args")
    return loggers[0] if isinstance(init_args, Namespace) and init_args.get("save_dir") is not None else None


def arrange_loggers(trainer_config: Namespace) -> None:
    """Put the first TensorBoard or CSV logger first, since Lightning keeps checkpoints and the run's files
    in the first logger's folder; trackers alone (MLflow, W&B) get a CSVLogger in ``lightning_logs`` before
    them, which holds the run's folder (``metrics.csv`` beside its checkpoints)."""
    loggers = logger_configs(trainer_config)
    if not loggers:
        return
    first = next((logger for logger in loggers if is_a(logger, FOLDER_LOGGERS)), None)
    if first is None:
        first = Namespace(
            class_path="lightning.pytorch.loggers.CSVLogger",
            init_args=Namespace(
                save_dir=LOG_ROOT, name="", version=None, prefix="", flush_logs_every_n_steps=100
            ),
        )
    ordered = [first, *(logger for logger in loggers if logger is not first)]
    trainer_config.logger = ordered if len(ordered) > 1 else ordered[0]


def give_run_folder(trainer_config: Namespace) -> None:
    """Without a logger (``--trainer.logger false``) the run's folder is ``trainer.default_root_dir``;
    unset, a new ``lightning_logs/version_N``, so the run is listed by ``runs`` as any other."""
    if trainer_config.get("logger") not in (False, []) or trainer_config.get("default_root_dir"):
        return
    trainer_config.default_root_dir = str(next_version_folder(LOG_ROOT))


def check_trackers(trainer_config: Namespace) -> None:
    """Before anything runs: each tracker's package is installed (else the extra that installs it is
    named), and an MLflow logger's store is settled (:func:`tracking_uri`) and usable: a server answers, a
    ``file:`` store is allowed."""
    for logger in logger_configs(trainer_config):
        for cls, package in EXTRAS:
            if is_a(logger, cls) and importlib.util.find_spec(package) is None:
                name = logger.class_path.rsplit(".", 1)[-1]
                raise UserError(
                    f"trainer.logger {name} needs the '{package}' package, which is not installed. Install "
                    f"it with: pip install 'mnist-lightning[{package}]' (in a checkout: pip install -e "
                    f"'.[{package}]')."
                )
        if is_a(logger, MLFlowLogger):
            logger.init_args.tracking_uri = uri = tracking_uri(logger.init_args.get("tracking_uri"))
            check_file_store(uri)
            check_server(uri)


def tracking_uri(configured: str | None) -> str:
    """The MLflow store a logger uses: its ``tracking_uri``, else ``MLFLOW_TRACKING_URI``, else MLflow's own
    default, the database ``sqlite:///mlflow.db``; a local one with its path made absolute, so a later
    command run elsewhere finds the same store (and a run's ``trackers.json`` names it one way)."""
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    parts = urllib.parse.urlparse(uri)
    if parts.scheme in ("", "file") and not parts.netloc:
        return f"file:{Path(parts.path).expanduser().resolve()}"
    if parts.scheme == "sqlite" and uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def check_file_store(uri: str) -> None:
    """MLflow 3 opens a ``file:`` store only with ``MLFLOW_ALLOW_FILE_STORE=true`` (it is in maintenance)."""
    allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("true", "1")
    if uri.startswith("file:") and not allowed:
        raise UserError(
            f"the MLflow logger's store is the folder {uri}, which MLflow 3 opens only with "
            f"MLFLOW_ALLOW_FILE_STORE=true (file stores are in maintenance); set that, or use a database: "
            f"tracking_uri sqlite:///mlflow.db (the default) or a server's http:// address."
        )


def check_server(uri: str) -> None:
    """An ``http(s)`` tracking URI must answer (any HTTP answer will do; MLflow's server has ``/health``)."""
    if urllib.parse.urlparse(uri).scheme not in ("http", "https"):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=SERVER_TIMEOUT):
            pass
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        port = urllib.parse.urlparse(uri).port or 5000
        raise UserError(
            f"the MLflow logger cannot reach a tracking server at {uri} ({reason}); nothing was run. Start "
            f"one there (mlflow server --host 127.0.0.1 --port {port} --backend-store-uri "
            f"sqlite:///mlflow.db), or log without a server to a local store: set the logger's tracking_uri "
            f"or MLFLOW_TRACKING_URI to sqlite:///mlflow.db (or to file:./mlruns, with "
            f"MLFLOW_ALLOW_FILE_STORE=true). See docs/tracking.md."
        ) from None


def command_run_folder(trainer_config: Namespace) -> Path | None:
    """The run folder this command works in when the config already says which (a logger's pinned
    ``version``, or ``default_root_dir`` without a logger); None for a new run."""
    logger = folder_logger(trainer_config)
    if logger is None:
        root = trainer_config.get("default_root_dir")
        return Path(root).resolve() if root and not logger_configs(trainer_config) else None
    init_args = logger.init_args
    version = init_args.get("version")
    if version is None:
        return None
    first = Path(version).parts[0] if isinstance(version, str) else version_folder_name(version)
    return (Path(init_args.save_dir) / (init_args.get("name") or "") / first).resolve()


def recorded_trackers(config: Namespace) -> dict:
    """The tracker runs (``trackers.json``) of the run whose checkpoint this command works on, in that run's
    folder ({} for a new run, a checkpoint from elsewhere, or a run that logged to no tracker)."""
    ckpt_path = config.get("ckpt_path")
    if not is_checkpoint_file(ckpt_path):
        return {}
    run = run_folder_of(ckpt_path)
    if run is None or command_run_folder(config.trainer) != run:
        return {}
    return read_json(run / TRACKERS_FILE)


def follow_recorded_trackers(config: Namespace) -> None:
    """A command on a checkpoint of a run that logged to MLflow or W&B logs there too without being told
    again (docs/tracking.md): for each tracker run the run's ``trackers.json`` names whose kind of logger
    the config lacks, one is added (MLflow on that run's store, W&B in that run's project and files folder);
    ``continue_tracker_runs`` then points it at the run. Before :func:`check_trackers`, which checks its
    package and store as any logger's."""
    loggers = logger_configs(config.trainer)
    if not loggers:
        return  # no logger (--trainer.logger false) is a choice
    recorded = recorded_trackers(config)
    followed = (
        (MLFlowLogger, mlflow_logger(recorded.get("mlflow"))),
        (WandbLogger, wandb_logger(recorded.get("wandb"))),
    )
    added = [
        logger
        for cls, logger in followed
        if logger is not None and not any(is_a(given, cls) for given in loggers)  # given: continued as given
    ]
    if added:
        config.trainer.logger = [*loggers, *added]


def mlflow_logger(recorded: object) -> Namespace | None:
    """An MLflow logger on the store of the MLflow run ``trackers.json`` records, None without one."""
    if not isinstance(recorded, dict) or not recorded.get("run_id") or not recorded.get("tracking_uri"):
        return None
    return Namespace(
        class_path="lightning.pytorch.loggers.MLFlowLogger",
        init_args=Namespace(tracking_uri=recorded["tracking_uri"], run_id=None, log_model=False),
    )


def wandb_logger(recorded: object) -> Namespace | None:
    """A W&B logger in the project of the W&B run ``trackers.json`` records, its files where that run's are
    (the run's ``dir`` is ``<save_dir>/wandb/<run>/files``), None without one."""
    if not isinstance(recorded, dict) or not recorded.get("id") or not recorded.get("project"):
        return None
    init_args = Namespace(project=recorded["project"], id=None, version=None, log_model=False)
    files = Path(str(recorded.get("dir") or ""))
    if files.is_absolute() and len(files.parents) > 3 and files.parents[1].name == "wandb":
        init_args.save_dir = str(files.parents[2])
    return Namespace(class_path="lightning.pytorch.loggers.WandbLogger", init_args=init_args)


def continue_tracker_runs(config: Namespace, evaluation: str | None) -> None:
    """A command on a checkpoint of a run whose folder it works in (an evaluation kept with its run, a
    resumed fit) logs into that run's tracker runs, found in its ``trackers.json`` (MLflow: on the same
    tracking URI), without logging the hyperparameters again (they are there, and MLflow refuses a changed
    value: ``trainer.enable_autolog_hparams`` off); an ``evaluation`` of another checkpoint gets new
    tracker runs named after it."""
    ckpt_path = config.get("ckpt_path")
    if not is_checkpoint_file(ckpt_path):
        return
    recorded = recorded_trackers(config)
    named = f"{evaluation} {Path(ckpt_path).name}" if evaluation else None
    continued = False
    for logger in logger_configs(config.trainer):
        init_args = logger.init_args
        if is_a(logger, MLFlowLogger) and init_args.get("run_id") is None:
            mlflow = recorded.get("mlflow") or {}
            if mlflow.get("run_id") and mlflow.get("tracking_uri") == init_args.get("tracking_uri"):
                init_args.run_id, continued = mlflow["run_id"], True
            elif named:
                init_args.run_name = init_args.get("run_name") or named
                checkpoint = {"mnist_lightning.checkpoint": str(Path(ckpt_path).resolve())}
                init_args.tags = {**(init_args.get("tags") or {}), **checkpoint}
        elif is_a(logger, WandbLogger) and init_args.get("id") is None and init_args.get("version") is None:
            wandb = recorded.get("wandb") or {}
            if wandb.get("id") and wandb.get("project") == init_args.get("project"):
                init_args.id, continued = wandb["id"], True
            elif named:
                init_args.name = init_args.get("name") or named
    if continued:
        config.trainer.enable_autolog_hparams = False


def name_trial_runs(trainer_config: Namespace, trial: str, study: str) -> None:
    """A sweep trial's tracker runs: named after the trial, grouped under the study (MLflow: the experiment
    ``<experiment>/<study>``; W&B: the group ``<study>``)."""
    for logger in logger_configs(trainer_config):
        init_args = logger.init_args
        if is_a(logger, MLFlowLogger):
            init_args.experiment_name = f"{init_args.get('experiment_name') or 'lightning_logs'}/{study}"
            init_args.run_name = init_args.get("run_name") or trial
        elif is_a(logger, WandbLogger):
            init_args.name = init_args.get("name") or trial
            logger.dict_kwargs = {**(logger.get("dict_kwargs") or {}), "group": study}


def finish_tracker_runs(failed: bool) -> None:
    """End the W&B run this process has open: W&B keeps one per process, and the next WandbLogger (a sweep's
    next trial, the trial's test) would log into it. (MLflow's logger ends its runs itself.)"""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=1 if failed else 0)
