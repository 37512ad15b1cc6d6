"""Whole-file checkpoint writes: a checkpoint path holds the old file or the new one, never a torn one."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mnist_lightning.errors import UserError
from mnist_lightning.run_layout import partial_file_name


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each local checkpoint to a temporary file beside it, then renames it into place.

    Lightning's own writer stages the file in the system temp folder and moves it over; when that folder is
    on another filesystem than the checkpoints (a local /tmp and shared storage, as on clusters) the move is
    a copy, and a kill during the copy leaves a truncated ``last.ckpt`` where a good one was. A rename within
    one folder is atomic: after SIGKILL or a crash the path holds the old checkpoint or the new one, whole.
    URLs (``s3://``, ``file://``) still go through Lightning's writer. A full disk is one UserError naming
    the file and the newest checkpoint that is whole.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options=None) -> None:
        if "://" in str(path) or storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(partial_file_name(target.name))  # left behind only by a kill, then reused
        try:
            with open(partial, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)
        except (OSError, RuntimeError) as err:  # torch.save reports a failed write as a RuntimeError
            full = _out_of_space(err)
            if full is None:
                raise
            raise UserError(
                f"cannot write the checkpoint '{target}': {full.strerror or 'no space left'} (the disk or "
                f"quota is full). Nothing saved before is lost: {_last_whole_checkpoint(target)}. Free some "
                f"space (or log elsewhere with --trainer.logger.init_args.save_dir), then continue with the "
                f"same command plus --ckpt_path last."
            ) from None
        finally:
            partial.unlink(missing_ok=True)


def _out_of_space(err: BaseException | None) -> OSError | None:
    """The "no space left" (or "quota exceeded") OSError in ``err``'s chain, if there is one."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _last_whole_checkpoint(target: Path) -> str:
    """The newest checkpoint beside ``target`` (whole: each was renamed into place complete), for messages."""
    saved = [path for path in target.parent.glob("*.ckpt") if path.is_file()]
    newest = max(saved, key=lambda path: path.stat().st_mtime, default=None)
    return f"the newest whole checkpoint is {newest}" if newest else "no checkpoint had been saved yet"
