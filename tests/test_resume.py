"""Interrupted runs as a user meets them: SIGKILL, Ctrl-C, SIGTERM during fit, then ``--ckpt_path last``."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CONFIG, QUICK
from inprocess import run_main

# 448 training images in batches of 8: 56 steps per epoch, long enough to interrupt an epoch in its middle
ARGS = (
    "fit", "--config", str(CONFIG), "--trainer.max_epochs=5", "--trainer.enable_progress_bar=false",
    "--data.batch_size=8", "--data.val_size=64",
)  # fmt: skip


def start_fit(cwd: Path, data: Path, *extra: str) -> subprocess.Popen:
    """``python -m mnist_lightning fit`` in the background, on one thread, with Ctrl-C delivered as SIGINT."""
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_lightning", *ARGS, f"--data.data_dir={data}", *extra],
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"},  # tiny model, shared CPU
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def interrupt_after_next_epoch(process: subprocess.Popen, last: Path, signum: int) -> tuple[int, str, str]:
    """Wait until ``process`` writes ``last`` anew (an epoch ended), then send ``signum`` a moment later."""
    previous = last.stat().st_mtime_ns if last.exists() else None
    deadline = time.monotonic() + 240
    while process.poll() is None and time.monotonic() < deadline:
        if last.exists() and last.stat().st_mtime_ns != previous:
            break
        time.sleep(0.01)
    time.sleep(random.uniform(0, 0.05))
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def one_line(stderr: str, start: str) -> str:
    assert "Traceback" not in stderr
    [line] = [line for line in stderr.splitlines() if line.startswith(start)]
    return line


def run_main_on_one_thread(*args: str, cwd: Path) -> tuple[int, str, str]:
    """``run_main`` with one torch thread, as ``start_fit`` runs (the same kernels, the same rounding)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_main(*args, cwd=cwd)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_data) -> dict:
    """The final checkpoint of the same fit, never interrupted."""
    cwd = tmp_path_factory.mktemp("uninterrupted")
    status, _, stderr = run_main_on_one_thread(*ARGS, f"--data.data_dir={tiny_data}", cwd=cwd)
    assert status == 0, stderr[-3000:]
    return load(cwd / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt")


def test_killed_then_interrupted_twice_a_run_resumes_to_the_weights_of_an_uninterrupted_one(
    tmp_path, tiny_data, uninterrupted
):
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    last, interrupted = checkpoints / "last.ckpt", checkpoints / "interrupted.ckpt"

    status, _, _ = interrupt_after_next_epoch(start_fit(tmp_path, tiny_data), last, signal.SIGKILL)
    assert status == -signal.SIGKILL
    assert all("state_dict" in load(path) for path in checkpoints.glob("*.ckpt"))  # none half-written

    resumed = start_fit(tmp_path, tiny_data, "--ckpt_path", "last")  # from last.ckpt, an epoch's end
    status, stdout, stderr = interrupt_after_next_epoch(resumed, last, signal.SIGINT)
    assert "Resuming from lightning_logs/version_0/checkpoints/last.ckpt" in stdout
    assert status == 128 + signal.SIGINT
    assert "lightning_logs/version_0/checkpoints/interrupted.ckpt" in one_line(stderr, "Interrupted (Ctrl-C)")
    assert "Received SIGTERM" not in stdout + stderr, "Ctrl-C is not reported as a SIGTERM"
    assert load(interrupted)["global_step"] >= load(last)["global_step"]  # mid-epoch, or at its very end

    resumed = start_fit(tmp_path, tiny_data, "--ckpt_path", "last")  # from interrupted.ckpt, mid-epoch
    status, stdout, stderr = interrupt_after_next_epoch(resumed, last, signal.SIGTERM)
    assert "Resuming from lightning_logs/version_0/checkpoints/interrupted.ckpt" in stdout
    assert status == 128 + signal.SIGTERM
    message = one_line(stderr, "Interrupted (SIGTERM)")
    assert (
        "lightning_logs/version_0/checkpoints/interrupted.ckpt" in message and "--ckpt_path last" in message
    )

    status, _, stderr = run_main_on_one_thread(
        *ARGS, f"--data.data_dir={tiny_data}", "--ckpt_path", "last", cwd=tmp_path
    )
    assert status == 0, stderr[-3000:]
    assert not interrupted.exists()  # the completed run removed it
    assert sorted(path.name for path in (tmp_path / "lightning_logs").iterdir()) == ["version_0"]
    final = load(last)
    assert (final["epoch"], final["global_step"]) == (uninterrupted["epoch"], uninterrupted["global_step"])
    for name, tensor in uninterrupted["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), name
    for index, state in uninterrupted["optimizer_states"][0]["state"].items():
        assert all(
            torch.equal(final["optimizer_states"][0]["state"][index][key], state[key]) for key in state
        )


def test_a_plain_fit_starts_fresh_beside_a_stray_interrupted_checkpoint(tmp_path, tiny_data, tiny_checkpoint):
    shutil.copy(tiny_checkpoint, tmp_path / "interrupted.ckpt")  # a finished epoch, as if left by another run
    args = ("fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK)
    status, _, stderr = run_main(*args, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    checkpoints = tmp_path / "lightning_logs" / "version_0" / "checkpoints"
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4, "trained its own 4 steps, not resumed from ./interrupted.ckpt"


CTRL_C_TWICE = """
import atexit, os, signal
import lightning as L

def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)

class CtrlCTwice(L.Callback):
    '''Ctrl-C after training step 3, and again: at once, while the checkpoint is saved, or at exit.'''

    pressed = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 3 and not self.pressed:
            self.pressed = True
            ctrl_c()
            {"at once": ctrl_c, "at exit": lambda: atexit.register(ctrl_c)}.get(os.environ["AGAIN"], list)()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self.pressed and os.environ["AGAIN"] == "while saving":
            ctrl_c()
"""


@pytest.mark.parametrize(
    "again,message",
    [
        ("at once", "Stopped (Ctrl-C) at once: nothing saved"),
        ("while saving", "Interrupted (Ctrl-C) at epoch 0, step 3: resumable checkpoint saved"),
        ("at exit", "Interrupted (Ctrl-C) at epoch 0, step 3: resumable checkpoint saved"),
    ],
)
def test_a_second_ctrl_c_ends_the_run_with_status_130_and_no_traceback(tmp_path, tiny_data, again, message):
    (tmp_path / "ctrl_c.py").write_text(CTRL_C_TWICE)
    pythonpath = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-m", "mnist_lightning", "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}",
         *QUICK, "--trainer.limit_train_batches=10", "--trainer.callbacks+=ctrl_c.CtrlCTwice"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": pythonpath, "OMP_NUM_THREADS": "1", "AGAIN": again},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and message in result.stderr, result.stderr[-3000:]
    interrupted = tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "interrupted.ckpt"
    assert interrupted.exists() == (again != "at once")
