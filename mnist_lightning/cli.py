"""The command line: LightningCLI over MNISTClassifier and MNISTDataModule, with checks before it runs."""

from __future__ import annotations

import copy
import ctypes
import os
import pydoc
import signal
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.callbacks import Checkpoint, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mnist_lightning.checkpoints import (
    CKPT_KEYWORDS,
    best_checkpoint_of,
    check_architecture,
    find_resumable,
    read_checkpoint,
)
from mnist_lightning.commands import LIGHTNING_COMMANDS, program_name
from mnist_lightning.data import MNISTDataModule
from mnist_lightning.datasets import num_classes_of
from mnist_lightning.errors import UserError, first_line
from mnist_lightning.fault_tolerance import AtomicCheckpointIO, InterruptCheckpoint
from mnist_lightning.model import MNISTClassifier
from mnist_lightning.quiet import EVALUATION_WARNINGS, ProgressBar, ignore_warnings, quiet
from mnist_lightning.run_folder import RunConfig, RunFolder, flat_hyperparameters, run_folder_of

EVALUATIONS = ("validate", "test", "predict")
DESCRIPTION = "Train and evaluate classifiers of MNIST, Fashion-MNIST and KMNIST with PyTorch Lightning."
BATCH_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")


class ConciseArgumentParser(LightningArgumentParser):
    """Reports a bad option, value or config file in one error line and a hint, not the whole usage block."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse parsing internally; it expects the exception
            super().error(message, ex)
        sys.stderr.write(f"error: {message}\n(run with --help to list the accepted options)\n")
        self.exit(2)


@rank_zero_only
def say(message: str) -> None:
    """Print once, on the first process of a distributed run."""
    print(message, flush=True)


def check_learning_rate(model_config: Namespace) -> None:
    """Reject a learning rate <= 0 at parse time (the optimizer itself is only built when training starts)."""
    optimizer = model_config.get("optimizer")
    init_args = optimizer.get("init_args") if isinstance(optimizer, Namespace) else None
    lr = init_args.get("lr") if isinstance(init_args, Namespace) else None
    if lr is not None and not lr > 0:
        raise UserError(f"model.optimizer.init_args.lr (the learning rate) must be greater than 0, got {lr}.")


def resolve_checkpoint_keyword(subcommand: str, config: Namespace) -> None:
    """``--ckpt_path last`` or ``best``: a checkpoint of the newest run under the logger's folder.

    ``fit --ckpt_path last`` continues that run in its own folder: it resumes from the newest ``last.ckpt``
    or ``interrupted.ckpt`` in ``<save_dir>/<name>/*/checkpoints/`` and pins the logger's version to that
    run, so its curves, checkpoints and config go on in the same folder; with no checkpoint there yet it
    starts a new run, so one command both starts and resumes a job. ``validate``, ``test`` and ``predict``
    take that run's newest checkpoint (``last``) or its best one (``best``).
    """
    keyword = config.get("ckpt_path")
    if subcommand in EVALUATIONS and not keyword:
        raise UserError(
            f"{subcommand} evaluates a trained checkpoint: pass --ckpt_path best|last|<file> (best or last: "
            f"that checkpoint of the newest run under the logger's folder; <file>: a .ckpt written by 'fit')."
        )
    if keyword not in ("last", "best"):
        return
    logger = config.trainer.get("logger")
    init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
    if not isinstance(init_args, Namespace) or init_args.get("save_dir") is None:
        raise UserError(
            f"--ckpt_path {keyword} looks for the newest run under the logger's save_dir, but no single "
            f"logger with a save_dir is configured; pass the checkpoint file itself."
        )
    log_root = Path(init_args.save_dir) / (init_args.get("name") or "")
    newest = find_resumable(log_root)
    if subcommand == "fit":
        if keyword == "best":
            raise UserError("fit resumes from --ckpt_path last or from a checkpoint file, not from 'best'.")
        if newest is None:
            say(f"No checkpoint to resume under '{log_root}': starting a new run.")
            config.ckpt_path = None
            return
        init_args.version = newest.parent.parent.name
        say(f"Resuming from {newest}; this run continues in {newest.parent.parent}.")
    elif newest is None:
        raise UserError(f"--ckpt_path {keyword}: no checkpoint under '{log_root}' yet; run 'fit' first.")
    config.ckpt_path = str(newest if keyword == "last" else best_checkpoint_of(newest))


def keep_evaluation_with_its_run(config: Namespace) -> None:
    """Evaluating a checkpoint of a run under the log folder (``version_N/checkpoints/``, a sweep's
    ``trial_N/checkpoints/``): log into that run itself, so its test metrics sit beside its training curves
    and its files under ``<run>/<stage>/<checkpoint>/``. A checkpoint from elsewhere gets a new run folder,
    as Lightning's logger picks (its own folder may be another project's, or read-only)."""
    logger = config.trainer.get("logger")
    init_args = logger.get("init_args") if isinstance(logger, Namespace) else None
    if not isinstance(init_args, Namespace) or init_args.get("save_dir") is None:
        return
    run = run_folder_of(config.ckpt_path)
    log_root = Path(init_args.save_dir).resolve()
    if run is None or init_args.get("version") is not None or not run.is_relative_to(log_root):
        return
    if run.parent != log_root / (init_args.get("name") or ""):  # deeper down, e.g. lightning_logs/sweeps/s/
        init_args.save_dir = str(Path(init_args.save_dir) / run.parent.relative_to(log_root))
        init_args.name = ""
    init_args.version = run.name


def check_log_dir(trainer: L.Trainer) -> None:
    """Fail before anything runs when the folder for logs and checkpoints cannot be created or written."""
    logger = trainer.logger
    folder = Path(logger.save_dir if logger is not None and logger.save_dir else trainer.default_root_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise UserError(
            f"cannot write logs and checkpoints to '{folder}' ({err.strerror or err}). Choose a writable "
            f"folder with --trainer.logger.init_args.save_dir (and --trainer.default_root_dir)."
        ) from None


def drop_checkpoint_callbacks(trainer_config: Namespace) -> None:
    """With ``--trainer.enable_checkpointing=false``, leave out the checkpoint callbacks a config lists.

    Lightning refuses a Trainer that has checkpointing off and a ``ModelCheckpoint`` in its callbacks, and
    ``configs/default.yaml`` lists two; turning checkpointing off on the command line means leaving them out.
    """
    callbacks = trainer_config.get("callbacks") or []
    kept = [callback for callback in callbacks if not _is_checkpoint(callback)]
    if len(kept) < len(callbacks):
        trainer_config.callbacks = kept
        say("trainer.enable_checkpointing=false: the config's checkpoint callbacks are left out.")


def _is_checkpoint(callback: Namespace) -> bool:
    cls = pydoc.locate(callback.get("class_path", ""))
    return isinstance(cls, type) and issubclass(cls, Checkpoint)


class MNISTLightningCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict`` for the classifier, configured by YAML files.

    On top of LightningCLI: the data set's class count linked to the network and the metrics, checks of the
    settings, the log folder and ``--ckpt_path`` before anything starts (``last``/``best`` meaning the newest
    run's), checkpoints loaded ``weights_only`` and written atomically, one saved on Ctrl-C/SIGTERM, and the
    best checkpoint printed when ``fit`` ends. Report and prediction files come from the callbacks the config
    lists (``mnist_lightning.callbacks``).
    """

    checkpoint: dict | None = None  # the --ckpt_path file, read at parse time, checked against the model
    requested_net: Namespace | None = None  # model.net as the config and command line gave it

    def __init__(
        self, *args, interrupt_checkpoint: InterruptCheckpoint, only: str | None = None, **kwargs
    ) -> None:
        self.interrupt_checkpoint = interrupt_checkpoint
        self.only = only
        super().__init__(*args, **kwargs)

    def adjust_config(self, subcommand: str, config: Namespace) -> None:
        """Change the parsed configuration before it is checked: a hook for subclasses (sweep trials)."""

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict, subparser_kwargs: dict) -> None:
        """The parsers, each subcommand described by its whole sentence in LIGHTNING_COMMANDS."""
        for name, description in LIGHTNING_COMMANDS.items():
            subparser_kwargs.setdefault(name, {}).setdefault("description", description)
        super().setup_parser(add_subcommands, main_kwargs, subparser_kwargs)
        if not add_subcommands:
            return
        for choice in self.parser._subcommands_action._choices_actions:  # the list in the main --help
            choice.help = LIGHTNING_COMMANDS.get(choice.dest, choice.help)
        for name, parser in self._subcommand_parsers.items():  # the group of the method's own arguments
            for group in parser._action_groups:
                own = any(action.dest == "ckpt_path" for action in group._group_actions)
                if name in LIGHTNING_COMMANDS and own:
                    group.title = LIGHTNING_COMMANDS[name].rstrip(".")

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        """Only the subcommand being run gets a parser (each one takes a fifth of a second to build)."""
        everything = LightningCLI.subcommands()
        return {self.only: everything[self.only]} if self.only in everything else everything

    def add_arguments_to_parser(self, parser) -> None:
        # The data module shards every split itself, exactly (no padded or repeated samples under DDP).
        parser.set_defaults(
            {
                "trainer.use_distributed_sampler": False,
                "model.net": {"class_path": "mnist_lightning.nets.MLP"},
            }
        )
        # Lightning types these Union[float, int]: "1" parsed as 1.0 meant 100%, not one batch
        for action in parser._actions:
            if action.dest.rsplit(".", 1)[-1] in BATCH_LIMITS and hasattr(action, "_typehint"):
                action._typehint = int | float | None
        parser.link_arguments("data.dataset", "model.num_classes", compute_fn=num_classes_of)
        parser.link_arguments("data.dataset", "model.net.init_args.num_classes", compute_fn=num_classes_of)

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        self.adjust_config(subcommand, config)
        check_learning_rate(config.model)
        check_accelerator(config.trainer)
        check_epochs(subcommand, config.trainer)
        if config.get("weights_only") is None:  # tensors and plain values only, also on torch < 2.6
            config.weights_only = True
        resolve_checkpoint_keyword(subcommand, config)
        ckpt_path = config.get("ckpt_path")
        if subcommand in EVALUATIONS:
            keep_evaluation_with_its_run(config)
        if ckpt_path and ckpt_path not in CKPT_KEYWORDS and not ckpt_path.startswith("registry:"):
            self.checkpoint = read_checkpoint(ckpt_path)
            self.requested_net = copy.deepcopy(config.model.get("net"))

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        if self.requested_net is not None and config.model.get("net") != self.requested_net:
            say(
                f"The checkpoint holds a {describe_net(config.model.net)}; it is used instead of the "
                f"{describe_net(self.requested_net)} the config asked for."
            )
        trained_on = (self.checkpoint or {}).get("datamodule_hyper_parameters", {}).get("dataset")
        if trained_on and trained_on != config.data.dataset:
            say(f"Note: the checkpoint was trained on {trained_on}; this run uses {config.data.dataset}.")
        if config.trainer.get("enable_checkpointing") is False:
            drop_checkpoint_callbacks(config.trainer)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:  # a network, optimizer, scheduler or data setting refused its arguments
            cause = _user_error_in(err)
            if cause is not None:  # our own message, wrapped by jsonargparse
                raise cause from None
            raise UserError(
                f"invalid setting: {first_line(err)} Check the model section of the config."
            ) from None

    def after_instantiate_classes(self) -> None:
        if self.checkpoint is not None:
            check_architecture(self.model, self.checkpoint, self.config[self.subcommand].ckpt_path)
            self.checkpoint = None

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        bar = trainer.progress_bar_callback
        if type(bar) is TQDMProgressBar:  # Lightning's default: the same bar without v_num
            trainer.callbacks[trainer.callbacks.index(bar)] = ProgressBar()
        run_folder = RunFolder(flat_hyperparameters(self.config[self.subcommand]))
        run_folder.note_new_folder(trainer)
        trainer.callbacks.insert(0, run_folder)
        check_log_dir(trainer)
        if self.subcommand in EVALUATIONS:  # the checkpoint's ModelCheckpoint bookkeeping is not used
            ignore_warnings(EVALUATION_WARNINGS)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.checkpoint_callback is not None:  # checkpointing is on: also save one on Ctrl-C/SIGTERM
            trainer.callbacks.append(self.interrupt_checkpoint)
        return trainer

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        if self.trainer.is_global_zero and callback is not None and callback.best_model_path:
            print(f"Best checkpoint: {callback.best_model_path}")


def _user_error_in(err: BaseException) -> UserError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def check_config_files(args: list[str] | None) -> None:
    """A YAML syntax error in a ``--config`` file, reported with that file's name and the line."""
    args = sys.argv[1:] if args is None else args
    for index, arg in enumerate(args):
        path = args[index + 1] if arg == "--config" and index + 1 < len(args) else None
        path = arg.split("=", 1)[1] if arg.startswith("--config=") else path
        if path is None or not Path(path).is_file():
            continue
        import yaml

        try:
            yaml.safe_load(Path(path).read_text())
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
            problem = getattr(err, "problem", None) or first_line(err)
            raise UserError(f"--config {path}: not valid YAML{line}: {problem}.") from None


def check_accelerator(trainer_config: Namespace) -> None:
    """A GPU asked for (``--trainer.accelerator gpu``, a gpu/ddp/multinode preset) where there is none."""
    import torch

    accelerator = str(trainer_config.get("accelerator") or "auto")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        has = "an Apple GPU (MPS)" if torch.backends.mps.is_available() else "no GPU that torch can use"
        raise UserError(
            f"trainer.accelerator is '{accelerator}' (set by --trainer.accelerator or a gpu/ddp/multinode "
            f"preset), but this machine has {has}. Run here with --config configs/cpu.yaml (or "
            f"--trainer.accelerator cpu, plus --trainer.devices 2 --trainer.strategy ddp to try DDP)."
        )


def check_epochs(subcommand: str, trainer_config: Namespace) -> None:
    """``max_epochs 0`` would train nothing; ``-1`` trains until stopped, which is said up front."""
    if subcommand != "fit":
        return
    epochs, steps = trainer_config.get("max_epochs"), trainer_config.get("max_steps")
    if epochs == 0 or (epochs is not None and epochs < -1):
        raise UserError(f"trainer.max_epochs must be at least 1 (or -1: until stopped), got {epochs}.")
    if epochs == -1 and (steps is None or steps < 0) and not trainer_config.get("max_time"):
        say("trainer.max_epochs is -1: training goes on until you stop it (Ctrl-C saves a checkpoint).")


def describe_net(net: Namespace) -> str:
    """``ConvNet(channels=[16, 32])``: a network config in one short phrase, for messages."""
    name = net.class_path.rsplit(".", 1)[-1]
    init_args = net.get("init_args") or {}
    arguments = ", ".join(f"{key}={value}" for key, value in dict(init_args).items() if key != "num_classes")
    return f"{name}({arguments})"


def _skip_nvml_probe_without_nvml() -> None:
    """Stop torch from looking for the NVIDIA driver library on every optimizer step where it is absent.

    ``import lightning`` sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, which makes ``torch.cuda.is_available()``
    try to load ``libnvidia-ml.so.1`` on each call, and Adam asks once per step. Where that library does not
    load, torch falls back to ``cudaGetDeviceCount`` anyway, so unsetting the variable gives the same answer
    without a failed library search per step (about 40 µs a step on a 2-core CPU: 2% of the default epoch).
    """
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def prepare_process() -> None:
    """Process-wide settings every command that trains needs (``main`` and the sweep call it)."""
    _skip_nvml_probe_without_nvml()
    # Redraw the progress bar every 50 steps, not every step (a visible cost for a model this small);
    # Lightning's TQDMProgressBar honours this variable, and users can still set it themselves.
    os.environ.setdefault("TQDM_MINITERS", "50")


def build_cli(
    args: list[str] | None,
    *,
    cli_class: type[MNISTLightningCLI] = MNISTLightningCLI,
    interrupt_checkpoint: InterruptCheckpoint | None = None,
    **kwargs,
) -> MNISTLightningCLI:
    """The project's LightningCLI on ``args`` (``[subcommand, options...]``), run unless ``run=False``.

    ``main`` and each sweep trial go through here, so both get the same parser, presets and checks;
    ``kwargs`` go to LightningCLI (``trainer_defaults``, ``parser_kwargs``, ``run``, ...).
    """
    return cli_class(
        MNISTClassifier,
        MNISTDataModule,
        auto_configure_optimizers=False,
        save_config_callback=RunConfig,
        save_config_kwargs={"overwrite": True},
        interrupt_checkpoint=interrupt_checkpoint or InterruptCheckpoint(),
        parser_class=ConciseArgumentParser,
        args=args,
        **kwargs,
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m mnist_lightning`` and the ``mnist-lightning`` command."""
    prepare_process()
    interrupt_checkpoint = InterruptCheckpoint()
    try:
        check_config_files(args)
        with quiet():
            build_cli(
                args,
                interrupt_checkpoint=interrupt_checkpoint,
                parser_kwargs={"prog": program_name(), "description": DESCRIPTION},
                only=next(iter(sys.argv[1:] if args is None else args), None),
            )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except SIGTERMException:  # a SystemExit without status; InterruptCheckpoint told where the checkpoint is
        exit_interrupted(interrupt_checkpoint.exit_status)
    except SystemExit:  # Lightning ends a run stopped at once (a second Ctrl-C) with status 1
        if interrupt_checkpoint.interrupted:
            exit_interrupted(interrupt_checkpoint.exit_status)
        raise
    except KeyboardInterrupt:  # Ctrl-C before the Trainer runs (then Lightning or InterruptCheckpoint acts)
        print("Interrupted (Ctrl-C) before the run started.", file=sys.stderr)
        exit_interrupted(128 + signal.SIGINT)


def exit_interrupted(status: int) -> NoReturn:
    """Exit with ``status`` (130 or 143), ignoring further Ctrl-Cs: they would break the exit handlers of
    torch, TensorBoard and tqdm with a traceback (the Trainer restores the default handler when it ends)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(status) from None
