"""``python -m mnist_lightning COMMAND``: the Lightning subcommands, and the project's own commands.

Each of ``sweep``, ``runs``, ``export`` and ``serve`` lives in its own module with a ``main(args)``, imported
only when it is run, so no command pays for another's libraries (Optuna, onnx, LitServe) and ``runs``
needs neither torch nor Lightning.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module
from typing import NoReturn

from mnist_lightning.errors import UserError

PROJECT_COMMANDS = {
    "sweep": ("mnist_lightning.sweep", "search hyperparameters with Optuna (pruning, resumable studies)"),
    "runs": ("mnist_lightning.runs", "a table of the runs under a log folder"),
    "export": ("mnist_lightning.export", "export a checkpoint to ONNX or torch.export (.pt2)"),
    "serve": ("mnist_lightning.serve", "serve a model over HTTP with a page to draw on"),
}


def project_commands_help() -> str:
    """The project's own commands, for the main ``--help`` (those whose module is installed)."""
    from importlib.util import find_spec

    lines = [
        f"  {name:<10} {summary}"
        for name, (module, summary) in PROJECT_COMMANDS.items()
        if find_spec(module) is not None
    ]
    return "project commands (python -m mnist_lightning COMMAND --help):\n" + "\n".join(lines)


class CommandParser(argparse.ArgumentParser):
    """argparse for the project's own commands: a bad option is one ``error: ...`` line and a hint, exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}\n(run with --help to list the accepted options)\n")
        self.exit(2)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m mnist_lightning`` and the ``mnist-lightning`` command."""
    args = sys.argv[1:] if args is None else list(args)
    if args and args[0] in PROJECT_COMMANDS:
        module, _ = PROJECT_COMMANDS[args[0]]
        try:
            import_module(module).main(args[1:])
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        return
    from mnist_lightning.cli import main as lightning_main

    # LightningCLI warns when handed args while sys.argv holds options too: let it read sys.argv itself
    lightning_main(None if args == sys.argv[1:] else args)
