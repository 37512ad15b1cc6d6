"""Shared fixtures: tiny MNIST-format IDX files written by the tests, the real data, and a CLI runner."""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REAL_DATA_DIR = Path(os.environ.get("MNIST_DATA_DIR", REPO.parent / "shared" / "datasets"))
CONFIG = REPO / "configs" / "default.yaml"
TINY_TRAIN, TINY_TEST = 512, 128


def write_idx(path: Path, array: torch.Tensor) -> None:
    """Write a uint8 tensor in the IDX format of the original MNIST files (big-endian header, raw bytes)."""
    array = array.to(torch.uint8).contiguous()
    header = struct.pack(">HBB", 0, 0x08, array.dim()) + struct.pack(f">{array.dim()}I", *array.shape)
    path.write_bytes(header + array.numpy().tobytes())


def synthetic_digits(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable fake digits: class k lights a 6x6 patch at a position of its own, on top of noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 10
    labels = labels[torch.randperm(count, generator=generator)]
    images = torch.randint(0, 60, (count, 28, 28), generator=generator)
    for k in range(10):
        row, col = 3 + 8 * (k // 4), 3 + 8 * (k % 4)
        images[labels == k, row : row + 6, col : col + 6] = 255
    return images.to(torch.uint8), labels.to(torch.uint8)


def write_mnist(
    data_dir: Path, train: int = TINY_TRAIN, test: int = TINY_TEST, dataset: str = "MNIST"
) -> Path:
    """Write the four raw IDX files (synthetic content) under ``data_dir/<dataset>/raw``; returns data_dir."""
    raw = data_dir / dataset / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, count, seed in (("train", train, 0), ("t10k", test, 1)):
        images, labels = synthetic_digits(count, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return data_dir


def mnist_normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 MNIST images (N, 28, 28) -> the normalized float batch (N, 1, 28, 28) the model takes."""
    from mnist_lightning.datasets import DATASETS
    from mnist_lightning.sampling import normalize

    return normalize(images, DATASETS["MNIST"].mean, DATASETS["MNIST"].std)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A data_dir holding tiny synthetic MNIST files (512 train, 128 test); treat as read-only."""
    return write_mnist(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real MNIST raw files beside the project (override with MNIST_DATA_DIR)."""
    if not (REAL_DATA_DIR / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.fail(f"real MNIST files not found under {REAL_DATA_DIR}/MNIST/raw; set MNIST_DATA_DIR")
    return REAL_DATA_DIR


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m mnist_lightning ARGS`` as a user would, in ``cwd``; output captured as text."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "mnist_lightning", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_on_checkpoint(
    subcommand: str, checkpoint: Path, *args: str, cwd: Path
) -> subprocess.CompletedProcess:
    """``run_cli(SUBCOMMAND --config configs/default.yaml --ckpt_path CHECKPOINT ARGS)``."""
    return run_cli(subcommand, "--config", CONFIG, "--ckpt_path", checkpoint, *args, cwd=cwd)


# Arguments that make a CLI run tiny: a couple of small batches, no progress bar.
QUICK = (
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=4",
    "--trainer.limit_val_batches=2",
    "--trainer.enable_progress_bar=false",
    "--data.batch_size=32",
    "--data.val_size=64",
)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_data) -> Path:
    """The best checkpoint of a QUICK command-line fit on tiny_data (it still errs); treat as read-only."""
    folder = tmp_path_factory.mktemp("tiny_fit")
    result = run_cli("fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / re.search(r"Best checkpoint: (\S+)", result.stdout).group(1)


@pytest.fixture(scope="session")
def digit_data(tmp_path_factory) -> Path:
    """A data_dir whose MNIST files hold pictures of printed digits prepared as MNIST digits (800 train, 100
    test), so a model trained on them recognizes the pictures the serve tests send; treat as read-only."""
    from serving import prepared_digits

    data_dir = tmp_path_factory.mktemp("digits")
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count, seed in (("train", 800, 0), ("t10k", 100, 1)):
        images, labels = prepared_digits(count, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return data_dir


@pytest.fixture(scope="session")
def digit_checkpoint(tmp_path_factory, digit_data) -> Path:
    """The best checkpoint of a short fit (in this process) on digit_data; treat as read-only."""
    from inprocess import run_main

    folder = tmp_path_factory.mktemp("digit_fit")
    status, stdout, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={digit_data}", "--trainer.max_epochs=8",
        "--trainer.enable_progress_bar=false", "--data.batch_size=32", "--data.val_size=100", cwd=folder,
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    return folder / re.search(r"Best checkpoint: (\S+)", stdout).group(1)


@pytest.fixture(scope="session")
def server(tmp_path_factory, digit_checkpoint):
    """``serve --ckpt_path digit_checkpoint`` running as a subprocess; stopped with SIGTERM at the end, which
    must end it cleanly."""
    from serving import ServerProcess

    served = ServerProcess("--ckpt_path", digit_checkpoint, cwd=tmp_path_factory.mktemp("serve"))
    yield served
    assert served.stop(signal.SIGTERM) == 0, served.stderr()[-3000:]
    assert "Traceback" not in served.stderr(), served.stderr()[-3000:]
