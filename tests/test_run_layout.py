"""A run's layout is stated once, in ``mnist_lightning/run_layout.py``: no other module spells a run's file
names, and the rules it holds (the run of a checkpoint, the next ``version_N``) are those the commands use."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from mnist_lightning import run_layout

from helpers.commands import REPO

PACKAGE = REPO / "mnist_lightning"
LAYOUT = PACKAGE / "run_layout.py"
# the names of folders that are also other things' names (the lr_find command, MLflow's default experiment,
# the predict input of the test set) are left out: a string equal to one may mean the other
NOT_ONLY_FOLDERS = {"LOG_ROOT", "SWEEPS_FOLDER", "LR_FIND_FOLDER", "TEST_SET_INPUT"}
NAMES = {
    value
    for name, value in vars(run_layout).items()
    if name.isupper() and isinstance(value, str) and name not in NOT_ONLY_FOLDERS
}
# names made from a number or a session: version_{}, trial_{}, code{}.diff, requirements{}.txt
TEMPLATES = re.compile(r"(^|/)(version_\{\}|trial_\{\}|code\{\}\.diff|requirements\{\}\.txt)($|/)")


def path_like_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Each string of a module that reads as a path (no spaces), an f-string with ``{}`` for its fields;
    docstrings and messages (which have spaces) are prose, and may name files."""
    found = []
    in_fstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)
            in_fstrings.update(id(part) for part in node.values)
            found.append((node.lineno, text))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in in_fstrings:
            found.append((node.lineno, node.value))
    return [(line, text) for line, text in found if text and not any(char.isspace() for char in text)]


def layout_names_in(source: str) -> list[str]:
    """The lines of ``source`` that spell a run's file name or a name template, and what they spell."""
    return [
        f"{line}: {text!r}"
        for line, text in path_like_strings(ast.parse(source))
        if set(text.split("/")) & NAMES or TEMPLATES.search(text)
    ]


def test_no_module_but_the_layout_spells_a_run_file_name():
    hits = [
        f"{path.relative_to(REPO)}:{hit}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != LAYOUT
        for hit in layout_names_in(path.read_text())
    ]
    assert not hits, "take these names from mnist_lightning/run_layout.py:\n" + "\n".join(hits)


@pytest.mark.parametrize(
    "source",
    [
        'path = folder / "summary.json"',
        'found = root.glob(f"*/checkpoints/{name}")',
        'folder = root / f"version_{number}"',
        'diff = f"code{suffix}.diff"',
    ],
)
def test_the_check_finds_a_run_file_name_written_elsewhere(source):
    module = f'"""A module that writes summary.json."""\n\n{source}\nmessage = "see summary.json"\n'
    assert len(layout_names_in(module)) == 1, "the path is found, the docstring and the message are not"


def test_a_new_run_takes_the_number_after_the_largest_as_lightning_does(tmp_path):
    assert run_layout.next_version_folder(tmp_path / "missing") == tmp_path / "missing" / "version_0"
    for name in ("version_0", "version_2", "version_x", "trial_7"):
        (tmp_path / name).mkdir()
    (tmp_path / "version_9").write_text("a file, not a run")
    assert run_layout.next_version_folder(tmp_path) == tmp_path / "version_3", "no gap refilled"


@pytest.mark.parametrize("run_name", ["version_4", "trial_2", "moved_run"])
def test_the_run_of_a_checkpoint_is_the_folder_above_its_checkpoints(tmp_path, run_name):
    run = tmp_path / run_name
    checkpoint = run_layout.checkpoint_folder(run) / run_layout.LAST_CHECKPOINT
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"")
    assert run_layout.run_folder_of(checkpoint) is None, "a folder with no run file is not a run"
    (run / run_layout.HPARAMS_FILE).write_text("{}")
    assert run_layout.run_folder_of(checkpoint) == run.resolve()
    assert run_layout.run_folder_of(tmp_path / "elsewhere.ckpt") is None


def test_an_evaluation_is_kept_by_stage_checkpoint_and_input(tmp_path):
    assert run_layout.evaluation_folder("test", "runs/version_1/checkpoints/last.ckpt") == Path(
        "test", "last"
    )
    assert run_layout.evaluation_folder("validate", None) == Path("validate")
    predict = run_layout.evaluation_folder("predict", "x/best.ckpt", str(tmp_path / "my digits"))
    assert predict.parent == Path("predict", "best") and re.fullmatch(r"my_digits-[0-9a-f]{6}", predict.name)
    assert run_layout.evaluation_folder("predict", "x/best.ckpt") == Path("predict", "best", "test_set")
