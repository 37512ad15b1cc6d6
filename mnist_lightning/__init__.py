"""mnist-lightning: train, compare and ship an MNIST digit classifier with PyTorch Lightning.

The classes are imported on first use, so ``python -m mnist_lightning runs`` and ``--help`` stay quick.
"""

from importlib import import_module

from mnist_lightning import legacy

legacy.install()  # checkpoints and configs of the flat layout name modules that have moved

_EXPORTS = {
    "MNISTClassifier": "mnist_lightning.models.classifier",
    "MNISTDataModule": "mnist_lightning.data.datamodule",
    "MLP": "mnist_lightning.models.nets",
    "ConvNet": "mnist_lightning.models.nets",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mnist_lightning' has no attribute {name!r}")
