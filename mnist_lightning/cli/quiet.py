"""The warnings policy: a clean terminal, the metrics and the result, without notices that do not apply.

Each notice is silenced at its source and only where it does not apply to this project; everything else,
including a user's own warnings, still shows. Every filter is set by the command that runs, inside
:func:`quiet` (:func:`quiet_trials` for a sweep's trials, :func:`ignoring` for one call), and undone when it
ends, so a Python API user or a longer-lived process (a notebook, a test runner) keeps the filters it had.
This is the only module that changes warning filters or log levels.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator

from mnist_lightning.errors import UserError

# (message regex, module regex): the warnings that never apply to this project's runs
IRRELEVANT_WARNINGS = (
    # Lightning's own pytree helper calls a torch API that torch has deprecated; nothing a user can change
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch\.utilities\._pytree"),
    # main() passes the arguments it was given, which may also be the process's own
    (r"LightningCLI's args parameter is intended to run from within Python", r"lightning\.pytorch\.cli"),
    # Lightning cannot make a custom batch sampler keep the last, partial batch when predicting;
    # ShardedBatchSampler never drops a sample, so the warning does not apply
    (r"You are using a custom batch sampler `ShardedBatchSampler`", r"lightning\.pytorch\."),
    # jsonargparse (4.51) names the subclasses of an option's type in its error message, and warns of each it
    # cannot name: e.g. pydantic.v1's ConstrainedInt, a subclass of int, once FastAPI has imported pydantic.v1
    # in the process. Not the user's classes, nor their mistake, which the error message names
    (r"\s*Hit failing import with following error", r"jsonargparse\._typehints"),
)
# resuming a run (fit --ckpt_path): its checkpoint folder holds the run's earlier checkpoints, as it should
RESUME_WARNINGS = ((r"Checkpoint directory .* exists and is not empty", r"lightning\.pytorch\."),)
# evaluating a checkpoint: its ModelCheckpoint's "best" bookkeeping is not used, so neither its folder nor
# whether the evaluation's callbacks are those that wrote it matter
EVALUATION_WARNINGS = (
    (r"The dirpath has changed from", r"lightning\.pytorch\.callbacks\.model_checkpoint"),
    (r"Be aware that when using `ckpt_path`, callbacks used to create", r"lightning\.pytorch\.trainer\.call"),
)
# torch.export.save (torch 2.14) of a network with channels_last weights (ConvNet): a weight that is not
# contiguous never counts as "complete", so torch warns and writes the weight's whole storage, with its
# strides and offset, which torch.export.load reads back as it was. The caveat ("when your weights are not
# on CPU") does not apply: export loads the checkpoint on the CPU. Its check against the checkpoint would
# catch a file that differs.
PT2_WRITER_WARNINGS = ((r"No complete tensor found in the group!", r"torch\.export\.pt2_archive\._package"),)


class _DropRecords(logging.Filter):
    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


class _ExplainedTrialFailures(logging.Filter):
    """Optuna's warning, with a traceback, that a trial failed, and its "failed with value None." after it,
    for a trial stopped by Ctrl-C or SIGTERM or ended by a user's mistake (UserError): the sweep says so in
    one line of its own ("Interrupted: ...", "error: ..."), so the traceback tells nothing more."""

    def __init__(self) -> None:
        super().__init__()
        self.trials: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        trial = re.match(r"Trial (\d+) failed with", str(record.msg))
        exception = record.exc_info[1] if record.exc_info else None
        if trial and isinstance(exception, KeyboardInterrupt | UserError):
            self.trials.add(trial.group(1))
            return False
        return not (trial and trial.group(1) in self.trials)


# adverts for a logger and a model registry this project does not use
ADVERT = _DropRecords("💡 Tip: For seamless cloud logging", "💡 Tip: For seamless cloud uploads")
# Lightning's echoes of a setting: that an integer limit_*_batches of 1 is one batch (the command line reads a
# whole number as a batch count, as the docs say), and that a one-cycle schedule's length needed the training
# loader (built here from tensors in memory, at no cost)
ECHOES = _DropRecords("`Trainer(limit_", "Loading `train_dataloader` to estimate number of stepping batches")


class _DropRecordsMentioning(_DropRecords):
    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in str(record.msg) for text in self.prefixes)


# Lightning logs "Received SIGTERM: 15" at once, onto the progress bar's line, also for the SIGTERM that
# stands in for Ctrl-C (callbacks/interrupt.py): once the step ends, that callback says what stopped the run
# and where its checkpoint is
SIGTERM_NOTICE = _DropRecordsMentioning("Received SIGTERM")


# torch.export.load of a file that is not a .pt2 archive: torch logs the traceback of its first attempt, then
# fails again; the caller reports that failure as one error
PT2_READER_FAILURE = _DropRecords("Ran into the following error when deserializing")
# LitServe's shutdown warns of each of its HTTP processes that has already ended ("LitServer-1 (PID: 123):
# Already not alive."). After a terminal's Ctrl-C, which reaches every process of the server, they have: each
# stopped itself, as it should. After a SIGTERM to the server's process they are alive, unless one crashed,
# which printed its own traceback then
HTTP_PROCESS_ENDED = _DropRecordsMentioning(": Already not alive.")
# the learning-rate finder's checkpoint of the initial weights, its own and deleted at once: the full state
# is meant, so the notice that weights_only defaults to False does not apply
FINDER_CHECKPOINT = _DropRecords("`weights_only` was not set, defaulting to `False`.")


def ignore_warnings(rules: tuple[tuple[str, str], ...]) -> None:
    """Ignore the warnings of ``rules`` (message and module regexes) until the
    enclosing :func:`quiet` ends."""
    for message, module in rules:
        warnings.filterwarnings("ignore", message=message, module=module)


@contextlib.contextmanager
def ignoring(rules: tuple[tuple[str, str], ...]) -> Iterator[None]:
    """The warnings of ``rules`` ignored for the block, and only for it."""
    with warnings.catch_warnings():
        ignore_warnings(rules)
        yield


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """No warnings at all for the block: for work whose warnings are not news to the user (Optuna's
    ExperimentalWarning of a sampler or a plot, the probes of a sweep's parameters before training)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """For one run: leave out the notices above (restored on exit)."""
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    checkpoints = logging.getLogger("lightning.pytorch.trainer.connectors.checkpoint_connector")
    signals = logging.getLogger("lightning.pytorch.trainer.connectors.signal_connector")
    with warnings.catch_warnings():
        ignore_warnings(IRRELEVANT_WARNINGS)
        # jsonargparse's deprecations of the calls LightningCLI itself makes (add_instantiator, skip_none):
        # Lightning's to update, nothing a user of this project can change
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"lightning\.pytorch\.cli")
        rank_zero.addFilter(ADVERT)
        rank_zero.addFilter(ECHOES)
        checkpoints.addFilter(FINDER_CHECKPOINT)
        signals.addFilter(SIGTERM_NOTICE)
        try:
            yield
        finally:
            rank_zero.removeFilter(ADVERT)
            rank_zero.removeFilter(ECHOES)
            checkpoints.removeFilter(FINDER_CHECKPOINT)
            signals.removeFilter(SIGTERM_NOTICE)


