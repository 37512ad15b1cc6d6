"""The progress bar and what the callbacks print: each message on lines of its own, never onto a bar's line,
and an evaluation's report or summary after its finished bar."""

from __future__ import annotations

import os
import re
import signal

import lightning as L
import pytest

from helpers.commands import QUICK
from helpers.inprocess import run_main, run_on_checkpoint

BAR_END = r"(?:it/s|s/it)\]"  # how a tqdm bar's line ends: "... 51.40it/s]"


def on_a_bar_line(output: str) -> list[str]:
    """The lines where text follows a progress bar (a bar's line ends with a newline or a carriage return)."""
    return [line for line in output.split("\n") if re.search(BAR_END + r" *[^\s]", line)]


def test_an_evaluations_report_and_summary_follow_its_finished_bar(tmp_path, tiny_data, tiny_checkpoint):
    bar = ("--trainer.enable_progress_bar=true", f"--data.data_dir={tiny_data}")
    status, stdout, stderr = run_on_checkpoint("test", tiny_checkpoint, *bar, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    assert not on_a_bar_line(stdout), stdout[-3000:]
    assert stdout.rindex("Testing DataLoader 0: 100%") < stdout.index("precision    recall")
    status, stdout, stderr = run_on_checkpoint("predict", tiny_checkpoint, *bar, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    assert not on_a_bar_line(stdout), stdout[-3000:]
    summary = stdout.index("Predicted 128 test images")
    assert stdout.rindex("Predicting DataLoader 0: 100%") < summary  # the summary last, no bar after it
    assert not re.search(BAR_END, stdout[summary:])


class StopAtStep2(L.Callback):
    """Sends this process ``signal_number`` after training step 2, while the epoch's bar is drawn."""

    signal_number = signal.SIGINT

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 2:
            os.kill(os.getpid(), StopAtStep2.signal_number)


@pytest.mark.parametrize("stop,name", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_an_interrupted_fit_says_so_below_its_bar(tmp_path, tiny_data, stop, name):
    StopAtStep2.signal_number = stop
    status, output, _ = run_main(
        "fit", f"--data.data_dir={tiny_data}", *QUICK, "--trainer.enable_progress_bar=true",
        "--trainer.callbacks+=test_progress.StopAtStep2", cwd=tmp_path, one_stream=True,
    )  # fmt: skip
    assert status == 128 + stop, output[-3000:]
    assert re.search(rf"\nInterrupted \({name}\) at epoch 0, step 2", output), output[-3000:]
    assert not on_a_bar_line(output), output[-3000:]
