"""The networks a classifier can train: each maps normalized images (N, 1, 28, 28) to logits (N, C).

Any ``nn.Module`` with that contract works as ``model.net``; LightningCLI builds it from the config's
``class_path`` and ``init_args``, and ``num_classes`` is filled in from the data set.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class MLP(nn.Module):
    """An MLP on flattened 28x28 images: per hidden layer Linear, [BatchNorm], ReLU, [Dropout].

    Args:
        hidden_sizes: widths of the hidden layers (the seed recipe: 128, 64).
        dropout: dropout probability after each hidden layer, in [0, 1).
        batch_norm: batch normalization after each hidden linear layer.
        num_classes: outputs; set from the data set by the command line.
    """

    def __init__(
        self,
        hidden_sizes: Sequence[int] = (128, 64),
        dropout: float = 0.0,
        batch_norm: bool = False,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        hidden_sizes = list(hidden_sizes)
        if not hidden_sizes or any(width < 1 for width in hidden_sizes):
            raise ValueError(f"hidden_sizes must be a non-empty list of positive widths, got {hidden_sizes}.")
        _check_dropout(dropout)
        layers: list[nn.Module] = [nn.Flatten()]
        width_in = 28 * 28
        for width in hidden_sizes:
            layers.append(nn.Linear(width_in, width, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width_in = width
        layers.append(nn.Linear(width_in, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class ConvNet(nn.Module):
    """A small CNN: per stage a 3x3 convolution, BatchNorm, ReLU and a 2x2 max-pool; dropout, a linear head.

    With the defaults, 28x28 -> 14x14 (32 channels) -> 7x7 (64) -> 3x3 (128) -> dropout -> linear: about 104k
    parameters. Activations are kept channels-last, which runs these convolutions faster on a CPU
    (benchmarks/NOTES.md).

    Args:
        channels: output channels of each stage; each stage halves the image side.
        dropout: dropout probability before the linear head, in [0, 1).
        num_classes: outputs; set from the data set by the command line.
    """

    def __init__(
        self, channels: Sequence[int] = (32, 64, 128), dropout: float = 0.25, num_classes: int = 10
    ) -> None:
        super().__init__()
        channels = list(channels)
        if not channels or any(width < 1 for width in channels):
            raise ValueError(f"channels must be a non-empty list of positive counts, got {channels}.")
        _check_dropout(dropout)
        layers: list[nn.Module] = []
        width_in, side = 1, 28
        for width in channels:
            layers += [nn.Conv2d(width_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            layers.append(nn.MaxPool2d(2))
            width_in, side = width, side // 2
        if side < 1:
            raise ValueError(
                f"channels: {len(channels)} stages halve a 28x28 image to nothing; use at most 4."
            )
        layers += [nn.Flatten(), nn.Dropout(dropout), nn.Linear(width_in * side * side, num_classes)]
        self.layers = nn.Sequential(*layers).to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x.contiguous(memory_format=torch.channels_last))


def _check_dropout(dropout: float) -> None:
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
