"""Tiny sweeps: a sweep file over a small search space, and the sweep command run in this process."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import yaml

from mnist_lightning.cli.main import main

from helpers.commands import CONFIG

# tiny trials: 2 epochs of 4 batches of 16 on the synthetic data, a small MLP
TRIAL_ARGS = (
    "--trainer.max_epochs=2", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=1",
    "--data.val_size=64", "--model.net.init_args.hidden_sizes=[32]",
)  # fmt: skip
SPACE = {
    "model.optimizer.init_args.lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "data.batch_size": {"choices": [16, 32]},
    "model.net.init_args.hidden_sizes": {"choices": [[32], [48, 16]]},
}


def write_sweep(folder: Path, name: str = "tiny", **content) -> Path:
    content = {
        "params": SPACE,
        "sampler": {"name": "RandomSampler", "args": {"seed": 0}},
        "pruner": None,
    } | content
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(content))
    return path


def sweep_args(sweep_file: Path, data: Path, *extra: str) -> list[str]:
    return [
        "--config",
        str(CONFIG),
        "--sweep",
        str(sweep_file),
        f"--data.data_dir={data}",
        *TRIAL_ARGS,
        *extra,
    ]


def run_sweep(*args: str, cwd: Path) -> tuple[int, str, str]:
    """``mnist-lightning sweep ARGS`` in this process (the entry point's ``main``), in ``cwd``; returns exit
    status, stdout, stderr."""
    saved_cwd, stdout, stderr, status = os.getcwd(), io.StringIO(), io.StringIO(), 0
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            main(["sweep", *args])
    except SystemExit as exit_:
        status = exit_.code or 0
    finally:
        os.chdir(saved_cwd)
    return status, stdout.getvalue(), stderr.getvalue()
