"""Process-wide settings of the commands that train, and the exit of an interrupted run."""

from __future__ import annotations

import ctypes
import os
import signal
from typing import NoReturn

from mnist_lightning import compat


def _skip_nvml_probe_without_nvml() -> None:
    """Stop torch from looking for the NVIDIA driver library on every optimizer step where it is absent.

    ``import lightning`` sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1``, which makes ``torch.cuda.is_available()``
    try to load ``libnvidia-ml.so.1`` on each call, and Adam asks once per step. Where that library does not
    load, torch falls back to ``cudaGetDeviceCount`` anyway, so unsetting the variable gives the same answer
    without a failed library search per step (its cost: benchmarks/NOTES.md).
    """
    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)


def prepare_process() -> None:
    """Process-wide settings every command that trains needs (``main`` and the sweep call it)."""
    _skip_nvml_probe_without_nvml()
    # Redraw the progress bar every 50 steps, not every step (a visible cost for a model this small);
    # Lightning's TQDMProgressBar honours this variable, and users can still set it themselves.
    os.environ.setdefault("TQDM_MINITERS", "50")
    # Call a callback's hook only where it does something: with the recipe's callbacks, most of the hooks
    # called per training step are Callback's empty ones (see compat); undone by finish_process
    compat.skip_callback_hooks_that_do_nothing()


def finish_process() -> None:
    """Undo what :func:`prepare_process` changed in Lightning when a command returns, so that a Trainer built
    afterwards in the same process (a user's own, a test's) runs Lightning as it is."""
    compat.call_every_callback_hook()


def exit_interrupted(status: int) -> NoReturn:
    """Exit with ``status`` (130 or 143), ignoring further Ctrl-Cs: they would break the exit handlers of
    torch, TensorBoard and tqdm with a traceback (the Trainer restores the default handler when it ends)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise SystemExit(status) from None
