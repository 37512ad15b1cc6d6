"""A run's record across its life (mnist_lightning/run_states.py): a running fit names its process and the
epochs done so far; a resumed run adds its session to the totals instead of replacing them, and names the
environment file of an earlier session with the same packages instead of writing a copy; the hidden
``.partial`` file a kill left during a save is gone when the run's next fit starts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from mnist_lightning import run_states
from mnist_lightning.run_layout import partial_file_name

from helpers.commands import CONFIG, SMALL
from helpers.inprocess import run_main


def fit(cwd: Path, tiny_data: Path, *extra: str) -> None:
    status, _, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *SMALL, *extra, cwd=cwd
    )
    assert status == 0, stderr[-3000:]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory, tiny_data) -> tuple[Path, dict, dict]:
    """A run of 1 epoch, a stale ``.partial`` file left in its checkpoints, resumed for a 2nd epoch; the
    summaries after each session."""
    cwd = tmp_path_factory.mktemp("resumed")
    fit(cwd, tiny_data, "--trainer.max_epochs=1")
    run = cwd / "lightning_logs" / "version_0"
    first = json.loads((run / "summary.json").read_text())
    (run / "checkpoints" / partial_file_name("epoch=0-val_acc=0.1000.ckpt")).write_bytes(b"\0" * 1000)
    snoop = (
        "--trainer.callbacks+=helpers.summary_snoop.SummarySnoop",
        f"--trainer.callbacks.copies={cwd}/seen",
    )
    fit(cwd, tiny_data, "--trainer.max_epochs=2", "--ckpt_path", "last", *snoop)
    return cwd, first, json.loads((run / "summary.json").read_text())


def test_a_resumed_runs_fit_seconds_add_up_its_sessions(resumed_run):
    _, first, second = resumed_run
    assert second["status"] == "finished" and second["epochs"] == 2
    assert len(second["session_seconds"]) == 2 and second["session_seconds"][0] == first["fit_seconds"]
    assert second["fit_seconds"] == round(sum(second["session_seconds"]), 2) > first["fit_seconds"]
    assert second["started"] == first["started"]  # the run began with its first session


def test_a_resume_in_the_same_environment_keeps_one_requirements_file(resumed_run):
    cwd, _, _ = resumed_run
    run = cwd / "lightning_logs" / "version_0"
    assert sorted(path.name for path in run.glob("requirements*.txt")) == ["requirements.txt"]
    sessions = json.loads((run / "provenance.json").read_text())["sessions"]
    assert [session["requirements_file"] for session in sessions] == ["requirements.txt"] * 2


def test_the_partial_file_of_a_killed_save_is_removed_when_the_run_goes_on(resumed_run):
    cwd, _, _ = resumed_run
    checkpoints = cwd / "lightning_logs" / "version_0" / "checkpoints"
    assert not list(checkpoints.glob(partial_file_name("*")))
    assert (checkpoints / "last.ckpt").is_file()


def test_a_running_summary_names_its_process_and_the_epochs_done(resumed_run):
    cwd, _, _ = resumed_run
    live = json.loads((cwd / "seen" / "epoch_1.json").read_text())  # as the resumed 2nd epoch began
    assert (live["status"], live["epochs"], live["ended"]) == ("running", 1, None)
    assert live["process"] == {
        "host": run_states.host_id(), "pid": os.getpid(), "pid_start": run_states.process_start(os.getpid())
    }  # fmt: skip
    assert run_states.current_status(live) == "running"  # this process: alive
    assert run_states.current_status({**live, "process": {**live["process"], "pid_start": "0"}}) == "killed"
