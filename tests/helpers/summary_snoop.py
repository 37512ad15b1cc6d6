"""A test-only callback that keeps a copy of a run's ``summary.json`` as each training epoch starts (after
``RunSummary`` has written it), so a test sees what ``runs`` would read of a live run."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from mnist_lightning.run_layout import SUMMARY_FILE, run_folder


class SummarySnoop(L.Callback):
    def __init__(self, copies: str) -> None:
        self.copies = Path(copies)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        summary = json.loads((run_folder(trainer) / SUMMARY_FILE).read_text())
        self.copies.mkdir(parents=True, exist_ok=True)
        (self.copies / f"epoch_{trainer.current_epoch}.json").write_text(json.dumps(summary))
