"""A test-only callback that holds a training run at a known step, so a test signals it there.

The interrupt tests add it to a ``fit`` subprocess (``--trainer.callbacks+=...``, this folder on its
``PYTHONPATH``). When the optimizer step ``step`` has been taken it writes ``marker`` and waits until a
signal asks the run to stop (Lightning's SIGTERM flag, which Ctrl-C also sets here) or kills it. With
``second_marker`` it then writes that file and waits again, for a second Ctrl-C. So every signal lands at
that step, in the middle of an epoch, on every run, however busy the machine is.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L


class PauseAtStep(L.Callback):
    def __init__(
        self, step: int, marker: str, second_marker: str | None = None, timeout: float = 300
    ) -> None:
        self.step = step
        self.marker = Path(marker)
        self.second_marker = Path(second_marker) if second_marker else None
        self.timeout = timeout

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step != self.step:
            return
        deadline = time.monotonic() + self.timeout
        self.marker.write_text(str(trainer.global_step))
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.005)
        if self.second_marker is not None:
            self.second_marker.write_text(str(trainer.global_step))
            while time.monotonic() < deadline:  # a second Ctrl-C raises KeyboardInterrupt in here
                time.sleep(0.005)
