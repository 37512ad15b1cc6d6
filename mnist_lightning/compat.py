"""Every use of a library's private attributes, in one place, each with the version it was written against.

The project leans on a few internals that no public API offers. Each is wrapped here in a function whose
docstring says what it reads or changes, why nothing public does, and which release it was checked on;
``tests/test_compat.py`` exercises each one, so an upgrade that moves an internal fails there, by name,
rather than somewhere deep in a run. Heavy libraries are imported inside the functions: importing this
module costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

# --- Lightning 2.6 (lightning.pytorch) ----------------------------------------------------------------------


def hyperparameters_given_by_cli() -> bool:
    """Whether the LightningModule being built is being built by LightningCLI, which passes the parsed config
    to ``save_hyperparameters`` (``_given_hyperparameters``, a ContextVar of lightning 2.6's hparams mixin):
    the network is then saved as its class_path and init_args, so a checkpoint rebuilds its own network."""
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    return bool(_given_hyperparameters.get())


def set_type_hint(action: Any, hint: Any) -> None:
    """Retype a LightningCLI option (jsonargparse 4.4x keeps an action's type as ``_typehint``)."""
    action._typehint = hint


def has_type_hint(action: Any) -> bool:
    return hasattr(action, "_typehint")


def parser_actions(parser: Any) -> list[Any]:
    """The actions of an argparse parser (``_actions``: argparse has no public list of them)."""
    return parser._actions


def known_class_paths(action: Any) -> list[str]:
    """The class paths an option of a class type accepts, as its ``--help`` lists them ("known subclasses"):
    jsonargparse 4.53's ``get_all_subclass_paths`` of the action's ``_typehint``; nothing public lists them.
    Used to suggest the close names when a class name is misspelt."""
    from jsonargparse._typehints import get_all_subclass_paths

    hint = getattr(action, "_typehint", None)
    try:
        return get_all_subclass_paths(hint) if hint is not None else []
    except Exception:  # a type hint with no classes in it
        return []


def subcommand_choices(parser: Any) -> list[Any]:
    """The entries of the subcommand list in the main ``--help`` (argparse's ``_subcommands_action`` of
    jsonargparse, its ``_choices_actions``), to give each its sentence."""
    return parser._subcommands_action._choices_actions


def subcommand_parsers(cli: Any) -> dict[str, Any]:
    """LightningCLI's parser of each subcommand (``_subcommand_parsers``, lightning 2.6)."""
    return cli._subcommand_parsers


def argument_groups(parser: Any) -> Iterator[tuple[Any, list[Any]]]:
    """Each argument group of a parser with its actions (argparse's ``_action_groups``/``_group_actions``),
    to title the group of a subcommand's own options."""
    for group in parser._action_groups:
        yield group, group._group_actions


def parse_without_defaults(parser: Any, args: list[str]) -> Any:
    """What ``args`` alone set (the command line and the ``--config`` files it names), as a Namespace:
    jsonargparse's ``parse_args(defaults=False)`` with its argument links skipped (``skip_apply_links``: a
    link's source, ``data.dataset``, is unset then and the link would fail) and without validation (the
    private keyword ``_skip_validation``: required options are unset too). Checked on jsonargparse 4.53."""
    from jsonargparse._link_arguments import skip_apply_links

    with skip_apply_links():
        return parser.parse_args(args, defaults=False, _skip_validation=True)


def attached_trainer(module: Any) -> Any:
    """The Trainer a LightningModule is attached to, or None (``_trainer``, lightning 2.6: the public
    ``module.trainer`` raises when there is none, and a checkpoint can be saved from a detached module)."""
    return module._trainer


def restarted_mid_epoch(trainer: Any) -> bool:
    """Whether this fit resumed from a checkpoint saved in the middle of an epoch (``fit_loop``, a
    ``_FitLoop``, lightning 2.6: Lightning says so nowhere public)."""
    return trainer.fit_loop.restarted_mid_epoch


def training_batches_completed(trainer: Any) -> int:
    """Training batches of the current epoch whose every hook has run (the loop's ``batch_progress``,
    lightning 2.6: no public counter; ``trainer.global_step`` counts optimizer steps, across epochs)."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.completed


def training_batches_processed(trainer: Any) -> int:
    """Training batches of the current epoch whose optimizer step is done, their end-of-batch hooks perhaps
    not yet (see :func:`training_batches_completed`); what a checkpoint saved at a batch's end has trained."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def on_last_batch_of_epoch(trainer: Any) -> bool:
    """Whether the training batch running now is the epoch's last (``batch_progress.is_last_batch``,
    lightning 2.6)."""
    return trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


def runs_no_subcommand(cli_class: type) -> type:
    """A LightningCLI class that parses a subcommand's configuration and builds its objects but does not run
    it (``_run_subcommand``, lightning 2.6, replaced by nothing): ``LightningCLI(run=False)`` would parse
    without the subcommand, and so without its options (``--ckpt_path``) and its checks."""
    names = {name: getattr(cli_class, name) for name in ("__module__", "__qualname__", "__doc__")}
    return type(cli_class.__name__, (cli_class,), {**names, "_run_subcommand": lambda self, subcommand: None})


def merges_hyperparameters_of(checkpoint_of: Callable[[Any], dict | None]) -> Callable[[type], type]:
    """A class decorator: the LightningCLI class merges the hyperparameters of the checkpoint
    ``checkpoint_of(cli)`` returns (the ``--ckpt_path`` file the command already read and checked) into
    its config, instead of loading the file once more for them.

    LightningCLI's ``_parse_ckpt_path`` (lightning 2.6, called between parsing and building the objects,
    replaceable through nothing public) ``torch.load``s the whole ``--ckpt_path`` file to merge its
    ``hyper_parameters`` into the model's config; this does the same merge, as lightning 2.6 writes it,
    from the dict in hand. Where ``checkpoint_of`` returns None, Lightning's own method runs."""
    import copy
    import sys

    def decorate(cli_class: type) -> type:
        lightnings = cli_class._parse_ckpt_path

        def _parse_ckpt_path(self) -> None:
            checkpoint = checkpoint_of(self) if self.config.get("subcommand") else None
            if checkpoint is None:
                return lightnings(self)
            hparams = copy.deepcopy(checkpoint.get("hyper_parameters") or {})
            hparams.pop("_instantiator", None)
            if not hparams:
                return None
            if "_class_path" in hparams:
                hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
            try:
                self.config = self.parser.parse_object(
                    {self.config.subcommand: {"model": hparams}}, self.config
                )
            except SystemExit:
                sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
                raise
            return None

        names = {name: getattr(cli_class, name) for name in ("__module__", "__qualname__", "__doc__")}
        return type(cli_class.__name__, (cli_class,), {**names, "_parse_ckpt_path": _parse_ckpt_path})

    return decorate


def logging_step(trainer: Any) -> int:
    """The step Lightning logs epoch metrics at (``fit_loop.epoch_loop._batches_that_stepped``, lightning
    2.6; ``trainer.global_step`` counts optimizer steps, and an evaluation does not restore it)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def set_logging_step(trainer: Any, step: int, epoch: int | None = None) -> None:
    """Log an evaluation's metrics at ``step`` (see :func:`logging_step`), e.g. its checkpoint's, and with
    ``epoch`` as the ``epoch`` value Lightning adds to them (``trainer.current_epoch``, which is
    ``fit_loop.epoch_progress.current.completed`` in lightning 2.6 and has no setter; an evaluation does not
    restore it either, and a tracker run that holds the training's curves would get an epoch 0 at its end)."""
    trainer.fit_loop.epoch_loop._batches_that_stepped = step
    if epoch is not None:
        trainer.fit_loop.epoch_progress.current.completed = epoch


def skip_callback_hooks_that_do_nothing() -> None:
    """Make Lightning call a callback's hook only where the callback overrides ``Callback``'s, which does
    nothing, until :func:`call_every_callback_hook`. Lightning's ``trainer.call._call_callback_hooks`` calls
    every hook of every callback, each inside a profiler context with a name built from ``state_key``: about
    8 hooks per training step times the recipe's 14 callbacks, of which a handful do something. Nothing
    public decides which hooks are called (the time it saves: docs/performance.md). Replaces the module
    function that the loops call (``call._call_callback_hooks``) with a copy of it that leaves such calls
    out; the function is the same in every lightning release from 2.5.0 to 2.6.6 (``tests/test_compat.py``
    compares its source). Applied by the commands that train (``cli/process.py``), undone when the command
    returns (``cli/main.py``), so a Trainer of the user's own outside the command line is not affected."""
    from lightning.pytorch.callbacks import Callback, Checkpoint, EarlyStopping
    from lightning.pytorch.trainer import call

    monitoring = (EarlyStopping, Checkpoint)  # Lightning's "monitoring callbacks"
    if getattr(call._call_callback_hooks, "skips_hooks_that_do_nothing", False):
        return
    overridden: dict[tuple[type, str], bool] = {}

    def does_something(callback: Any, hook_name: str) -> bool:
        key = (type(callback), hook_name)
        if key not in overridden:
            own, base = getattr(type(callback), hook_name, None), getattr(Callback, hook_name, None)
            overridden[key] = own is not base
        return overridden[key] or hook_name in vars(callback)

    def _call_callback_hooks(trainer, hook_name, *args, monitoring_callbacks=None, **kwargs) -> None:
        callbacks = [callback for callback in trainer.callbacks if does_something(callback, hook_name)]
        if monitoring_callbacks is True:
            callbacks = [callback for callback in callbacks if isinstance(callback, monitoring)]
        elif monitoring_callbacks is False:
            callbacks = [callback for callback in callbacks if not isinstance(callback, monitoring)]
        if not callbacks:
            return
        pl_module = trainer.lightning_module
        if pl_module:
            previous_fx_name, pl_module._current_fx_name = pl_module._current_fx_name, hook_name
        for callback in callbacks:
            fn = getattr(callback, hook_name)
            if callable(fn):
                with trainer.profiler.profile(f"[Callback]{callback.state_key}.{hook_name}"):
                    fn(trainer, trainer.lightning_module, *args, **kwargs)
        if pl_module:
            pl_module._current_fx_name = previous_fx_name

    _call_callback_hooks.skips_hooks_that_do_nothing = True
    _call_callback_hooks.replaces = call._call_callback_hooks
    call._call_callback_hooks = _call_callback_hooks


def call_every_callback_hook() -> None:
    """Undo :func:`skip_callback_hooks_that_do_nothing` (Lightning's own function again); imports nothing."""
    import sys

    call = sys.modules.get("lightning.pytorch.trainer.call")
    replaced = getattr(call, "_call_callback_hooks", None)
    if getattr(replaced, "skips_hooks_that_do_nothing", False):
        call._call_callback_hooks = replaced.replaces


def tensorboard_event_file(logger: Any) -> str:
    """The event file a TensorBoardLogger writes (tensorboard's ``EventFileWriter._file_name``, 2.x, behind
    torch's ``SummaryWriter.file_writer.event_writer``: no public accessor)."""
    return logger.experiment.file_writer.event_writer._file_name


def add_hparams_summary(
    logger: Any,
    hyperparameters: dict[str, Any],
    metric_names: tuple[str, ...],
    step: int,
    experiment: bool = True,
):
    """Write the HPARAMS tab's summary of a run into a TensorBoardLogger's event file; ``experiment=False``
    leaves out the list of columns (the tab takes the first it finds), for a session in a fit's run.

    ``TensorBoardLogger.log_hyperparams(params, metrics)`` writes the same summary, but also logs each
    metric's placeholder value as a real scalar (a ``val_acc_best`` and a ``test_acc`` of 0 at the first
    step of every run's curves) and merges the flat view into ``hparams.yaml``, which ``runs`` reads; so the
    summary is written here with torch's public ``hparams()`` through the writer's ``_get_file_writer()``
    (torch 2.4-2.15), the metrics' values coming from the scalars the run logs under the same names.
    """
    from torch.utils.tensorboard.summary import hparams

    writer = logger.experiment._get_file_writer()
    summaries = hparams(hyperparameters, dict.fromkeys(metric_names, 0.0))  # experiment, session start, end
    for summary in summaries if experiment else summaries[1:]:
        writer.add_summary(summary, step)
    writer.flush()


def tensorboard_experiment_if_open(logger: Any) -> Any:
    """A TensorBoardLogger's SummaryWriter if it was created (``_experiment``; ``logger.experiment`` would
    create one and a folder with it)."""
    return logger._experiment


def mlflow_tracking_uri(logger: Any) -> str:
    """The tracking URI an MLFlowLogger logs to (``_tracking_uri``, lightning 2.6: no public accessor; its
    ``save_dir`` gives only a ``file:`` store's folder), recorded so an evaluation finds the run again."""
    return logger._tracking_uri


# --- Optuna 4.x-5.x ----------------------------------------------------------------------------------------


def storage_of(study: Any) -> Any:
    """The storage a Study was opened on (``Study._storage``): Optuna has no public accessor, and the sweep
    marks trials of dead processes and writes heartbeats through it."""
    return study._storage


def trial_id_of(trial: Any) -> int:
    """The storage id of a Trial or FrozenTrial (``_trial_id``), which storage methods take."""
    return trial._trial_id


# --- LitServe 0.2.19 -------------------------------------------------------------------------------------


def replace_litserve_queues(
    server: Any, request_queue: Callable[[], Any], answer_transport: Callable[[int], Any]
) -> None:
    """Give a ``litserve.LitServer`` other queues between its processes: ``request_queue()`` for each
    endpoint's requests, ``answer_transport(number of HTTP processes)`` (a LitServe ``MessageTransport``) for
    the answers.

    LitServe 0.2.19 has no option for them: ``LitServer._init_manager`` (run by ``LitServer.run``, before
    it starts the workers and the HTTP processes) makes them, as queues of a ``multiprocessing.Manager``,
    into ``litapi_request_queues`` and ``_transport``. This wraps ``_init_manager`` to replace both once it
    has made them (its Manager still holds LitServe's other shared state). What replaces them must survive
    being inherited by forked processes (the HTTP processes) and pickled for spawned ones (the workers).
    ``fast_queue=True``, LitServe's own alternative for the answers, has no effect in 0.2.19 (issue #751).
    """
    init_manager = server._init_manager

    def init_manager_then_replace_queues(num_api_servers: int):
        manager = init_manager(num_api_servers)
        for path in server.litapi_request_queues:
            server.litapi_request_queues[path] = request_queue()
        server._transport = answer_transport(num_api_servers)
        return manager

    server._init_manager = init_manager_then_replace_queues
