"""The seed recipe as a plain PyTorch script, the baseline the Lightning project is measured against.

    python benchmarks/plain_pytorch.py --data_dir /path/to/datasets --loader torchvision --epochs 3

``--loader torchvision`` is the classic pipeline (torchvision MNIST -> PIL -> ToTensor -> Normalize,
DataLoader with batch 64, shuffled); ``--loader tensor`` runs the same loop on pre-loaded, pre-normalized
tensors indexed a batch at a time (the eager floor).
Prints one JSON line: seconds per epoch, test accuracy, peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

MEAN, STD = 0.1307, 0.3081


def seed_model() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )


def torchvision_batches(data_dir: str, train: bool):
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    dataset = datasets.MNIST(data_dir, train=train, transform=transform)
    loader = DataLoader(dataset, batch_size=64, shuffle=train)
    return lambda: iter(loader)


def tensor_batches(data_dir: str, train: bool):
    dataset = datasets.MNIST(data_dir, train=train)
    images = ((dataset.data.float() / 255 - MEAN) / STD).unsqueeze(1)
    labels = dataset.targets

    def epoch():
        order = torch.randperm(len(labels)) if train else torch.arange(len(labels))
        for start in range(0, len(labels), 64):
            index = order[start : start + 64]
            yield images[index], labels[index]

    return epoch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--loader", choices=["torchvision", "tensor"], default="torchvision")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    torch.manual_seed(42)
    make = torchvision_batches if args.loader == "torchvision" else tensor_batches
    train_batches, test_batches = make(args.data_dir, True), make(args.data_dir, False)
    model = seed_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    epoch_seconds = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        model.train()
        for x, y in train_batches():
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        epoch_seconds.append(time.perf_counter() - start)

    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in test_batches():
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps({"epoch_seconds": epoch_seconds, "test_acc": correct / total, "peak_rss_mb": peak_rss_mb})
    )


if __name__ == "__main__":
    main()
