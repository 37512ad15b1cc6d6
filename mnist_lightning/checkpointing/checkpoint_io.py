"""Whole-file checkpoint writes: a checkpoint path holds the old file or the new one, never a torn one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each local checkpoint to a temporary file beside it, then renames it into place.

    Lightning's own writer stages the file in the system temp folder and moves it over; when that folder is
    on another filesystem than the checkpoints (a local /tmp and shared storage, as on clusters) the move is
    a copy, and a kill during the copy leaves a truncated ``last.ckpt`` where a good one was. A rename within
    one folder is atomic: after SIGKILL or a crash the path holds the old checkpoint or the new one, whole.
    URLs (``s3://``, ``file://``) still go through Lightning's writer.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options=None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")  # left behind only by a kill, then reused
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
