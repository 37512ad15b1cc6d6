"""Image preparations for tests of the decoder processes (tools/serve/preparing.py), which import them by
name: NumPy only, as the server's own preparation, so that a decoder starts as fast."""

from __future__ import annotations

import os
import threading

import numpy as np


def pid_or_refusal(value: str) -> bytes:
    """``"bad"``: a ValueError; ``"stuck"``: never returns; ``"hoard"``: keeps 300 MB for the rest of the
    process; any value: the decoder process's id, as 784 bytes."""
    if value == "bad":
        raise ValueError("is not what this test sends")
    if value == "stuck":
        threading.Event().wait()
    if value == "hoard":
        HOARD.append(np.ones(300_000_000 // 8))
    return os.getpid().to_bytes(784, "little")


HOARD: list = []
