"""The callbacks work with any model that offers what ``callbacks/protocols.py`` declares: a LightningModule
of a person's own (no ``.net``, no ``MNISTClassifier``) trained, tested and used to predict with every
callback of the default recipe, from Python."""

from __future__ import annotations

import importlib
import json

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.nn import functional as F

from mnist_lightning import MNISTDataModule, run_layout
from mnist_lightning.callbacks.interrupt import InterruptCheckpoint
from mnist_lightning.callbacks.progress import ProgressBar

from helpers.commands import CONFIG
from helpers.idx import TINY_TEST


class LinearDigits(L.LightningModule):
    """A linear classifier with its own names: ``layers``, no ``net``, no ``val_acc_best``."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))

    def training_step(self, batch, batch_idx):
        images, targets = batch
        loss = F.cross_entropy(self.layers(images), targets)
        self.log("train_loss", loss)
        return loss

    def _logits(self, batch, stage: str) -> torch.Tensor:
        images, targets = batch
        logits = self.layers(images)
        self.log(f"{stage}_acc", (logits.argmax(dim=1) == targets).float().mean())
        return logits

    def validation_step(self, batch, batch_idx):
        return self._logits(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._logits(batch, "test")

    def predict_step(self, batch, batch_idx):
        return self.layers(batch[0]).softmax(dim=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def default_recipe_callbacks() -> list[L.Callback]:
    """The callbacks ``configs/default.yaml`` lists, built as the command line builds them, and the two the
    command line adds (the progress bar, the checkpoint on Ctrl-C)."""
    callbacks = [ProgressBar(), InterruptCheckpoint()]
    for entry in yaml.safe_load(CONFIG.read_text())["trainer"]["callbacks"]:
        module, name = entry["class_path"].rsplit(".", 1)
        callbacks.append(getattr(importlib.import_module(module), name)(**entry.get("init_args", {})))
    return callbacks


def test_the_default_recipes_callbacks_report_a_model_without_net(tmp_path, tiny_data):
    model, data = LinearDigits(), MNISTDataModule(data_dir=str(tiny_data), batch_size=64, val_size=128)
    assert not hasattr(model, "net")
    trainer = L.Trainer(
        default_root_dir=tmp_path, max_epochs=2, log_every_n_steps=2, enable_model_summary=False,
        logger=TensorBoardLogger(tmp_path, name=""), callbacks=default_recipe_callbacks(),
    )  # fmt: skip
    trainer.fit(model, data)
    run = tmp_path / "version_0"
    summary = json.loads((run / run_layout.SUMMARY_FILE).read_text())
    assert summary["status"] == "finished" and summary["epochs"] == 2 and summary["batch_size"] == 64
    assert summary["net"] == {"class": None, "args": {}} and summary["val_acc_best"] is None
    assert summary["monitor"] == "val_acc" and 0 <= summary["best_score"] <= 1
    assert (run_layout.checkpoint_folder(run) / run_layout.LAST_CHECKPOINT).is_file()
    assert (run / run_layout.PROVENANCE_FILE).is_file()

    best = summary["best_checkpoint"]
    trainer.test(model, data, ckpt_path=best)
    trainer.predict(model, data, ckpt_path=best)
    tested = run / run_layout.evaluation_folder("test", best)
    metrics = json.loads((tested / run_layout.METRICS_FILE).read_text())
    report = json.loads((tested / run_layout.REPORT_NUMBERS_FILE).read_text())
    assert (
        report["accuracy"] == pytest.approx(metrics["test_acc"])
        and sum(map(sum, report["confusion_matrix"]["counts"])) == TINY_TEST
    )
    assert all((tested / name).is_file() for name in run_layout.REPORT_FILES)
    predictions = run / run_layout.evaluation_folder("predict", best) / run_layout.PREDICTIONS_FILE
    assert len(predictions.read_text().splitlines()) == TINY_TEST + 1
