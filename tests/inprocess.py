"""Run the command line's ``main()`` inside the test process: the same entry point as the ``mnist-lightning``
script, without the seconds a subprocess spends importing torch and Lightning."""

from __future__ import annotations

import contextlib
import io
import os
import signal
from pathlib import Path

from mnist_lightning.cli import main


def run_main(*args: object, cwd: Path) -> tuple[int, str, str]:
    """``main(ARGS)`` in ``cwd``; returns its exit status (0 when it returns), stdout and stderr."""
    saved_env, saved_cwd, saved_ctrl_c = dict(os.environ), os.getcwd(), signal.getsignal(signal.SIGINT)
    stdout, stderr = io.StringIO(), io.StringIO()
    status = 0
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main([str(arg) for arg in args])
    except SystemExit as exit_:
        status = 0 if exit_.code is None else exit_.code
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        signal.signal(signal.SIGINT, saved_ctrl_c)  # an interrupted run leaves Ctrl-C ignored, for its exit
    return status, stdout.getvalue(), stderr.getvalue()
