"""mnist-lightning: train, compare and ship an MNIST digit classifier with PyTorch Lightning."""

from mnist_lightning.data import MNISTDataModule
from mnist_lightning.model import MLP, MNISTClassifier

__all__ = ["MLP", "MNISTClassifier", "MNISTDataModule"]
