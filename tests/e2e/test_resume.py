"""Interrupted runs as a user meets them: SIGKILL, Ctrl-C, SIGTERM during fit, then ``--ckpt_path last``.

The runs are subprocesses (signals are what is tested); each signal is sent while the run is held at a
known step in the middle of an epoch (``pause_at_step.PauseAtStep``), never after a guessed sleep.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from helpers.commands import CONFIG, QUICK, subprocess_env
from helpers.inprocess import run_main

TESTS = Path(__file__).resolve().parents[1]  # holds the helpers package
# 448 training images in batches of 8: 56 steps per epoch
STEPS_PER_EPOCH = 56
ARGS = (
    "fit", "--config", str(CONFIG), "--trainer.max_epochs=4", "--trainer.enable_progress_bar=false",
    "--data.batch_size=8", "--data.val_size=64",
)  # fmt: skip


def start_fit(cwd: Path, data: Path, *extra: str, pause_at: int, second_ctrl_c: bool = False):
    """``python -m mnist_lightning fit`` in the background, held at step ``pause_at``; Ctrl-C is SIGINT."""
    pause = {"step": pause_at, "marker": str(cwd / "paused")}
    if second_ctrl_c:
        pause["second_marker"] = str(cwd / "paused_again")
    for name in ("paused", "paused_again"):
        (cwd / name).unlink(missing_ok=True)
    callback = {"class_path": "helpers.pause_at_step.PauseAtStep", "init_args": pause}
    env = subprocess_env(OMP_NUM_THREADS="1")  # tiny model, shared CPU
    env["PYTHONPATH"] = f"{env['PYTHONPATH']}{os.pathsep}{TESTS}"
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_lightning", *ARGS, f"--data.data_dir={data}", *extra,
         f"--trainer.callbacks+={json.dumps(callback)}"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            stdout, stderr = process.communicate()
            pytest.fail(f"the run never reached {path.name}:\n{stdout[-2000:]}\n{stderr[-3000:]}")
        time.sleep(0.01)


def signal_when_paused(process: subprocess.Popen, cwd: Path, signum: int) -> tuple[int, str, str]:
    wait_for(cwd / "paused", process)
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


@dataclass
class Stop:
    """One stop of the chain: the run's exit status and output, and what it left in the run's folder."""

    status: int
    stdout: str
    stderr: str
    last: dict  # last.ckpt
    interrupted_bytes: bytes | None  # interrupted.ckpt, if there is one
    all_whole: bool  # every checkpoint file loads
    runs: list[str]  # the folders under lightning_logs

    @property
    def last_step(self) -> int:
        return self.last["global_step"]

    @property
    def interrupted_step(self) -> int | None:
        if self.interrupted_bytes is None:
            return None
        return torch.load(io.BytesIO(self.interrupted_bytes), map_location="cpu", weights_only=True)[
            "global_step"
        ]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, tiny_data) -> dict[str, Stop]:
    """One run stopped four times in the middle of an epoch, each resumed from what the one before left:
    SIGKILL at step 70, Ctrl-C at 90, SIGTERM at 130, Ctrl-C twice at 150; then resumed to the end."""
    cwd = tmp_path_factory.mktemp("chain")
    checkpoints = cwd / "lightning_logs" / "version_0" / "checkpoints"
    last, interrupted = checkpoints / "last.ckpt", checkpoints / "interrupted.ckpt"
    stops: dict[str, Stop] = {}

    def record(name: str, status: int, stdout: str, stderr: str) -> None:
        stops[name] = Stop(
            status, stdout, stderr, load(last), interrupted.read_bytes() if interrupted.exists() else None,
            all("state_dict" in load(path) for path in checkpoints.glob("*.ckpt")),
            sorted(path.name for path in (cwd / "lightning_logs").iterdir()),
        )  # fmt: skip

    record("sigkill", *signal_when_paused(start_fit(cwd, tiny_data, pause_at=70), cwd, signal.SIGKILL))
    resumed = start_fit(cwd, tiny_data, "--ckpt_path", "last", pause_at=90)
    record("ctrl_c", *signal_when_paused(resumed, cwd, signal.SIGINT))
    resumed = start_fit(cwd, tiny_data, "--ckpt_path", "last", pause_at=130)
    record("sigterm", *signal_when_paused(resumed, cwd, signal.SIGTERM))
    resumed = start_fit(cwd, tiny_data, "--ckpt_path", "last", pause_at=150, second_ctrl_c=True)
    wait_for(cwd / "paused", resumed)
    resumed.send_signal(signal.SIGINT)  # the first: stop after this step and save...
    wait_for(cwd / "paused_again", resumed)
    resumed.send_signal(signal.SIGINT)  # ...the second, before that: stop at once
    stdout, stderr = resumed.communicate(timeout=300)
    record("ctrl_c_twice", resumed.returncode, stdout, stderr)
    record(
        "completed",
        *run_main_on_one_thread(*ARGS, f"--data.data_dir={tiny_data}", "--ckpt_path", "last", cwd=cwd),
    )
    return stops


@pytest.mark.slow  # whole processes
def test_sigkill_leaves_the_last_epochs_checkpoint_whole(chain):
    assert chain["sigkill"].status == -signal.SIGKILL
    assert chain["sigkill"].last_step == STEPS_PER_EPOCH
    assert chain["sigkill"].all_whole  # no checkpoint half-written


@pytest.mark.slow
def test_ctrl_c_saves_a_resumable_checkpoint_at_that_very_step(chain):
    stop = chain["ctrl_c"]
    assert "Resuming from lightning_logs/version_0/checkpoints/last.ckpt" in stop.stdout
    assert stop.status == 128 + signal.SIGINT
    assert "lightning_logs/version_0/checkpoints/interrupted.ckpt" in one_line(
        stop.stderr, "Interrupted (Ctrl-C)"
    )
    assert "Received SIGTERM" not in stop.stdout + stop.stderr, "Ctrl-C is not reported as a SIGTERM"
    assert stop.interrupted_step == 90 and stop.last_step == STEPS_PER_EPOCH


@pytest.mark.slow
def test_sigterm_resumes_from_the_interrupted_checkpoint_and_says_how_to_continue(chain):
    stop = chain["sigterm"]
    assert "Resuming from lightning_logs/version_0/checkpoints/interrupted.ckpt" in stop.stdout
    assert stop.status == 128 + signal.SIGTERM
    message = one_line(stop.stderr, "Interrupted (SIGTERM)")
    assert (
        "lightning_logs/version_0/checkpoints/interrupted.ckpt" in message and "--ckpt_path last" in message
    )
    assert stop.interrupted_step == 130 and stop.last_step == 2 * STEPS_PER_EPOCH


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_saving_and_removing_nothing(chain):
    stop = chain["ctrl_c_twice"]
    assert "Resuming from lightning_logs/version_0/checkpoints/interrupted.ckpt" in stop.stdout
    assert stop.status == 128 + signal.SIGINT, stop.stderr[-3000:]
    assert "nothing saved" in one_line(stop.stderr, "Stopped (Ctrl-C) at once")
    unchanged = stop.interrupted_bytes == chain["sigterm"].interrupted_bytes
    assert unchanged and stop.last_step == 2 * STEPS_PER_EPOCH


@pytest.mark.slow
def test_the_completed_resume_has_the_weights_of_a_run_never_stopped(chain, uninterrupted):
    stop = chain["completed"]
    assert stop.status == 0, stop.stderr[-3000:]
    assert stop.interrupted_step is None  # the completed run removed interrupted.ckpt
    assert stop.runs == ["version_0"]
    final = stop.last
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
    '''Ctrl-C after training step 3, and again: while the checkpoint is saved, or at exit.'''

    pressed = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 3 and not self.pressed:
            self.pressed = True
            ctrl_c()
            if os.environ["AGAIN"] == "at exit":
                atexit.register(ctrl_c)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self.pressed and os.environ["AGAIN"] == "while saving":
            ctrl_c()
"""


@pytest.mark.slow  # whole processes
@pytest.mark.parametrize("again", ["while saving", "at exit"])  # "at once": in the resume chain above
def test_a_second_ctrl_c_after_the_save_began_ends_the_run_with_status_130_and_no_traceback(
    tmp_path, tiny_data, again
):
    (tmp_path / "ctrl_c.py").write_text(CTRL_C_TWICE)
    env = subprocess_env(OMP_NUM_THREADS="1", AGAIN=again)
    env["PYTHONPATH"] = f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"
    result = subprocess.run(
        [sys.executable, "-m", "mnist_lightning", "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}",
         *QUICK, "--trainer.limit_train_batches=10", "--trainer.callbacks+=ctrl_c.CtrlCTwice"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert result.returncode == 128 + signal.SIGINT, result.stderr[-3000:]
    message = "Interrupted (Ctrl-C) at epoch 0, step 3: resumable checkpoint saved"
    assert "Traceback" not in result.stderr and message in result.stderr, result.stderr[-3000:]
    assert (tmp_path / "lightning_logs" / "version_0" / "checkpoints" / "interrupted.ckpt").exists()
