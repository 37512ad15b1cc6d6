"""The data module: MNIST, Fashion-MNIST or KMNIST, a seeded train/val split or k folds, fast loaders, image
files."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_only
from torch.utils.data import DataLoader

from mnist_lightning import compat
from mnist_lightning.data import datasets
from mnist_lightning.data.augment import Augmentation
from mnist_lightning.data.datasets import DatasetName
from mnist_lightning.data.images import InvertMode, find_images, load_digits
from mnist_lightning.data.sampling import (
    ResumableDataLoader,
    ShardedBatchSampler,
    TensorBatchDataset,
    keep_batch,
)
from mnist_lightning.errors import UserError

VAL_SIZE = 5000  # the default validation split: 55k train, 5k val


class ImageFilesDataset(TensorBatchDataset):
    """A person's image files prepared as 28x28 images; ``paths`` names each sample, labels are -1."""

    def __init__(self, images: torch.Tensor, paths: list[Path], mean: float, std: float) -> None:
        super().__init__(images, torch.full((len(images),), -1), mean, std)
        self.paths = paths


class MNISTDataModule(L.LightningDataModule):
    """An IDX data set (MNIST by default): downloads if needed, splits the training images into train/val.

    Args:
        dataset: ``MNIST``, ``FashionMNIST`` or ``KMNIST``; each has its normalization and class names.
        data_dir: folder holding ``<dataset>/raw/`` (downloaded there when missing).
        batch_size: samples per step on each device (the global batch is ``batch_size * devices``).
        eval_batch_size: samples per validation, test and predict step on each device. Larger batches
            evaluate faster (fewer steps) and give the same metrics, which are sums over samples.
        val_size: training images held out for validation (the test set is the separate 10k).
        folds: split the training images into this many folds (k-fold cross-validation) and validate on
            fold ``fold``, training on the others; each fold holds the same share of every class. It
            replaces ``val_size``, which must then stay at its default.
        fold: the fold validated on, from 0 to ``folds - 1``.
        seed: seed of the train/val split (or the folds) and of the per-epoch shuffling; independent of
            device count.
        num_workers: DataLoader worker processes (0 loads in the main process, the fastest here: a batch is
            one indexing operation).
        pin_memory: pin batches in page-locked memory for faster host-to-GPU copies.
        data_on_device: keep the tensors on the training device (a GPU), so no batch is copied per step.
        predict_path: what ``predict`` classifies: an image file, a folder of image files, or a glob;
            unset, the test images. Files are prepared like MNIST digits (``mnist_lightning.data.images``).
        invert: make image files light-on-dark: ``auto`` inverts those with a light background,
            ``always`` and ``never`` force it.
        augment: random distortions of training batches (see :class:`Augmentation`), applied on the device
            after each batch is transferred, never to validation, test or predict batches; ``None`` is off.
    """

    def __init__(
        self,
        dataset: DatasetName = "MNIST",
        data_dir: str = "data",
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_size: int = VAL_SIZE,
        folds: int | None = None,
        fold: int = 0,
        seed: int = 42,
        num_workers: int = 0,
        pin_memory: bool = False,
        data_on_device: bool = False,
        predict_path: str | None = None,
        invert: InvertMode = "auto",
        augment: Augmentation | None = None,
    ) -> None:
        super().__init__()
        self.spec = datasets.spec_of(dataset)
        for name, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if size < 1:
                raise UserError(f"data.{name} must be at least 1, got {size}.")
        if not 1 <= val_size <= self.spec.train_size - 1:
            raise UserError(
                f"data.val_size must be between 1 and {self.spec.train_size - 1}, got {val_size}."
            )
        if num_workers < 0:
            raise UserError(f"data.num_workers must be 0 or more, got {num_workers}.")
        check_folds(folds, fold, val_size)
        self.save_hyperparameters()
        self.dataset = dataset
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_size = val_size
        self.folds = folds
        self.fold = fold
        self.seed = seed
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.data_on_device = data_on_device
        self.predict_path = predict_path
        self.invert = invert
        self.augment = augment
        self.datasets: dict[str, TensorBatchDataset] = {}

    @property
    def classes(self) -> tuple[str, ...]:
        """The data set's class names, in label order."""
        return self.spec.classes

    def data_files(self, stage: str) -> list[Path]:
        """The files ``setup(stage)`` read, for a run's provenance: the raw IDX files of its splits, or for
        ``predict`` with ``predict_path`` the image files."""
        if stage == "predict" and "predict" in self.datasets:
            return list(self.datasets["predict"].paths)
        folder = datasets.raw_folder(self.data_dir, self.dataset)
        return [folder / name for name in datasets.RAW_FILES[stage in ("fit", "validate")]]

    def prepare_data(self) -> None:
        """Download the data set into ``data_dir`` unless it is there or only image files are predicted."""
        if self._predicting_files() or datasets.has_raw_files(self.data_dir, self.dataset):
            return
        datasets.download(self.data_dir, self.dataset)

    def setup(self, stage: str) -> None:
        """Load what this stage needs: train/val for fit and validate, test for test, and for predict the
        image files of ``predict_path`` (or the test set)."""
        if stage in ("fit", "validate") and "train" not in self.datasets:
            images, labels = datasets.load_split(self.data_dir, True, self.dataset)
            if self.folds is None and self.val_size >= len(labels):
                raise UserError(
                    f"data.val_size ({self.val_size}) must be smaller than the {len(labels)} training images."
                )
            train, val = self.split_indices(len(labels)) if self.folds is None else self.fold_indices(labels)
            images, labels = self._placed(images, labels)
            self.datasets["train"] = self._tensors(images[train], labels[train])
            self.datasets["val"] = self._tensors(images[val], labels[val])
        if stage == "predict" and self.predict_path is not None:
            self.datasets["predict"] = self._image_files_dataset(self.predict_path)
        elif stage in ("test", "predict") and "test" not in self.datasets:
            images, labels = datasets.load_split(self.data_dir, False, self.dataset)
            self.datasets["test"] = self._tensors(*self._placed(images, labels))

    def _tensors(self, images: torch.Tensor, labels: torch.Tensor) -> TensorBatchDataset:
        return TensorBatchDataset(images, labels, self.spec.mean, self.spec.std)

    def _predicting_files(self) -> bool:
        predicting = self.trainer is not None and self.trainer.state.fn == TrainerFn.PREDICTING
        return predicting and self.predict_path is not None

    def _image_files_dataset(self, predict_path: str) -> ImageFilesDataset:
        """The readable images of ``predict_path`` prepared as MNIST digits; the others named on stderr."""
        files, not_images = find_images(predict_path)
        digits, kept, unreadable = load_digits(files, self.invert)
        if not kept:
            reasons = "; ".join(f"'{path}': {reason}" for path, reason in unreadable[:5])
            raise UserError(
                f"None of the {len(files)} files of --data.predict_path '{predict_path}' could be read as an "
                f"image of a digit ({reasons}). Pass image files that show one digit each."
            )
        _report_skipped(not_images, unreadable)
        images, _ = self._placed(digits, torch.empty(0))
        return ImageFilesDataset(images, kept, self.spec.mean, self.spec.std)

    def split_indices(self, num_images: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Train and val indices into the training images, fixed by ``seed`` alone (not by device count)."""
        order = torch.randperm(num_images, generator=torch.Generator().manual_seed(self.seed))
        return order[self.val_size :], order[: self.val_size]

    def fold_indices(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Train and val indices of fold ``fold`` of ``folds``: the images of each class, shuffled by
        ``seed``, are dealt to the folds in turn, so every fold holds the same share of each class (to one
        image) and the folds are disjoint and cover the training images."""
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.seed))
        order = order[torch.argsort(labels[order], stable=True)]  # by class, shuffled within each
        fold_of = torch.empty(len(labels), dtype=torch.long)
        fold_of[order] = torch.arange(len(labels)) % self.folds
        return (fold_of != self.fold).nonzero().squeeze(1), (fold_of == self.fold).nonzero().squeeze(1)

    def _placed(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The tensors on the training device when ``data_on_device`` is set, else as they are."""
        if self.data_on_device and self.trainer is not None:
            device = self.trainer.strategy.root_device
            return images.to(device), labels.to(device)
        return images, labels

    def _loader(self, split: str, shuffle: bool, loader_class: type[DataLoader] = DataLoader, **kwargs):
        dataset = self.datasets[split]
        trainer = self.trainer
        sampler = ShardedBatchSampler(
            len(dataset),
            self.batch_size if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            seed=self.seed,
            rank=trainer.global_rank if trainer else 0,
            world_size=trainer.world_size if trainer else 1,
        )
        if trainer is not None:
            sampler.set_epoch(trainer.current_epoch)  # a resumed run's epoch: workers start before set_epoch
        return loader_class(
            dataset,
            batch_sampler=sampler,
            collate_fn=keep_batch,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and not self.data_on_device,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Distort training batches with ``augment``; every other batch passes unchanged, and so does the
        model's example image, which Lightning sends through this hook too when it summarizes the model."""
        is_pair = isinstance(batch, (tuple, list)) and len(batch) == 2
        if self.augment is None or self.trainer is None or not self.trainer.training or not is_pair:
            return batch
        images, labels = batch
        return self.augment(images), labels

    def train_dataloader(self) -> DataLoader:
        overfitting = self.trainer is not None and self.trainer.overfit_batches > 0
        return self._loader(
            "train", not overfitting, loader_class=ResumableDataLoader, batches_done=self._batches_done
        )

    def _batches_done(self) -> int:
        """Training batches of the current epoch the trainer has finished (their optimizer step is done)."""
        return compat.training_batches_processed(self.trainer)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict" if self.predict_path is not None else "test", shuffle=False)


def check_folds(folds: int | None, fold: int, val_size: int) -> None:
    """``data.folds`` at least 2, ``data.fold`` one of them, and no ``val_size`` of its own beside them."""
    if folds is None:
        if fold != 0:
            raise UserError(f"data.fold ({fold}) needs data.folds, the number of folds (e.g. 5).")
        return
    if folds < 2:
        raise UserError(f"data.folds must be at least 2, got {folds}.")
    if not 0 <= fold < folds:
        raise UserError(f"data.fold must be between 0 and {folds - 1} (data.folds is {folds}), got {fold}.")
    if val_size != VAL_SIZE:
        raise UserError(
            f"data.val_size ({val_size}) and data.folds ({folds}) both choose the validation images: with "
            f"folds the validation set is fold data.fold (1/{folds} of the training images). Leave out "
            f"data.val_size."
        )


@rank_zero_only
def _report_skipped(not_images: list[Path], unreadable: list[tuple[Path, str]]) -> None:
    """Name the files of ``predict_path`` that are not predicted: not images, or not readable as a digit."""
    lines = []
    if not_images:
        lines.append(f"Skipped {len(not_images)} file(s) that are not images (by their name's ending):")
        lines += [f"  {path}" for path in not_images]
    if unreadable:
        lines.append(f"Skipped {len(unreadable)} file(s) that could not be read as an image of a digit:")
        lines += [f"  {path}: {reason}" for path, reason in unreadable]
    if lines:
        print("\n".join(lines), file=sys.stderr, flush=True)
