"""The docs test themselves: every shell command in README.md and docs/*.md is collected and checked.

Each line of a fenced ``bash`` block is one command (``\\`` continuations joined, comments dropped). The
project's own commands go through the real parsers: ``runs`` runs for real on a tiny log folder; ``fit``,
``test``, ``validate`` and ``predict`` are parsed with ``--print_config``; ``sweep``, ``lr_find``, ``export``
and ``serve`` are parsed by their own parser, and the options they pass on to ``fit`` by fit's. Every input
file a command names (``--config``, ``--sweep``, ``--ckpt_path``, ``--data.predict_path``) must exist. Other
tools are checked for what the project provides them: a ``make`` target, a ``pip`` extra. A placeholder of
the docs (``<ckpt>``, ``/path/to/datasets``) stands for the tiny checkpoint and data of the tests.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from mnist_lightning.cli.console import LIGHTNING_COMMANDS, PROJECT_COMMANDS, CommandParser

from helpers.commands import REPO
from helpers.inprocess import run_main

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# tools the docs show that are not the project's: checked for what the project provides them, if anything
OTHER_TOOLS = (
    "make", "pip", "tensorboard", "mlflow", "wandb", "curl", "source", "export", "python -m venv",
    "python -m pytest", ".venv/bin/mkdocs", "for", "extra=$(", "done",
)  # fmt: skip
INPUT_OPTIONS = ("--config", "--sweep", "--ckpt_path", "--data.predict_path", "--model")


def shell_commands() -> list[tuple[str, str]]:
    """``(where, command)`` for each command line of each fenced bash block of the pages."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for block in re.finditer(r"^```(?:bash|sh|shell)\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
            first_line = text[: block.start()].count("\n") + 2
            lines = block.group(1).replace("\\\n", " ").splitlines()
            for offset, line in enumerate(lines):
                command = re.sub(r"\s+#.*$", "", line).strip()
                command = re.sub(r"^([A-Z_]+=\S+\s+)+", "", command)  # WANDB_MODE=offline python ...
                if command and not command.startswith("#"):
                    found.append((f"{page.relative_to(REPO)}:{first_line + offset}", command))
    return found


COMMANDS = shell_commands()


class Parsed(Exception):
    """Raised instead of running a project command once its parser has accepted the command line."""

    def __init__(self, rest: list[str]) -> None:
        super().__init__()
        self.rest = rest


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_checkpoint) -> Path:
    """A folder like the project's: a run in lightning_logs (and as a sweep trial), configs/, the doc's
    my_nets.py, a my_digits/ folder and a model.onnx."""
    folder = tmp_path_factory.mktemp("docs")
    run = tiny_checkpoint.parents[1]
    shutil.copytree(run, folder / "lightning_logs" / "version_0")
    for sweep in ("mlp", "fast-kfold"):  # the folders of the sweeps the docs run before comparing them
        shutil.copytree(run, folder / "lightning_logs" / "sweeps" / sweep / "trial_0")
    shutil.copytree(REPO / "configs", folder / "configs")
    (folder / "my_digits").mkdir()
    own_net = re.search(
        r"```python\n(.*?class TinyNet.*?)```", (REPO / "docs/configuration.md").read_text(), re.S
    )
    (folder / "my_nets.py").write_text(own_net.group(1))
    (folder / "model.onnx").touch()  # stands for what the docs' export writes before they serve it
    return folder


def substituted(command: str, tiny_data: Path, tiny_checkpoint: Path) -> list[str]:
    """The command's words, the docs' placeholders replaced by the tests' tiny data and checkpoint."""
    command = re.sub(r"<[^>]*>", str(tiny_checkpoint), command).replace("/path/to/datasets", str(tiny_data))
    command = command.replace("$extra", "--config configs/fast.yaml")
    return shlex.split(command)


def check_inputs_exist(words: list[str], cwd: Path) -> None:
    for index, word in enumerate(words[:-1]):
        name, value = word.split("=", 1) if "=" in word else (word, words[index + 1])
        if name in INPUT_OPTIONS and value not in ("best", "last"):
            assert (cwd / value).exists(), f"{name} {value}: no such file"


def parse_only(monkeypatch, words: list[str], cwd: Path) -> list[str]:
    """Run a project command's parser on ``words`` (not the command); returns what it passes on to fit."""

    def parse_args(self, args=None, namespace=None):
        _, rest = self.parse_known_args(args)
        if rest:
            self.error(f"unrecognized arguments: {' '.join(rest)}")
        raise Parsed([])

    def parse_own_and_fit_options(self, args):
        raise Parsed(original(self, args)[1])

    original = CommandParser.parse_own_and_fit_options
    monkeypatch.setattr(CommandParser, "parse_args", parse_args)
    monkeypatch.setattr(CommandParser, "parse_own_and_fit_options", parse_own_and_fit_options)
    from mnist_lightning.cli.main import main

    with pytest.raises(Parsed) as parsed:
        main(words)
    return parsed.value.rest


def check_other_tool(command: str) -> None:
    """What the project provides a tool the docs call: a make target, a pip extra, a pre-commit config."""
    if command.startswith("make "):
        target = command.split()[1]
        assert re.search(rf"^{re.escape(target)}:", (REPO / "Makefile").read_text(), re.MULTILINE), target
    extras = (REPO / "pyproject.toml").read_text().split("[project.optional-dependencies]", 1)[1]
    for extra in re.findall(r"\[(\w+)\]", command) if command.startswith("pip install") else []:
        assert re.search(rf"^{extra} = \[", extras, re.MULTILINE), f"no extra [{extra}] in pyproject.toml"
    if "pre-commit install" in command:
        assert (REPO / ".pre-commit-config.yaml").is_file()


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[where for where, _ in COMMANDS])
def test_documented_command(where, command, workdir, tiny_data, tiny_checkpoint, monkeypatch):
    if command.startswith(("python -m mnist_lightning", "mnist-lightning")):
        words = substituted(command, tiny_data, tiny_checkpoint)[3 if command.startswith("python") else 1 :]
    else:
        assert command.startswith(OTHER_TOOLS), f"{where}: a command this test does not know: {command}"
        check_other_tool(command)
        return
    assert words and words[0] in {**LIGHTNING_COMMANDS, **PROJECT_COMMANDS}, f"{where}: {command}"
    check_inputs_exist(words, workdir)
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))  # as python -m does: the user's own modules (my_nets.py)
    if words[0] == "runs":  # quick: run it
        status, _, stderr = run_main(*words, cwd=workdir)
        assert status == 0, f"{where}: {command}\n{stderr[-2000:]}"
        return
    if words[0] in PROJECT_COMMANDS:
        fit_options = parse_only(monkeypatch, words, workdir)
        if words[0] not in ("sweep", "lr_find"):
            return
        words = ["fit", *fit_options]
    status, _, stderr = run_main(*words, "--print_config", cwd=workdir)
    assert status == 0, f"{where}: {command}\n{stderr[-2000:]}"


def test_every_page_is_in_the_readmes_table_and_every_command_in_the_index():
    readme = (REPO / "README.md").read_text()
    for page in sorted((REPO / "docs").glob("*.md")):
        assert f"(docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"
    index = (REPO / "docs" / "index.md").read_text()
    for command in [*LIGHTNING_COMMANDS, *PROJECT_COMMANDS]:
        assert f"`{command}`" in index, f"docs/index.md does not name `{command}`"
