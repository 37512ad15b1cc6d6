"""Checkpoint writes survive SIGKILL: the file on disk is always a whole checkpoint, old or new.

The case ``AtomicCheckpointIO`` exists for: the system temp folder on another filesystem than the
checkpoints. Lightning's writer stages the file in the temp folder and moves it over, and across filesystems
that move is a copy into the open, truncated target. Each test kills a writer at every step where it calls
the operating system to write, copy, flush or move a file (the same points on every run), and reads what is
left.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_lightning.checkpointing.checkpoint_io import AtomicCheckpointIO

PAYLOADS = [torch.full((500_000,), float(value)) for value in range(2)]  # 2 MB each
# the calls through which a writer puts bytes into a file or moves one into place
FILE_CALLS = [
    (module, name)
    for module, names in (
        (os, ("write", "sendfile", "copy_file_range", "fsync", "replace", "rename")),
        (shutil, ("copyfileobj",)),
    )  # fmt: skip
    for name in names
    if hasattr(module, name)
]


def checkpoint(step: int) -> dict:
    return {"step": step, "state_dict": {"weight": PAYLOADS[step % len(PAYLOADS)]}}


def die_at_file_call(kill_at: int) -> None:
    """In this (forked) process: SIGKILL itself just before its ``kill_at``-th file call (1 is the first);
    copies are also cut halfway, so a kill can land in the middle of one."""
    calls = 0

    def wrap(module, name):
        original = getattr(module, name)

        def call(*args, **kwargs):
            nonlocal calls
            calls += 1
            if calls == kill_at:
                if name == "sendfile":  # half of the bytes left to copy, then dead
                    out_fd, in_fd, offset, _ = args
                    original(out_fd, in_fd, offset, max(1, (os.fstat(in_fd).st_size - offset) // 2))
                os.kill(os.getpid(), signal.SIGKILL)
            return original(*args, **kwargs)

        setattr(module, name, call)

    for module, name in FILE_CALLS:
        wrap(module, name)


def kill_at_every_file_call(writer, path: Path) -> list[dict | str]:
    """Overwrite ``path`` (holding checkpoint 0) with checkpoint 1, killed at the 1st, 2nd, ... file call,
    until a write completes; after each kill, what ``path`` holds: a checkpoint, or why it is unreadable."""
    outcomes = []
    for kill_at in range(1, 100):
        writer.save_checkpoint(checkpoint(0), path)
        child = os.fork()
        if child == 0:
            status = 1
            try:
                die_at_file_call(kill_at)
                writer.save_checkpoint(checkpoint(1), path)
                status = 0  # the write completed before a kill_at-th call
            finally:
                os._exit(status)
        _, status = os.waitpid(child, 0)
        if os.WIFEXITED(status):
            assert os.WEXITSTATUS(status) == 0, "the writer failed"
            assert torch.load(path, weights_only=True)["step"] == 1
            return outcomes
        assert os.WTERMSIG(status) == signal.SIGKILL
        try:
            outcomes.append(torch.load(path, weights_only=True))
        except Exception as err:  # truncated or empty
            outcomes.append(f"unreadable: {type(err).__name__}")
    raise AssertionError("the writer never completed")


@pytest.fixture
def other_filesystem_temp(tmp_path, monkeypatch) -> Path:
    """The system temp folder on another filesystem than ``tmp_path`` (tmpfs /dev/shm), as on a cluster."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's folder")
    folder = Path(tempfile.mkdtemp(dir=shm))
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def assert_whole(outcomes: list, path: Path) -> None:
    """Every kill left checkpoint 0 or checkpoint 1, whole."""
    assert outcomes, "no kill point was reached"
    for outcome in outcomes:
        assert isinstance(outcome, dict), outcome
        assert torch.equal(
            outcome["state_dict"]["weight"], checkpoint(outcome["step"])["state_dict"]["weight"]
        )


def test_a_kill_at_any_file_call_of_the_atomic_writer_leaves_a_whole_checkpoint(
    tmp_path, other_filesystem_temp
):
    outcomes = kill_at_every_file_call(AtomicCheckpointIO(), tmp_path / "last.ckpt")
    assert_whole(outcomes, tmp_path / "last.ckpt")
    assert {outcome["step"] for outcome in outcomes} == {0}  # the old one until the rename, then the new one


def test_lightnings_writer_across_filesystems_can_leave_a_broken_checkpoint(tmp_path, other_filesystem_temp):
    """What the test above catches if the project's writer behaves like Lightning's: a kill during the copy
    leaves an empty or half-copied ``last.ckpt`` where a good one was."""
    outcomes = kill_at_every_file_call(TorchCheckpointIO(), tmp_path / "last.ckpt")
    assert any(isinstance(outcome, str) for outcome in outcomes), outcomes


def test_lightnings_writer_on_one_filesystem_is_whole_too(tmp_path):
    """Why a test with the temp folder and the checkpoints on one filesystem cannot tell the writers apart."""
    assert Path(tempfile.gettempdir()).stat().st_dev == tmp_path.stat().st_dev
    assert_whole(kill_at_every_file_call(TorchCheckpointIO(), tmp_path / "last.ckpt"), tmp_path / "last.ckpt")


def test_a_full_disk_is_one_error_naming_the_file_and_the_last_whole_checkpoint(
    tmp_path, tiny_data, monkeypatch
):
    """The second epoch's checkpoint meets a full disk: one error paragraph, and the first epoch's files are
    whole (as logs on a small tmpfs gave: ENOSPC, then torch's RuntimeError while closing the archive)."""
    import errno
    import re

    from mnist_lightning.checkpointing import checkpoint_io

    from helpers.commands import CONFIG, QUICK
    from helpers.inprocess import run_main

    real_save = torch.save

    def save_until_the_disk_is_full(checkpoint, file):
        if checkpoint["epoch"] >= 1:
            file.write(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos") from OSError(
                errno.ENOSPC, "No space left on device"
            )
        real_save(checkpoint, file)

    monkeypatch.setattr(checkpoint_io.torch, "save", save_until_the_disk_is_full)
    status, stdout, stderr = run_main(
        "fit",
        "--config",
        CONFIG,
        f"--data.data_dir={tiny_data}",
        *QUICK,
        "--trainer.max_epochs=2",
        cwd=tmp_path,
    )
    monkeypatch.undo()
    assert status == 2, stderr[-3000:]
    [error] = [line for line in stderr.splitlines() if line.startswith("error:")]
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    assert re.match(r"error: cannot write the checkpoint '.*epoch=1.*\.ckpt': No space left on device", error)
    assert "the newest whole checkpoint is lightning_logs/version_0/checkpoints/last.ckpt." in error
    assert "Traceback" not in stderr
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["epoch"] == 0
    assert not list(checkpoints.glob(".*.partial"))
