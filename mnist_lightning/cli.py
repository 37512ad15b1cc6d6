"""The command line: LightningCLI over MNISTClassifier and MNISTDataModule, plus result files and checks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from lightning.pytorch.cli import LightningCLI

from mnist_lightning.data import MNISTDataModule
from mnist_lightning.errors import UserError
from mnist_lightning.model import MNISTClassifier

CKPT_KEYWORDS = ("last", "best", "hpc", "registry")


def check_checkpoint(ckpt_path: str | None) -> None:
    """Fail early, with a clear message, on a --ckpt_path that does not exist or is not a checkpoint."""
    if ckpt_path is None or ckpt_path in CKPT_KEYWORDS or ckpt_path.startswith("registry:"):
        return
    path = Path(ckpt_path)
    if not path.is_file():
        raise UserError(
            f"--ckpt_path '{ckpt_path}' does not exist. Checkpoints are written to "
            f"lightning_logs/version_N/checkpoints/ by 'fit'; pass one of those files."
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise UserError(
            f"--ckpt_path '{ckpt_path}' is not a readable checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Pass a .ckpt file written by this project's 'fit'."
        ) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"--ckpt_path '{ckpt_path}' is not a Lightning checkpoint (it has no 'state_dict').")


class MNISTLightningCLI(LightningCLI):
    """``fit``, ``validate``, ``test`` and ``predict`` for the MNIST classifier, configured by YAML files.

    On top of LightningCLI: checks ``--ckpt_path`` before anything starts, prints the best checkpoint when
    ``fit`` ends, and writes the test metrics to ``metrics.json`` in the run's log directory.
    """

    def add_arguments_to_parser(self, parser) -> None:
        # The data module shards every split itself, exactly (no padded or repeated samples under DDP).
        parser.set_defaults({"trainer.use_distributed_sampler": False})

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            check_checkpoint(self.config[subcommand].get("ckpt_path"))

    def after_fit(self) -> None:
        callback = self.trainer.checkpoint_callback
        if self.trainer.is_global_zero and callback is not None and callback.best_model_path:
            print(f"Best checkpoint: {callback.best_model_path}")

    def after_test(self) -> None:
        log_dir = self.trainer.log_dir  # on every rank: under DDP it is broadcast from rank 0
        if not self.trainer.is_global_zero:
            return
        metrics = {
            name: value.item() if isinstance(value, torch.Tensor) else value
            for name, value in self.trainer.callback_metrics.items()
            if name.startswith("test_")
        }
        path = Path(log_dir or ".") / "metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        print(f"Test metrics written to {path}")


def main(args: list[str] | None = None) -> None:
    """Entry point of ``python -m mnist_lightning`` and the ``mnist-lightning`` command."""
    # Redraw the progress bar every 50 steps, not every step (a visible cost for a model this small);
    # Lightning's TQDMProgressBar honours this variable, and users can still set it themselves.
    os.environ.setdefault("TQDM_MINITERS", "50")
    try:
        MNISTLightningCLI(
            MNISTClassifier,
            MNISTDataModule,
            auto_configure_optimizers=False,
            save_config_kwargs={"overwrite": True},
            args=args,
        )
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
