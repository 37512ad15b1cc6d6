"""``provenance.json``: which code, environment, machine, command and data made a run's results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

from mnist_lightning.callbacks import fingerprints
from mnist_lightning.callbacks.outputs import (
    global_seed,
    local_time,
    output_dir,
    write_json,
    writes_files,
)
from mnist_lightning.run_layout import PROVENANCE_FILE, run_folder, session_file_names

FORMAT = 1
PACKAGE = Path(__file__).resolve().parents[1]  # the mnist_lightning package this process runs


class Provenance(L.Callback):
    """Writes ``provenance.json`` where a command's results go: into a fit's run folder as it starts, beside
    an evaluation's files (``<run>/test/<checkpoint>/``, ...) as it starts. It records the project's version;
    the git commit, branch and uncommitted changes of the work tree the command runs in, else of the one
    holding the package (the diff saved as ``code.diff``, untracked files named); Python's, the libraries'
    and CUDA's versions and every installed package (``requirements.txt``); the machine; the processes and
    nodes; the command line; the seed; and the SHA-256 of each data file read. A resumed fit
    (``--ckpt_path``) in the same folder appends its session instead of replacing the first; a
    session whose packages (or diff) are those of an earlier one names that session's file instead of
    writing a copy. Rank 0 writes;
    nothing is written under ``fast_dev_run``.
    """

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, run_folder(trainer), append=trainer.ckpt_path is not None)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._write(trainer, output_dir(trainer))

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, output_dir(trainer))

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, output_dir(trainer))

    def _write(self, trainer: L.Trainer, folder: Path, append: bool = False) -> None:
        if not writes_files(trainer) or not trainer.is_global_zero:
            return
        path = folder / PROVENANCE_FILE
        sessions = read_sessions(path) if append else []
        diff_name, requirements_name = session_file_names(len(sessions))
        session, diff, requirements = describe_session(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        if diff:
            earlier = [(session.get("git") or {}).get("diff_file") for session in sessions]
            session["git"]["diff_file"] = _write_once(folder, diff, diff_name, earlier)
        requirements_text = "\n".join(requirements) + "\n"
        earlier = [session.get("requirements_file") for session in sessions]
        session["requirements_file"] = _write_once(folder, requirements_text, requirements_name, earlier)
        sessions.append(session)
        write_json(path, {"format": FORMAT, "sessions": sessions})


def _write_once(folder: Path, text: str, name: str, earlier: list[Any]) -> str:
    """The name of the file in ``folder`` that holds ``text``: an earlier session's file with the same
    content (a resume in the same environment adds no copy), else ``name``, written now."""
    for candidate in earlier:
        if isinstance(candidate, str) and "/" not in candidate and (folder / candidate).is_file():
            if (folder / candidate).read_text() == text:
                return candidate
    (folder / name).write_text(text)
    return name


def read_sessions(path: Path) -> list[dict[str, Any]]:
    """The sessions recorded in a ``provenance.json`` ([] when there is none or it cannot be read)."""
    try:
        sessions = json.loads(path.read_text()).get("sessions")
    except (OSError, ValueError, AttributeError):
        return []
    return sessions if isinstance(sessions, list) else []


def describe_session(trainer: L.Trainer) -> tuple[dict[str, Any], str, list[str]]:
    """This command's provenance, its uncommitted changes as a diff, and the installed packages."""
    git, diff = fingerprints.git_state(Path.cwd())
    if git is None:  # run outside a work tree: the one the package's code is in (a checkout), if any
        git, diff = fingerprints.git_state(PACKAGE)
    versions, requirements = fingerprints.package_versions()
    stage = trainer.state.fn.value if trainer.state.fn is not None else None
    data_files = getattr(trainer.datamodule, "data_files", None)
    session = {
        "command": stage,
        "started": local_time(),
        "command_line": fingerprints.command_line(),
        "cwd": str(Path.cwd()),
        "checkpoint": str(Path(trainer.ckpt_path).resolve()) if trainer.ckpt_path else None,
        "seed": global_seed(),
        "project": {"name": "mnist-lightning", "version": fingerprints.project_version()},
        "git": git,
        "versions": versions,
        "machine": fingerprints.machine(),
        "processes": {
            "world_size": trainer.world_size,
            "num_nodes": trainer.num_nodes,
            "devices_per_node": trainer.num_devices,
            "accelerator": type(trainer.accelerator).__name__,
            "strategy": type(trainer.strategy).__name__,
            "precision": str(trainer.precision),
        },
        "data": fingerprints.file_hashes(list(data_files(stage))) if callable(data_files) else [],
    }
    return session, diff, requirements
