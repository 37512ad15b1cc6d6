"""Checkpoint writes survive SIGKILL: the file on disk is always a whole checkpoint, old or new."""

from __future__ import annotations

import os
import random
import signal
import time

import torch

from mnist_lightning.fault_tolerance import AtomicCheckpointIO

PAYLOADS = [torch.full((2_000_000,), float(value)) for value in range(4)]  # 8 MB each: writes take a while


def checkpoint(step: int) -> dict:
    return {"step": step, "state_dict": {"weight": PAYLOADS[step % len(PAYLOADS)]}}


def test_sigkill_at_any_moment_of_a_checkpoint_write_leaves_a_whole_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint(checkpoint(0), path)
    steps_seen = set()
    for trial in range(12):
        child = os.fork()
        if child == 0:  # overwrite the checkpoint again and again until killed (tensors made before the fork)
            try:
                step = 1 + 1000 * trial
                while True:
                    writer.save_checkpoint(checkpoint(step), path)
                    step += 1
            finally:
                os._exit(1)
        time.sleep(random.uniform(0.01, 0.15))
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        saved = torch.load(path, weights_only=True)
        assert torch.equal(saved["state_dict"]["weight"], checkpoint(saved["step"])["state_dict"]["weight"])
        steps_seen.add(saved["step"])
    assert len(steps_seen) > 1  # the kills did land while the file was being replaced again and again
