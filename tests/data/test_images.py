"""Preparing a person's image files as MNIST digits, and finding the files to predict."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mnist_lightning.data.datamodule import MNISTDataModule
from mnist_lightning.data.datasets import load_split
from mnist_lightning.data.digits import prepare_digit
from mnist_lightning.data.images import UnreadableImage, find_images, load_digits, read_image
from mnist_lightning.errors import UserError


@pytest.fixture(scope="module")
def mnist_digits(real_data) -> torch.Tensor:
    """The first 50 real MNIST test digits, uint8 (50, 28, 28): already fitted to 20x20 and centred."""
    return load_split(real_data, train=False)[0][:50]


def centre_of_mass(digit: torch.Tensor) -> tuple[float, float]:
    weights = digit.double() / digit.double().sum()
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    return (weights * rows).sum().item(), (weights * cols).sum().item()


def test_an_mnist_digit_comes_back_nearly_unchanged(mnist_digits):
    for digit in mnist_digits:
        prepared = torch.from_numpy(prepare_digit(Image.fromarray(digit.numpy())))
        assert prepared.shape == (28, 28) and prepared.dtype == torch.uint8
        assert (prepared.int() - digit.int()).abs().max() <= 2  # only the brightest level may be stretched


def test_a_black_on_white_digit_is_inverted_under_auto(mnist_digits):
    for digit in mnist_digits[:10]:
        inverted = Image.fromarray(255 - digit.numpy())
        expected = prepare_digit(Image.fromarray(digit.numpy()))
        assert np.array_equal(prepare_digit(inverted, "auto"), expected)
        assert np.array_equal(prepare_digit(inverted, "always"), expected)
        with pytest.raises(
            UnreadableImage, match="needs invert 'auto' or 'always'"
        ):  # white paper kept white
            prepare_digit(inverted, "never")


def test_a_large_off_centre_colour_photo_is_fitted_and_centred(mnist_digits):
    digit = mnist_digits[0].numpy()
    rng = np.random.default_rng(0)
    paper = rng.normal(220, 6, (300, 240)).clip(0, 255)  # grey, noisy paper
    ink = np.asarray(Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC), dtype=float) / 255
    paper[20:132, 100:212] *= 1 - 0.9 * ink  # dark ink, far from the centre
    photo = Image.fromarray(np.stack([paper, paper * 0.95, paper * 0.9], axis=2).astype(np.uint8))

    prepared = torch.from_numpy(prepare_digit(photo))
    rows, cols = torch.nonzero(prepared, as_tuple=True)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 == 20
    assert all(abs(c - 14) <= 0.5 for c in centre_of_mass(prepared))
    assert (prepared.float() - mnist_digits[0].float()).abs().mean() / 255 < 0.05


def test_transparent_background_counts_as_paper(mnist_digits):
    rgba = np.zeros((28, 28, 4), dtype=np.uint8)
    rgba[..., 3] = mnist_digits[1].numpy()  # black ink, opaque where the digit is, transparent elsewhere
    prepared = torch.from_numpy(prepare_digit(Image.fromarray(rgba, "RGBA")))
    assert (prepared.int() - mnist_digits[1].int()).abs().max() <= 2


def test_unreadable_and_blank_files_are_skipped_with_a_reason(tmp_path, mnist_digits):
    Image.fromarray(mnist_digits[0].numpy()).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    Image.new("L", (40, 40), 255).save(tmp_path / "c.png")
    Image.fromarray(mnist_digits[1].numpy()).convert("RGB").save(tmp_path / "d.jpg")

    digits, kept, skipped = load_digits(find_images(str(tmp_path))[0])
    assert [path.name for path in kept] == ["a.png", "d.jpg"] and digits.shape == (2, 28, 28)
    assert [(path.name, reason) for path, reason in skipped] == [
        ("b.png", "not a readable PNG image (its header is broken)"),
        ("c.png", "no digit found: nothing brighter than the background"),
    ]
    with pytest.raises(UnreadableImage, match="not a readable PNG image"):
        read_image(tmp_path / "b.png")


def test_find_images_takes_a_file_a_folder_or_a_glob(tmp_path):
    for name in ("b.png", "a.JPG", "c.bmp", "e.gif", "f.tif", "g.webp", "notes.txt", ".hidden.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.png").write_bytes(b"")

    def names(path: str) -> tuple[list[str], list[str]]:
        images, others = find_images(path)
        return [p.name for p in images], [p.name for p in others]

    images = ["a.JPG", "b.png", "c.bmp", "e.gif", "f.tif", "g.webp"]
    assert names(str(tmp_path)) == (images, ["notes.txt"])
    assert names(f"{tmp_path}/*") == (images, ["notes.txt"])
    assert names(str(tmp_path / "notes.txt")) == (["notes.txt"], [])
    assert names(f"{tmp_path}/**/*.png") == (["b.png", "d.png"], [])


def test_every_format_pil_reads_is_predicted_and_other_files_are_named(tmp_path, capsys):
    digit = Image.new("L", (40, 40), 0)
    digit.paste(255, (12, 8, 24, 32))
    for suffix in ("png", "gif", "tif", "webp"):
        digit.save(tmp_path / f"digit.{suffix}")
    (tmp_path / "notes.txt").write_text("not an image")
    data = MNISTDataModule(predict_path=str(tmp_path))
    data.setup("predict")
    assert [path.name for path in data.datasets["predict"].paths] == [
        "digit.gif", "digit.png", "digit.tif", "digit.webp"
    ]  # fmt: skip
    stderr = capsys.readouterr().err
    assert (
        f"Skipped 1 file(s) that are not images (by their name's ending):\n  {tmp_path / 'notes.txt'}"
        in stderr
    )


@pytest.mark.parametrize(
    "make,fragment",
    [
        (lambda root: root / "missing", "does not exist"),
        (lambda root: root / "empty", "no image files in it"),
        (lambda root: root / "*.gif", "matches no files"),
    ],
)
def test_find_images_explains_a_path_with_nothing_to_predict(tmp_path, make, fragment):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(UserError, match=fragment):
        find_images(str(make(tmp_path)))
