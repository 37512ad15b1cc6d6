"""The command line: LightningCLI over MNISTClassifier and MNISTDataModule, with checks before it runs."""

from __future__ import annotations

import copy
import difflib
import re
import signal
import sys
from typing import NoReturn

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

from mnist_lightning import compat
from mnist_lightning.callbacks.interrupt import InterruptCheckpoint
from mnist_lightning.callbacks.progress import ProgressBar, tell
from mnist_lightning.callbacks.run_folder import RunConfig, RunFolder
from mnist_lightning.checkpointing.checkpoint_io import AtomicCheckpointIO
from mnist_lightning.checkpointing.checkpoints import (
    check_architecture,
    is_checkpoint_file,
    read_checkpoint,
)
from mnist_lightning.checkpointing.trusted_classes import modules_named_in
from mnist_lightning.cli.checks import (
    check_accelerator,
    check_config_files,
    check_epochs,
    check_learning_rate,
    check_log_dir,
    drop_checkpoint_callbacks,
    drop_logger_callbacks,
)
from mnist_lightning.cli.ckpt_path import (
    EVALUATIONS,
    checkpoint_data,
    keep_evaluation_with_its_run,
    resolve_checkpoint_keyword,
)
from mnist_lightning.cli.console import (
    DEFAULT_CONFIG,
    LIGHTNING_COMMANDS,
    OPTIONS_HINT,
    exit_with_error,
    program_name,
    unknown_command,
)
from mnist_lightning.cli.evaluation_logger import log_as_the_run_did
from mnist_lightning.cli.loggers import (
    arrange_loggers,
    check_trackers,
    continue_tracker_runs,
    finish_tracker_runs,
    follow_recorded_trackers,
    give_run_folder,
)
from mnist_lightning.cli.parse_errors import rewrite, union_problem
from mnist_lightning.cli.process import exit_interrupted, prepare_process
from mnist_lightning.cli.quiet import EVALUATION_WARNINGS, RESUME_WARNINGS, ignore_warnings, quiet
from mnist_lightning.cli.resume import (
    RunComplete,
    add_init_from,
    announce_resume,
    continue_run,
    start_from_weights,
    user_args,
)
from mnist_lightning.data.datamodule import MNISTDataModule
from mnist_lightning.data.datasets import num_classes_of
from mnist_lightning.errors import UserError
from mnist_lightning.legacy import current_class_path
from mnist_lightning.models.classifier import MNISTClassifier
from mnist_lightning.models.nets import MLP, ConvNet
from mnist_lightning.schema import describe_class, tensorboard_hparams

DESCRIPTION = "Train and evaluate classifiers of MNIST, Fashion-MNIST and KMNIST with PyTorch Lightning."
TRUST_HINT = "name it yourself: --{where} {class_path} (or in a --config file)"
BATCH_LIMITS = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches")


