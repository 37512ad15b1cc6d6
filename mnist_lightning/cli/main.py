"""``python -m mnist_lightning COMMAND``: the Lightning subcommands, and the project's own commands.

Each of ``sweep``, ``runs``, ``export`` and ``serve`` lives in its own module with a ``main(args)``, imported
only when it is run, so no command pays for another's libraries (Optuna, onnx, LitServe) and ``runs``
needs neither torch nor Lightning. The top-level ``--help`` is written here, without importing Lightning;
``COMMAND --help`` is each command's own.
"""

from __future__ import annotations

import sys
from importlib import import_module

from mnist_lightning.cli.console import (
    LIGHTNING_COMMANDS,
    PROJECT_COMMANDS,
    exit_with_error,
    program_name,
    unknown_command,
    user_errors_exit_2,
)
from mnist_lightning.cli.process import finish_process


def usage() -> str:
    """The top-level help: every command with one line."""
    commands = {**LIGHTNING_COMMANDS, **{name: text for name, (_, text) in PROJECT_COMMANDS.items()}}
    width = max(map(len, commands))
    program = program_name()
    lines = [
        f"usage: {program} COMMAND [options]",
        "",
        "Train, compare and ship an MNIST digit classifier with PyTorch Lightning.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, text in commands.items()),
        "",
        f"{program} COMMAND --help lists a command's options. fit, validate, test and predict start",
        "from the default recipe (configs/default.yaml), change it with YAML configs (--config FILE; later",
        "ones override earlier ones) and options, and print the result with --print_config.",
    ]
    return "\n".join(lines)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m mnist_lightning`` and the ``mnist-lightning`` command."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return
    if not argv or not (
        argv[0].startswith("-") or argv[0] in LIGHTNING_COMMANDS or argv[0] in PROJECT_COMMANDS
    ):
        exit_with_error(unknown_command(argv[0] if argv else None))  # before Lightning's four-command list
    try:
        if argv[0] in PROJECT_COMMANDS:
            module, _ = PROJECT_COMMANDS[argv[0]]
            with user_errors_exit_2():
                import_module(module).main(argv[1:])
            return
        from mnist_lightning.cli.lightning_cli import main as lightning_main

        lightning_main(args)  # None: LightningCLI reads the command line itself (and does not warn)
    finally:
        finish_process()  # Lightning as it was before the command (cli/process.py)
