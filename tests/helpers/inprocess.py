"""Run the command line's ``main()`` inside the test process: the same entry point as the ``mnist-lightning``
script, without the seconds a subprocess spends importing torch and Lightning.

What a subprocess would print is returned: stdout, and on stderr its messages, Lightning's log lines and the
warnings that a user would see (recorded here, since pytest would otherwise keep them for its summary).
Environment variables and the working directory are restored afterwards.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import sys
import warnings
from pathlib import Path

from mnist_lightning.cli.main import main

from helpers.commands import CONFIG

LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning")


@contextlib.contextmanager
def _log_handlers_to(stream: io.StringIO):
    """Lightning's stream handlers (bound to the stderr of the moment they were made) write to ``stream``."""
    handlers = [
        handler
        for name in LOGGERS
        for handler in logging.getLogger(name).handlers
        if type(handler) is logging.StreamHandler
    ]
    previous = [handler.setStream(stream) for handler in handlers]
    try:
        yield
    finally:
        for handler, old in zip(handlers, previous, strict=True):
            handler.setStream(old)


def run_main(*args: object, cwd: Path, one_stream: bool = False) -> tuple[int, str, str]:
    """``mnist-lightning ARGS`` in ``cwd`` (``main()`` reading ``sys.argv``, as the script does); returns its
    exit status (0 when it returns), stdout and stderr (``one_stream``: both in stdout, interleaved as in a
    terminal, and stderr empty)."""
    saved_env, saved_cwd, saved_argv = dict(os.environ), os.getcwd(), sys.argv
    saved_ctrl_c = signal.getsignal(signal.SIGINT)
    sys.argv = ["mnist-lightning", *map(str, args)]
    stdout = io.StringIO()
    stderr = stdout if one_stream else io.StringIO()
    status = 0
    os.chdir(cwd)
    try:
        with (
            warnings.catch_warnings(record=True) as caught,  # the filters as they are, registries fresh
            contextlib.redirect_stdout(stdout),
            contextlib.redirect_stderr(stderr),
            _log_handlers_to(stderr),
        ):
            for category in (DeprecationWarning, PendingDeprecationWarning):  # as Python's defaults do
                warnings.filterwarnings("ignore", category=category)
            try:
                main()
            except SystemExit as exit_:
                status = 0 if exit_.code is None else exit_.code
            for warning in caught:
                stderr.write(warnings.formatwarning(*_fields(warning)))
    finally:
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        signal.signal(signal.SIGINT, saved_ctrl_c)  # an interrupted run leaves Ctrl-C ignored, for its exit
    return status, stdout.getvalue(), "" if one_stream else stderr.getvalue()


def _fields(warning: warnings.WarningMessage) -> tuple:
    return warning.message, warning.category, warning.filename, warning.lineno, warning.line


def run_on_checkpoint(subcommand: str, checkpoint: Path, *args: object, cwd: Path) -> tuple[int, str, str]:
    """``run_main(SUBCOMMAND --config configs/default.yaml --ckpt_path CHECKPOINT ARGS)``."""
    return run_main(subcommand, "--config", CONFIG, "--ckpt_path", checkpoint, *args, cwd=cwd)