class ConciseArgumentParser(LightningArgumentParser):
    """Reports a bad option, value or config file in one error line and a hint, not the whole usage block;
    refuses abbreviated options (``--trainer.max_epoch``), as a config file refuses an abbreviated key."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error:  # jsonargparse parsing internally; it expects the exception
            super().error(message, ex)
        if message.startswith(
            ('expected "subcommand"', "argument subcommand:")
        ):  # none, or not Lightning's four
            exit_with_error(unknown_command(_given_subcommand(message)))
        key = next(iter(re.findall(r'Parser key "([^"]+)"', message)), None)
        actions = [action for action in compat.parser_actions(self) if action.dest == key]
        class_paths = compat.known_class_paths(actions[0]) if actions else []
        exit_with_error(rewrite(message, class_paths) + self.suggestion(message), OPTIONS_HINT)

    def suggestion(self, message: str) -> str:
        """`` (did you mean --trainer.max_epochs?)`` for a misspelt or abbreviated option, else ""."""
        if not message.startswith("unrecognized arguments: "):
            return ""
        known = [option for action in compat.parser_actions(self) for option in action.option_strings]
        given = [arg.split("=", 1)[0] for arg in message.split()[2:] if arg.startswith("--")]
        matches = [match for arg in given for match in difflib.get_close_matches(arg, known, n=1)]
        return f" (did you mean {', '.join(matches)}?)" if matches else ""


@compat.merges_hyperparameters_of(lambda cli: cli.checkpoint)
class MNISTLightningCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict`` for the classifier, configured by YAML files.

    On top of LightningCLI: the data set's class count linked to the network and the metrics, checks of the
    settings, the log folder and ``--ckpt_path`` before anything starts (``last``/``best`` meaning the newest
    run's), the loggers set up so a run has its folder whatever they are and a tracker that cannot work is
    an error before training (``cli/loggers.py``), checkpoints loaded ``weights_only`` and written
    atomically, one saved on Ctrl-C/SIGTERM, and the best checkpoint printed when ``fit`` ends. Report and
    prediction files come from the callbacks the config lists (``mnist_lightning.callbacks``).
    """

    checkpoint: dict | None = None  # the --ckpt_path file, read once at parse time (checked, settings taken)
    init_checkpoint: dict | None = None  # fit --init_from: the checkpoint whose weights a new run starts from
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
        for choice in compat.subcommand_choices(self.parser):  # the list in the main --help
            choice.help = LIGHTNING_COMMANDS.get(choice.dest, choice.help)
        if "fit" in compat.subcommand_parsers(self):
            add_init_from(compat.subcommand_parsers(self)["fit"])
        for name, parser in compat.subcommand_parsers(self).items():  # the group of the method's own options
            for group, actions in compat.argument_groups(parser):
                own = any(action.dest == "ckpt_path" for action in actions)
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
                "model.net": {"class_path": "mnist_lightning.models.nets.MLP"},
            }
        )
        # jsonargparse resolves a short class name among every imported subclass of the type, and
        # torchvision.ops.MLP is one of nn.Module's: a Union tries the project's networks first
        for action in compat.parser_actions(parser):
            if action.dest == "model.net" and compat.has_type_hint(action):
                compat.set_type_hint(action, MLP | ConvNet | nn.Module)
        # Lightning types these Union[float, int]: "1" parsed as 1.0 meant 100%, not one batch
        for action in compat.parser_actions(parser):
            if action.dest.rsplit(".", 1)[-1] in BATCH_LIMITS and compat.has_type_hint(action):
                compat.set_type_hint(action, int | float | None)
        parser.link_arguments("data.dataset", "model.num_classes", compute_fn=num_classes_of)
        parser.link_arguments("data.dataset", "model.net.init_args.num_classes", compute_fn=num_classes_of)

    def parse_arguments(self, parser, args) -> None:
        args = with_default_config(sys.argv[1:] if args is None else args)
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        arrange_loggers(config.trainer)
        self.adjust_config(subcommand, config)
        check_learning_rate(config.model)
        check_accelerator(config.trainer)
        check_epochs(subcommand, config.trainer)
        if config.get("weights_only") is None:  # tensors and plain values only, also on torch < 2.6
            config.weights_only = True
        resolve_checkpoint_keyword(subcommand, config)
        ckpt_path, init_from = config.get("ckpt_path"), config.get("init_from")
        if init_from and ckpt_path:
            raise UserError(
                "--init_from starts a new run from a checkpoint's weights and --ckpt_path continues its run; "
                "give one of them."
            )
        if subcommand in EVALUATIONS:
            log_as_the_run_did(config, args)
            keep_evaluation_with_its_run(subcommand, config)
        give_run_folder(config.trainer)
        follow_recorded_trackers(config)
        check_trackers(config.trainer)
        continue_tracker_runs(config, subcommand if subcommand in EVALUATIONS else None)
        trusted = modules_named_in(
            config
        )  # the user's own classes: those their command line and configs name
        if init_from:
            self.init_checkpoint = read_checkpoint(init_from, trusted, TRUST_HINT)
            self.config = start_from_weights(parser, self.config, self.init_checkpoint, user_args(args))
        if is_checkpoint_file(ckpt_path):
            self.checkpoint = read_checkpoint(ckpt_path, trusted, TRUST_HINT)
            self.requested_net = copy.deepcopy(config.model.get("net"))
            if subcommand == "fit":
                self.config = continue_run(parser, self.config, self.checkpoint, user_args(args))
            data = checkpoint_data(self.config[subcommand], self.checkpoint, args)
            if data:  # parsed as if given, so the links (data.dataset -> num_classes) follow
                self.config = parser.parse_object({subcommand: {"data": data}}, self.config)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        net = config.model.get("net")
        if isinstance(net, Namespace) and net.get("class_path"):  # a checkpoint of the flat layout's classes
            net.class_path = current_class_path(net.class_path)
        if self.requested_net is not None and describe_net(net) != describe_net(self.requested_net):
            tell(
                None,
                f"The checkpoint's network, {describe_net(config.model.net)}, is used instead of the "
                f"{describe_net(self.requested_net)} the config asked for.",
            )
        if config.trainer.get("enable_checkpointing") is False:
            drop_checkpoint_callbacks(config.trainer)
        if self.subcommand == "fit":
            drop_logger_callbacks(config.trainer)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:  # a network, optimizer, scheduler or data setting refused its arguments
            cause = _user_error_in(err)
            if cause is not None:  # our own message, wrapped by jsonargparse
                raise cause from None
            raise UserError(
                f"invalid setting: {union_problem(str(err))} Check the model section of the config."
            ) from None

    def after_instantiate_classes(self) -> None:
        if self.init_checkpoint is not None:
            init_from = self.config[self.subcommand].init_from
            check_architecture(self.model, self.init_checkpoint, init_from)
            self.model.load_state_dict(self.init_checkpoint["state_dict"])
            tell(None, f"A new run starts from the weights of {init_from}.")
            self.init_checkpoint = None
        if self.checkpoint is not None:
            check_architecture(self.model, self.checkpoint, self.config[self.subcommand].ckpt_path)
            if self.subcommand == "fit":
                announce_resume(self.config.fit, self.checkpoint)
            self.checkpoint = None

    def instantiate_trainer(self, **kwargs) -> L.Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        bar = trainer.progress_bar_callback
        if type(bar) is TQDMProgressBar:  # Lightning's default: the same bar without v_num
            trainer.callbacks[trainer.callbacks.index(bar)] = ProgressBar()
        hyperparameters = tensorboard_hparams(self.config[self.subcommand].as_dict())
        if self.subcommand in EVALUATIONS:  # this command's, not those of the run that trained the checkpoint
            hyperparameters = {k: v for k, v in hyperparameters.items() if k not in ("seed", "max_epochs")}
        run_folder = RunFolder(hyperparameters)
        run_folder.note_new_folder(trainer)
        trainer.callbacks.insert(0, run_folder)
        check_log_dir(trainer)
        if self.subcommand in EVALUATIONS:  # the checkpoint's ModelCheckpoint bookkeeping is not used
            ignore_warnings(EVALUATION_WARNINGS)
        elif self.config[self.subcommand].get("ckpt_path"):  # resuming: the run's checkpoints are expected
            ignore_warnings(RESUME_WARNINGS)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        if trainer.checkpoint_callback is not None:  # checkpointing is on: also save one on Ctrl-C/SIGTERM
            trainer.callbacks.append(self.interrupt_checkpoint)
        return trainer

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        if self.trainer.is_global_zero and callback is not None and callback.best_model_path:
            print(f"Best checkpoint: {callback.best_model_path}")


