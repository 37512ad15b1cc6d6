"""The data sets in MNIST's IDX format: where their files live, how they are read, and what they hold.

MNIST, Fashion-MNIST and KMNIST share one format and layout (torchvision keeps each under
``<data_dir>/<Name>/raw/`` with the same four file names), so one reader serves all three; each brings its
own normalization constants and class names.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from mnist_lightning.errors import UserError, first_line

DatasetName = Literal["MNIST", "FashionMNIST", "KMNIST"]
RAW_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_SIDE = 28


@dataclass(frozen=True)
class DatasetSpec:
    """What differs between the IDX data sets: normalization (mean and std of the training pixels in [0, 1]),
    class names, the size of the training split, and what a sample shows (for messages)."""

    name: str
    mean: float
    std: float
    classes: tuple[str, ...]
    train_size: int = 60_000
    what: str = "images"

    @property
    def num_classes(self) -> int:
        return len(self.classes)


DATASETS: dict[str, DatasetSpec] = {
    "MNIST": DatasetSpec("MNIST", 0.1307, 0.3081, tuple(str(digit) for digit in range(10)), what="digits"),
    # class names as torchvision lists them (datasets.FashionMNIST.classes, datasets.KMNIST.classes)
    "FashionMNIST": DatasetSpec(
        "FashionMNIST",
        0.2860,
        0.3530,
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        what="clothing images",
    ),
    "KMNIST": DatasetSpec(
        "KMNIST",
        0.1918,
        0.3483,
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        what="Kuzushiji characters",
    ),
}


def spec_of(name: str) -> DatasetSpec:
    """The spec of a data set by name; a UserError listing the known names otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"data.dataset '{name}' is not known; choose one of {', '.join(DATASETS)}.") from None


def num_classes_of(name: str) -> int:
    """How many classes data set ``name`` has (links ``data.dataset`` to the model's class count)."""
    return spec_of(name).num_classes


def raw_folder(data_dir: str | os.PathLike, dataset: str = "MNIST") -> Path:
    """Where torchvision keeps (and looks for) a data set's four raw IDX files under ``data_dir``."""
    return Path(data_dir) / dataset / "raw"


def has_raw_files(data_dir: str | os.PathLike, dataset: str) -> bool:
    folder = raw_folder(data_dir, dataset)
    return all((folder / name).is_file() for pair in RAW_FILES.values() for name in pair)


def missing_files_message(data_dir: str | os.PathLike, dataset: str, reason: str) -> str:
    folder = raw_folder(data_dir, dataset)
    names = ", ".join(name for pair in RAW_FILES.values() for name in pair)
    return (
        f"{dataset} is not available: {reason}. Expected the four raw IDX files ({names}), or their .gz "
        f"archives, in "
        f"'{folder.resolve()}'. Either run once with internet access so torchvision downloads them there, "
        f"copy or link the files into that folder, or point --data.data_dir at the folder that contains "
        f"{dataset}/raw/."
    )


def download(data_dir: str | os.PathLike, dataset: str) -> None:
    """Make the four raw IDX files present: extract ``.gz`` archives already in the raw folder, else download
    (and extract) them with torchvision into ``data_dir``; a failed download leaves no folder it created.

    The archives are extracted here, offline, rather than by torchvision: torchvision only extracts an
    archive whose checksum is the original's, and otherwise downloads it again, which fails without network.
    """
    if Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise UserError(
            f"--data.data_dir '{data_dir}' is a file, not a folder; point it at the folder that holds (or is "
            f"to hold) {dataset}/raw/."
        )
    extract_archives(data_dir, dataset)
    if has_raw_files(data_dir, dataset):
        return
    from torchvision import datasets

    try:
        with removed_on_failure(raw_folder(data_dir, dataset)):
            getattr(datasets, dataset)(str(data_dir), train=True, download=True)
    except Exception as err:  # URLError, OSError, RuntimeError("Error downloading ...\n...\n<reason>")
        lines = str(err).strip().splitlines()  # torchvision ends its message with the last mirror's error
        reason = f"downloading failed ({lines[-1] if lines else type(err).__name__})"
        raise UserError(missing_files_message(data_dir, dataset, reason)) from None


@contextlib.contextmanager
def removed_on_failure(folder: Path) -> Iterator[None]:
    """When the block fails, remove the folders of ``folder``'s path that it created (the outermost one that
    did not exist before, and what was written in it); folders that were there are left as they are."""
    created = next((path for path in reversed((folder, *folder.parents)) if not path.exists()), None)
    try:
        yield
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def extract_archives(data_dir: str | os.PathLike, dataset: str) -> None:
    """Decompress each ``<name>.gz`` in the raw folder whose ``<name>`` is missing (as the data sets are
    distributed); a damaged archive is a UserError naming it."""
    folder = raw_folder(data_dir, dataset)
    for name in (name for pair in RAW_FILES.values() for name in pair):
        archive, target = folder / f"{name}.gz", folder / name
        if target.is_file() or not archive.is_file():
            continue
        partial = folder / f".{name}.partial"
        try:
            with gzip.open(archive) as source, open(partial, "wb") as out:
                while chunk := source.read(1 << 20):
                    out.write(chunk)
            os.replace(partial, target)
        except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
            raise UserError(
                f"'{archive}' is not a readable gzip archive ({first_line(err) or type(err).__name__}). "
                f"It may be truncated or corrupt: delete it and download or copy it again."
            ) from None
        finally:
            partial.unlink(missing_ok=True)


def load_split(
    data_dir: str | os.PathLike, train: bool, dataset: str = "MNIST"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split with torchvision's IDX reader: uint8 images (N, 28, 28) and int64 labels (N,).

    Raises UserError naming the file when a file is missing, truncated, corrupt, or does not match its
    partner.
    """
    from torchvision.datasets.mnist import read_image_file, read_label_file

    spec = spec_of(dataset)
    folder = raw_folder(data_dir, dataset)
    image_name, label_name = RAW_FILES[train]
    for name in (image_name, label_name):
        if not (folder / name).is_file():
            raise UserError(missing_files_message(data_dir, dataset, f"'{folder / name}' does not exist"))
    try:
        images = read_image_file(str(folder / image_name))
    except Exception as err:  # torchvision raises RuntimeError, AssertionError or ValueError on bad bytes
        raise UserError(_corrupt_message(folder / image_name, err)) from None
    try:
        labels = read_label_file(str(folder / label_name))
    except Exception as err:
        raise UserError(_corrupt_message(folder / label_name, err)) from None
    if images.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise UserError(
            _corrupt_message(folder / image_name, f"images are {tuple(images.shape[1:])}, not 28x28")
        )
    if len(images) != len(labels):
        raise UserError(
            f"{dataset} files do not match: '{folder / image_name}' holds {len(images)} images but "
            f"'{folder / label_name}' holds {len(labels)} labels. One of them is from another data set or "
            f"was cut short; delete both and download or copy them again."
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise UserError(_corrupt_message(folder / label_name, f"labels outside 0-{spec.num_classes - 1}"))
    return images, labels.long()


def _corrupt_message(path: Path, err: object) -> str:
    return (
        f"'{path}' is not a valid IDX file ({err}). It may be truncated or corrupt: delete it and "
        f"download or copy it again (the files must be the uncompressed originals)."
    )
