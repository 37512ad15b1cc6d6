"""The one console of every command: its program name, its parser, and how a user's mistake is reported.

A :class:`~mnist_lightning.errors.UserError` raised anywhere under a command becomes one ``error: ...``
paragraph on stderr and exit status 2, without a traceback (:func:`user_errors_exit_2`); a bad option is
reported the same way by :class:`CommandParser` (and by the LightningCLI parser, which calls
:func:`exit_with_error`). Nothing here imports torch or Lightning.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from mnist_lightning.errors import UserError

# the top-level options of the fit parser (its others have a dot: --trainer.max_epochs), which sweep and
# lr_find pass on to every run they start
FIT_OPTIONS = (
    "--config", "--print_config", "--seed_everything", "--trainer", "--model", "--data", "--optimizer",
    "--lr_scheduler", "--ckpt_path",
)  # fmt: skip
OPTIONS_HINT = "(run with --help to list the accepted options)"
# the recipe every Lightning command starts from, shipped with the package (configs/default.yaml is a copy)
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
# the LightningCLI subcommands (cli/lightning_cli.py), with what each does here, in whole sentences
# (Lightning's own, the first lines of Trainer methods' docstrings, stop mid-sentence for test and predict)
LIGHTNING_COMMANDS = {
    "fit": "Train the model; --ckpt_path last resumes the newest run.",
    "validate": "Evaluate a checkpoint on the validation split.",
    "test": "Evaluate a checkpoint on the test set and write its metrics and report.",
    "predict": "Predict the test set or image files (--data.predict_path) with a checkpoint.",
}
PROJECT_COMMANDS = {
    "sweep": (
        "mnist_lightning.tools.sweep.command",
        "Search hyperparameters with Optuna (pruning, resumable studies).",
    ),
    "runs": (
        "mnist_lightning.tools.runs.command",
        "Compare the runs under a log folder in one table, or their curves (--plot).",
    ),
    "lr_find": (
        "mnist_lightning.tools.lr_find",
        "Find a learning rate for a recipe: Lightning's range test, a plot and a suggestion.",
    ),
    "export": (
        "mnist_lightning.tools.export",
        "Export a checkpoint to ONNX or torch.export (.pt2), verified.",
    ),
    "serve": (
        "mnist_lightning.tools.serve.server",
        "Serve a model over HTTP, with a page to draw a digit on.",
    ),
    "upgrade": (
        "mnist_lightning.tools.upgrade",
        "Rewrite checkpoints and configs that name old module paths to today's (a backup kept).",
    ),
}


def program_name() -> str:
    """``mnist-lightning`` when run as that script, else ``python -m mnist_lightning``."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return name if name == "mnist-lightning" else "python -m mnist_lightning"


def all_commands() -> list[str]:
    """Every command of ``python -m mnist_lightning``, in the order ``--help`` lists them."""
    return [*LIGHTNING_COMMANDS, *PROJECT_COMMANDS]


def unknown_command(given: str | None) -> str:
    """The message for no command, or one that is not a command: all of them, and the close match."""
    commands = all_commands()
    if given is None:
        text = "a command is needed"
    else:
        close = difflib.get_close_matches(given, commands, n=1)
        text = f"'{given}' is not a command" + (f" (did you mean {close[0]}?)" if close else "")
    return f"{text}: one of {', '.join(commands)} ({program_name()} --help says what each does)."


def exit_with_error(message: str, hint: str | None = None) -> NoReturn:
    """Print ``error: message`` (and a hint line) to stderr and exit with status 2."""
    sys.stderr.write(f"error: {message}\n" + (f"{hint}\n" if hint else ""))
    raise SystemExit(2)


@contextlib.contextmanager
def user_errors_exit_2() -> Iterator[None]:
    """Around a command: a UserError is reported as one ``error:`` paragraph, exit status 2."""
    try:
        yield
    except UserError as err:
        exit_with_error(str(err))


class CommandParser(argparse.ArgumentParser):
    """argparse for the project's own commands: named ``<program> <command>``, no abbreviated options, and a
    bad option is one ``error: ...`` line and a hint, exit 2."""

    def __init__(self, command: str, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(prog=f"{program_name()} {command}", **kwargs)

    def error(self, message: str) -> NoReturn:
        exit_with_error(message, OPTIONS_HINT)

    def parse_own_and_fit_options(self, args: list[str]) -> tuple[argparse.Namespace, list[str]]:
        """``parse_known_args`` for a command that passes the options it does not know on to ``fit``: an
        unknown option closer to one of this command's own than to any of fit's is refused here, with that
        suggestion (``--trails``: did you mean --trials?), rather than by fit's parser, which knows only its
        own."""
        from mnist_lightning import compat

        options, rest = self.parse_known_args(args)
        own = [name for action in compat.parser_actions(self) for name in action.option_strings]
        own = [name for name in own if name.startswith("--")]
        for arg in rest:
            name = arg.split("=", 1)[0]
            if not name.startswith("--") or "." in name or name in FIT_OPTIONS:
                continue
            close = difflib.get_close_matches(name, [*own, *FIT_OPTIONS], n=1)
            if close and close[0] in own:
                self.error(f"unrecognized arguments: {name} (did you mean {close[0]}?)")
        return options, rest
