"""MNIST as a LightningDataModule: download, a seeded train/val split, fast loaders, and images to predict."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset, Sampler, Subset
from torchvision import datasets, transforms
from torchvision.datasets.mnist import read_image_file, read_label_file

from mnist_lightning.augment import Augmentation
from mnist_lightning.errors import UserError, first_line
from mnist_lightning.images import InvertMode, find_images, load_digits

MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
TRAIN_SIZE = 60_000
RAW_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def raw_folder(data_dir: str | os.PathLike) -> Path:
    """Where torchvision keeps (and looks for) the four raw MNIST files under ``data_dir``."""
    return Path(data_dir) / "MNIST" / "raw"


def missing_files_message(data_dir: str | os.PathLike, reason: str) -> str:
    folder = raw_folder(data_dir)
    names = ", ".join(name for pair in RAW_FILES.values() for name in pair)
    return (
        f"MNIST is not available: {reason}. Expected the four raw IDX files ({names}) in "
        f"'{folder.resolve()}'. Either run once with internet access so torchvision downloads them there, "
        f"copy or link the files into that folder, or point --data.data_dir at the folder that contains "
        f"MNIST/raw/ (for example --data.data_dir ../shared/datasets)."
    )


def load_split(data_dir: str | os.PathLike, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one MNIST split with torchvision's IDX reader: uint8 images (N, 28, 28) and int64 labels (N,).

    Raises UserError naming the file when a file is missing, truncated, corrupt, or does not match its
    partner.
    """
    folder = raw_folder(data_dir)
    image_name, label_name = RAW_FILES[train]
    for name in (image_name, label_name):
        if not (folder / name).is_file():
            raise UserError(missing_files_message(data_dir, f"'{folder / name}' does not exist"))
    try:
        images = read_image_file(str(folder / image_name))
    except Exception as err:  # torchvision raises RuntimeError, AssertionError or ValueError on bad bytes
        raise UserError(_corrupt_message(folder / image_name, err)) from None
    try:
        labels = read_label_file(str(folder / label_name))
    except Exception as err:
        raise UserError(_corrupt_message(folder / label_name, err)) from None
    if images.shape[1:] != (28, 28):
        raise UserError(
            _corrupt_message(folder / image_name, f"images are {tuple(images.shape[1:])}, not 28x28")
        )
    if len(images) != len(labels):
        raise UserError(
            f"MNIST files do not match: '{folder / image_name}' holds {len(images)} images but "
            f"'{folder / label_name}' holds {len(labels)} labels. One of them is from another data set or "
            f"was cut short; delete both and download or copy them again."
        )
    if len(labels) and (labels.min() < 0 or labels.max() > 9):
        raise UserError(_corrupt_message(folder / label_name, "labels outside 0-9"))
    return images, labels.long()


def _corrupt_message(path: Path, err: object) -> str:
    return (
        f"'{path}' is not a valid MNIST IDX file ({err}). It may be truncated or corrupt: delete it and "
        f"download or copy it again (the files must be the uncompressed originals)."
    )


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 digits (N, 28, 28) -> float32 (N, 1, 28, 28): the operations of ``ToTensor`` + ``Normalize``."""
    return images.unsqueeze(1).float().div_(255).sub_(MNIST_MEAN).div_(MNIST_STD)


class ShardedBatchSampler(Sampler[list[int]]):
    """Batches of indices for one rank; every sample used exactly once per epoch, none padded or dropped.

    Each step takes one global batch of ``batch_size * world_size`` samples and splits it between the
    ranks, so all ranks take the same number of steps (DDP needs that) and ``batch_size`` is per device.
    The order is a permutation seeded by ``seed + epoch`` when shuffling: identical on every rank, and
    replayed exactly when a run resumes at that epoch. ``resume_at`` skips the batches of an epoch that a run
    interrupted mid-epoch had already trained on.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self._resume_point: tuple[int, int] | None = None
        step = batch_size * world_size
        self._starts = list(range(0, num_samples, step))
        if len(self._starts) > 1 and num_samples - self._starts[-1] < world_size:
            self._starts.pop()  # a tail too small to give every rank a sample joins the previous step

    @property
    def sampler(self) -> ShardedBatchSampler:
        """Itself: Lightning calls ``set_epoch`` on ``dataloader.batch_sampler.sampler`` at each epoch."""
        return self

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Make the next pass, if it is over ``epoch``, leave out its first ``batches_done`` batches."""
        self._resume_point = (epoch, batches_done)

    def __len__(self) -> int:
        return len(self._starts)

    def __iter__(self) -> Iterator[list[int]]:
        resume_epoch, skip = self._resume_point or (self.epoch, 0)
        self._resume_point = None
        if resume_epoch != self.epoch:
            skip = 0
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator)
        else:
            order = torch.arange(self.num_samples)
        ends = self._starts[1:] + [self.num_samples]
        for start, end in zip(self._starts[skip:], ends[skip:], strict=True):
            yield order[start:end].tensor_split(self.world_size)[self.rank].tolist()


# Lightning warns that it cannot make a custom batch sampler keep the last, partial batch when predicting;
# ShardedBatchSampler never drops a sample, so the warning does not apply.
warnings.filterwarnings("ignore", message="You are using a custom batch sampler `ShardedBatchSampler`")


class TensorBatchDataset(Dataset):
    """A whole split held as two tensors; the DataLoader fetches each batch with one indexing operation.

    Images stay uint8 (47 MB for all of MNIST, not 188 MB as float) and are normalized a batch at a time.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize(self.images[index : index + 1])[0], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, device=self.labels.device)
        return normalize(self.images[index]), self.labels[index]


