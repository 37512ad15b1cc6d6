"""A person's own image files turned into MNIST-style digits (``digits.prepare_digit``), so the classifier can
predict them: which files a ``--data.predict_path`` names, and the digits they show as one tensor.
"""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from mnist_lightning.data.digits import FIELD, InvertMode, prepare_digit
from mnist_lightning.data.untrusted_images import UnreadableImage, open_image
from mnist_lightning.errors import UserError


def image_suffixes() -> frozenset[str]:
    """The file name endings of the formats PIL reads: ``.png``, ``.jpg``, ``.gif``, ``.tif``, ``.webp``..."""
    return frozenset(
        suffix for suffix, format_ in Image.registered_extensions().items() if format_ in Image.OPEN
    )


def find_images(path: str) -> tuple[list[Path], list[Path]]:
    """The image files ``path`` names, in a stable order, and the other files it names (not images).

    ``path`` is one file (taken as it is), a folder (its files, not hidden, not in subfolders) or a glob; in
    a folder or a glob, files count as images by the endings of the formats PIL reads. Raises UserError when
    the path does not exist or names no image file.
    """
    given = Path(path).expanduser()
    if given.is_file():
        return [given], []
    if given.is_dir():
        found = [child for child in given.iterdir() if child.is_file() and not child.name.startswith(".")]
    elif glob.has_magic(path):
        found = [Path(match) for match in glob.glob(str(given), recursive=True) if Path(match).is_file()]
    else:
        raise UserError(
            f"--data.predict_path '{path}' does not exist. Pass an image file, a folder of image files, or a "
            f"glob such as 'digits/*.png'."
        )
    suffixes = image_suffixes()
    images = sorted(file for file in found if file.suffix.lower() in suffixes)
    others = sorted(file for file in found if file.suffix.lower() not in suffixes)
    if not images:
        where = "is a folder with no image files in it (subfolders not searched)"
        what = where if given.is_dir() else "matches no image files" if found else "matches no files"
        skipped = f"; not images: {', '.join(file.name for file in others[:5])}" if others else ""
        raise UserError(
            f"--data.predict_path '{path}' {what}{skipped}. Point it at a folder of digit images (PNG, JPEG, "
            f"GIF, BMP, WebP or TIFF), one image file, or a glob such as 'digits/**/*.png'."
        )
    return images, others


def read_image(path: Path) -> Image.Image:
    """Open and decode an image file within the limits of :func:`open_image`; raises UnreadableImage with the
    reason when it is refused or cannot be decoded."""
    return open_image(path)


def load_digits(
    paths: Sequence[Path], invert: InvertMode = "auto"
) -> tuple[torch.Tensor, list[Path], list[tuple[Path, str]]]:
    """Read and prepare image files: the digits (N, 28, 28) uint8, the paths they came from, and the
    ``(path, reason)`` of each file that could not be used."""
    digits, kept, skipped = [], [], []
    for path in paths:
        try:
            digits.append(torch.from_numpy(prepare_digit(read_image(path), invert)))
            kept.append(path)
        except UnreadableImage as err:
            skipped.append((path, str(err)))
    stacked = torch.stack(digits) if digits else torch.empty(0, FIELD, FIELD, dtype=torch.uint8)
    return stacked, kept, skipped
