"""The data layer: the data sets' IDX files and specs, batches straight from tensors, augmentation, a
person's image files, and the LightningDataModule that puts them together.

``MNISTDataModule`` is named here too (imported on first use, so ``data.datasets`` needs no Lightning), as
configs and checkpoints of the flat layout name it ``mnist_lightning.data.MNISTDataModule``.
"""


def __getattr__(name: str):
    if name == "MNISTDataModule":
        from mnist_lightning.data.datamodule import MNISTDataModule

        return MNISTDataModule
    raise AttributeError(f"module 'mnist_lightning.data' has no attribute {name!r}")