def _given_subcommand(message: str) -> str | None:
    """The word of an ``invalid choice: 'fitt'`` message, None when no subcommand was given."""
    found = re.search(r"invalid choice: '([^']*)'", message)
    return found.group(1) if found else None


def _user_error_in(err: BaseException) -> UserError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, UserError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def with_default_config(args: list[str]) -> list[str]:
    """``args`` with ``--config DEFAULT_CONFIG`` first, so every command starts from the default recipe and
    the user's ``--config`` files and options change it. (Not jsonargparse's ``default_config_files``: 4.53
    drops the class_path of ``model.optimizer`` read from one, its default being a class.)"""
    args = [str(arg) for arg in args]
    at = 1 if args[:1] and args[0] in LIGHTNING_COMMANDS else 0
    return [*args[:at], "--config", str(DEFAULT_CONFIG), *args[at:]]


def describe_net(net: Namespace) -> str:
    """``ConvNet(channels=[16, 32])``: a network config in one short phrase, for messages."""
    return describe_class(net.as_dict(), str)


def build_cli(
    args: list[str] | None,
    *,
    cli_class: type[MNISTLightningCLI] = MNISTLightningCLI,
    interrupt_checkpoint: InterruptCheckpoint | None = None,
    **kwargs,
) -> MNISTLightningCLI:
    """The project's LightningCLI on ``args`` (``[subcommand, options...]``), run unless ``run=False``.

    ``main`` and each sweep trial go through here, so both get the same parser, presets and checks;
    ``kwargs`` go to LightningCLI (``trainer_defaults``, ``parser_kwargs``, ``run``, ...). A W&B run the
    command opened is ended when it returns (each trial its own).
    """
    try:
        cli = cli_class(
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
    except BaseException:
        finish_tracker_runs(failed=True)
        raise
    finish_tracker_runs(failed=False)
    return cli


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
        exit_with_error(str(err))
    except RunComplete as complete:
        print(complete)
    except SIGTERMException:  # a SystemExit without status; InterruptCheckpoint told where the checkpoint is
        exit_interrupted(interrupt_checkpoint.exit_status)
    except SystemExit:  # Lightning ends a run stopped at once (a second Ctrl-C) with status 1
        if interrupt_checkpoint.interrupted:
            exit_interrupted(interrupt_checkpoint.exit_status)
        raise
    except KeyboardInterrupt:  # Ctrl-C before the Trainer runs (then Lightning or InterruptCheckpoint acts)
        print("Interrupted (Ctrl-C) before the run started.", file=sys.stderr)
        exit_interrupted(128 + signal.SIGINT)
