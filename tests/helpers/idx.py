"""Tiny data sets in MNIST's IDX format, written by the tests themselves."""

from __future__ import annotations

import struct
from pathlib import Path

import torch

TINY_TRAIN, TINY_TEST = 512, 128
DIGITS = [str(digit) for digit in range(10)]


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
    from mnist_lightning.data.datasets import DATASETS
    from mnist_lightning.data.sampling import normalize

    return normalize(images, DATASETS["MNIST"].mean, DATASETS["MNIST"].std)