class ResumableDataLoader(DataLoader):
    """The training DataLoader, resumable mid-epoch through Lightning's ``state_dict`` protocol.

    Lightning stores ``state_dict()`` in every checkpoint and, when a run resumes from a checkpoint taken
    mid-epoch (an interrupted run), hands it back to ``load_state_dict()``: the epoch then goes on with
    exactly the batches it had not trained on yet. ``batches_done`` reports how many batches of the current
    epoch the trainer has finished.
    """

    def __init__(self, *args, batches_done: Callable[[], int], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.batch_sampler.epoch, "batches_done": self.batches_done()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume_at(state["epoch"], state["batches_done"])


def _keep_batch(batch):
    """collate_fn for TensorBatchDataset, whose __getitems__ already returns a whole batch."""
    return batch


class MNISTDataModule(L.LightningDataModule):
    """MNIST digits: downloads if needed, splits the 60k training images into train/val by ``seed``.

    Args:
        data_dir: folder holding ``MNIST/raw/`` (downloaded there when missing).
        batch_size: samples per step on each device (the global batch is ``batch_size * devices``).
        eval_batch_size: samples per validation, test and predict step on each device. Larger batches
            evaluate faster (fewer steps) and give the same metrics, which are sums over samples.
        val_size: training images held out for validation (the test set is the separate 10k).
        seed: seed of the train/val split and of the per-epoch shuffling; independent of device count.
        loader: ``tensor`` keeps each split as one uint8 tensor and fetches a batch with one indexing
            operation, normalized as it is fetched; ``torchvision`` is the classic per-sample PIL pipeline,
            kept for comparison.
        num_workers: DataLoader worker processes (0 loads in the main process, best for ``tensor``).
        pin_memory: pin batches in page-locked memory for faster host-to-GPU copies.
        data_on_device: keep the tensors on the training device (a GPU), so no batch is copied per step.
        predict_path: what ``predict`` classifies: an image file, a folder of PNG/JPEG/BMP files, or a glob;
            unset, the 10k test images. Files are prepared like MNIST digits (``mnist_lightning.images``).
        invert: make image files white-on-black: ``auto`` inverts those with a light background,
            ``always`` and ``never`` force it.
        augment: random distortions of training batches (see :class:`Augmentation`), applied on the device
            after each batch is transferred, never to validation, test or predict batches; ``None`` is off.

    After ``setup("predict")``: ``predict_files`` lists the predicted files in order (None for the test set)
    and ``unreadable_files`` the ``(path, reason)`` of files that could not be used.
    """

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_size: int = 5000,
        seed: int = 42,
        loader: Literal["tensor", "torchvision"] = "tensor",
        num_workers: int = 0,
        pin_memory: bool = False,
        data_on_device: bool = False,
        predict_path: str | None = None,
        invert: InvertMode = "auto",
        augment: Augmentation | None = None,
    ) -> None:
        super().__init__()
        for name, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if size < 1:
                raise UserError(f"data.{name} must be at least 1, got {size}.")
        if not 1 <= val_size <= TRAIN_SIZE - 1:
            raise UserError(f"data.val_size must be between 1 and {TRAIN_SIZE - 1}, got {val_size}.")
        if num_workers < 0:
            raise UserError(f"data.num_workers must be 0 or more, got {num_workers}.")
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.val_size = val_size
        self.seed = seed
        self.loader = loader
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.data_on_device = data_on_device
        self.predict_path = predict_path
        self.invert = invert
        self.augment = augment
        self.datasets: dict[str, Dataset] = {}
        self.predict_files: list[Path] | None = None
        self.unreadable_files: list[tuple[Path, str]] = []

    def prepare_data(self) -> None:
        """Download MNIST into ``data_dir`` unless it is there already or only image files are predicted."""
        if self._predicting_files():
            return
        folder = raw_folder(self.data_dir)
        if all((folder / name).is_file() for pair in RAW_FILES.values() for name in pair):
            return
        try:
            datasets.MNIST(self.data_dir, train=True, download=True)
        except Exception as err:  # URLError, RuntimeError("Error downloading ..."), OSError
            reason = f"downloading failed ({first_line(err) or type(err).__name__})"
            raise UserError(missing_files_message(self.data_dir, reason)) from None

    def setup(self, stage: str) -> None:
        """Load what this stage needs: train/val for fit and validate, test for test, and for predict the
        image files of ``predict_path`` (or the test set)."""
        if stage in ("fit", "validate") and "train" not in self.datasets:
            images, labels = load_split(self.data_dir, train=True)
            if self.val_size >= len(labels):
                raise UserError(
                    f"data.val_size ({self.val_size}) must be smaller than the {len(labels)} training images."
                )
            train_indices, val_indices = self.split_indices(len(labels))
            self.datasets["train"], self.datasets["val"] = self._build(
                True, images, labels, train_indices, val_indices
            )
        if stage == "predict" and self.predict_path is not None:
            self.datasets["predict"] = self._image_files_dataset(self.predict_path)
        elif stage in ("test", "predict") and "test" not in self.datasets:
            images, labels = load_split(self.data_dir, train=False)
            (self.datasets["test"],) = self._build(False, images, labels, None)

    def _predicting_files(self) -> bool:
        predicting = self.trainer is not None and self.trainer.state.fn == TrainerFn.PREDICTING
        return predicting and self.predict_path is not None

    def _image_files_dataset(self, predict_path: str) -> TensorBatchDataset:
        """The readable images of ``predict_path``, prepared as MNIST digits; labels are -1 (unknown)."""
        files = find_images(predict_path)
        digits, self.predict_files, self.unreadable_files = load_digits(files, self.invert)
        if not self.predict_files:
            reasons = "; ".join(f"'{path}': {reason}" for path, reason in self.unreadable_files[:5])
            raise UserError(
                f"None of the {len(files)} files of --data.predict_path '{predict_path}' could be read as an "
                f"image of a digit ({reasons}). Pass PNG, JPEG or BMP files that show one digit each."
            )
        return TensorBatchDataset(*self._placed(digits, torch.full((len(digits),), -1)))

    def split_indices(self, num_images: int = TRAIN_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
        """Train and val indices into the training images, fixed by ``seed`` alone (not by device count)."""
        order = torch.randperm(num_images, generator=torch.Generator().manual_seed(self.seed))
        return order[self.val_size :], order[: self.val_size]

    def _build(
        self, train: bool, images: torch.Tensor, labels: torch.Tensor, *index_sets: torch.Tensor | None
    ) -> list[Dataset]:
        if self.loader == "torchvision":
            to_tensor = transforms.Compose(
                [transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))]
            )
            full = datasets.MNIST(self.data_dir, train=train, transform=to_tensor)
            return [full if idx is None else Subset(full, idx.tolist()) for idx in index_sets]
        images, labels = self._placed(images, labels)
        return [
            TensorBatchDataset(images, labels)
            if idx is None
            else TensorBatchDataset(images[idx], labels[idx])
            for idx in index_sets
        ]

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
        tensors = isinstance(dataset, TensorBatchDataset)
        return loader_class(
            dataset,
            batch_sampler=sampler,
            collate_fn=_keep_batch if tensors else None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and not self.data_on_device,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Distort training batches with ``augment``; every other batch passes unchanged."""
        if self.augment is None or self.trainer is None or not self.trainer.training:
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
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict" if self.predict_path is not None else "test", shuffle=False)