@contextlib.contextmanager
def reading_exported() -> Iterator[None]:
    """While an exported file is loaded: torch's log of a failed read left out (the caller reports it)."""
    logger = logging.getLogger("torch.export")
    logger.addFilter(PT2_READER_FAILURE)
    try:
        yield
    finally:
        logger.removeFilter(PT2_READER_FAILURE)


@contextlib.contextmanager
def serving() -> Iterator[None]:
    """While ``serve`` runs: LitServe's warning of an HTTP process that ended by itself left out."""
    logger = logging.getLogger("litserve.server")
    logger.addFilter(HTTP_PROCESS_ENDED)
    try:
        yield
    finally:
        logger.removeFilter(HTTP_PROCESS_ENDED)


@contextlib.contextmanager
def quiet_trials() -> Iterator[None]:
    """While a sweep's trials run: Lightning's info lines left out, a library warning shown once per sweep
    instead of once per trial, Optuna's tracebacks of trials the sweep explains itself left out; all undone
    afterwards."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    trial_failures, explained = logging.getLogger("optuna.study._optimize"), _ExplainedTrialFailures()
    trial_failures.addFilter(explained)
    with warnings.catch_warnings():
        warnings.filterwarnings("once", append=True)
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)
            trial_failures.removeFilter(explained)
