"""``python -m mnist_lightning COMMAND``: the Lightning subcommands, and the project's own commands.

Each of ``sweep``, ``runs``, ``export`` and ``serve`` lives in its own module with a ``main(args)``, imported
only when it is run, so no command pays for another's libraries (Optuna, onnx, LitServe) and ``runs``
needs neither torch nor Lightning. The top-level ``--help`` is written here, without importing Lightning;
``COMMAND --help`` is each command's own.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module
from pathlib import Path
from typing import NoReturn

from mnist_lightning.errors import UserError

# the LightningCLI subcommands (mnist_lightning.cli), with what each does here, in whole sentences
# (Lightning's own, the first lines of Trainer methods' docstrings, stop mid-sentence for test and predict)
LIGHTNING_COMMANDS = {
    "fit": "Train the model; --ckpt_path last resumes the newest run.",
    "validate": "Evaluate a checkpoint on the validation split.",
    "test": "Evaluate a checkpoint on the test set and write its metrics and report.",
    "predict": "Predict the test set or image files (--data.predict_path) with a checkpoint.",
}
PROJECT_COMMANDS = {
    "sweep": ("mnist_lightning.sweep", "Search hyperparameters with Optuna (pruning, resumable studies)."),
    "runs": ("mnist_lightning.runs", "Compare the runs under a log folder in one table."),
    "export": ("mnist_lightning.export", "Export a checkpoint to ONNX or torch.export (.pt2), verified."),
    "serve": ("mnist_lightning.serve", "Serve a model over HTTP, with a page to draw a digit on."),
}


def program_name() -> str:
    """``mnist-lightning`` when run as that script, else ``python -m mnist_lightning``."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name == "mnist-lightning" else "python -m mnist_lightning"


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
        f"{program} COMMAND --help lists a command's options. fit, validate, test and predict take",
        "YAML configs (--config configs/default.yaml; later ones override earlier ones) and print the",
        "resolved configuration with --print_config.",
    ]
    return "\n".join(lines)


class CommandParser(argparse.ArgumentParser):
    """argparse for the project's own commands: a bad option is one ``error: ...`` line and a hint, exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message}\n(run with --help to list the accepted options)\n")
        self.exit(2)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m mnist_lightning`` and the ``mnist-lightning`` command."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] in (["-h"], ["--help"]):
        print(usage())
        return
    if argv and argv[0] in PROJECT_COMMANDS:
        module, _ = PROJECT_COMMANDS[argv[0]]
        try:
            import_module(module).main(argv[1:])
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        return
    from mnist_lightning.cli import main as lightning_main

    lightning_main(args)  # None: LightningCLI reads the command line itself (and does not warn)
