"""``metrics.json``: the test metrics of a ``test`` run."""

from __future__ import annotations

import lightning as L
import torch

from mnist_lightning.callbacks.outputs import output_dir, write_json, writes_files
from mnist_lightning.callbacks.progress import tell
from mnist_lightning.run_layout import METRICS_FILE


class TestMetricsWriter(L.Callback):
    """After ``test``, writes the logged ``test_*`` metrics to ``metrics.json`` in the run folder (rank 0)."""

    __test__ = False  # a callback, not a test class for pytest to collect

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not writes_files(trainer):
            return
        folder = output_dir(trainer)
        if not trainer.is_global_zero:
            return
        metrics = {
            name: value.item() if isinstance(value, torch.Tensor) else value
            for name, value in sorted(trainer.callback_metrics.items())
            if name.startswith("test_")
        }
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / METRICS_FILE
        write_json(path, metrics)
        tell(trainer, f"Test metrics written to {path}")
