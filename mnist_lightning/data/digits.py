"""Any picture of one digit turned into an MNIST-style digit, so the classifier can predict it.

MNIST digits are white on black, size-normalized to fit a 20x20 box (keeping their aspect ratio,
anti-aliased to grey levels) and centred by their centre of mass in a 28x28 field. :func:`prepare_digit`
applies the same recipe to any picture of one digit:

1. grayscale in [0, 1] (transparent pixels count as white paper, EXIF rotation is applied);
2. white on black: ``invert="auto"`` inverts when the background (the median of the border pixels) is
   light, ``"always"`` and ``"never"`` force the choice;
3. the background and its noise (up to 6 robust standard deviations of the border pixels above their
   median) become black, and the brightest ink becomes white;
4. the bounding box of the remaining ink is scaled so its longer side is 20 pixels;
5. it is placed in a black 28x28 image with its centre of mass at pixel (14, 14), as in MNIST.

It expects a picture of one digit on a plain background, cropped loosely around it. The MNIST test digits
pass through nearly unchanged: 9,997 of the 10,000 within two grey levels of the original. NumPy and Pillow
only, no torch: the server's image decoders prepare digits with it.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from PIL import Image

from mnist_lightning.data.untrusted_images import UnreadableImage

InvertMode = Literal["auto", "always", "never"]
FIELD = 28  # side of an MNIST image
BOX = 20  # side of the box the digit is scaled to fit
CENTRE = 14.0  # where MNIST puts the centre of mass (row and column of the pixel grid)
# pixels less than this many robust standard deviations (of the border) above the background are background
NOISE_SIGMAS = 6.0


def _grey_levels(image: Image.Image) -> np.ndarray:
    """The image's 8-bit grey levels (uint8), transparent pixels white; a 16-bit or float image as floats in
    [0, 1] instead."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit and float grey levels
        pixels = np.asarray(image, dtype=np.float64)
        return np.clip(pixels / (65535.0 if pixels.max() > 255 else 255.0), 0.0, 1.0)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # laid on white paper in grey, in place, rather than in RGBA (3 images of 4 bytes a pixel: 200 MB for
        # the largest picture accepted); the levels differ from RGBA's by at most 1 (rounding)
        grey_alpha = np.asarray(image.convert("LA"))
        grey, alpha = grey_alpha[..., 0].astype(np.uint16), grey_alpha[..., 1].astype(np.uint16)
        grey *= alpha
        alpha = np.subtract(255, alpha, out=alpha)
        alpha *= 255
        grey += alpha  # at most 255 * 255: fits 16 bits
        grey += 127
        grey //= 255
        return grey.astype(np.uint8)
    return np.asarray(image if image.mode == "L" else image.convert("L"))


def prepare_digit(image: Image.Image | np.ndarray, invert: InvertMode = "auto") -> np.ndarray:
    """One picture of a digit -> a uint8 (28, 28) MNIST-style digit (white on black, fitted and centred).

    ``image`` is a PIL image of any size and mode, or an array of grey levels in [0, 1]. Raises
    UnreadableImage when no ink stands out from the background (a blank picture, or the wrong ``invert``).
    """
    levels = _grey_levels(image) if isinstance(image, Image.Image) else np.asarray(image, dtype=np.float64)
    # An 8-bit picture has at most 256 grey levels: its pixels' values are looked up in a table of them,
    # inverted there rather than pixel by pixel, and only the box around the ink is looked up whole; the
    # values are those of the per-pixel steps, computed the same way. Other pictures' levels are their values.
    table = np.arange(256) / 255.0 if levels.dtype == np.uint8 else None

    def values(region: Any) -> Any:
        return region if table is None else table[region]

    border = values(_border(levels))
    light_background = _median(border) > 0.5
    if invert == "always" or (invert == "auto" and light_background):
        border = 1.0 - border
        if table is None:
            levels = 1.0 - levels
        else:
            table = 1.0 - table
    floor = _background_floor(border)
    peak = max(values(levels.min()), values(levels.max()))  # the values grow or fall with the levels
    is_ink = levels > floor if table is None else (table > floor)[levels]  # a bool per pixel, not a float
    box = _ink_box(is_ink) if peak > floor else None
    if box is None:
        _no_digit(light_background, invert)
    digit = _fit_box(_ink(values(levels[box]), floor, peak))
    return np.round(_centre(digit) * 255.0).astype(np.uint8)


def _border(pixels: np.ndarray) -> np.ndarray:
    return np.concatenate([pixels[0], pixels[-1], pixels[1:-1, 0], pixels[1:-1, -1]])


def _median(values: np.ndarray) -> float:
    """``np.median`` of a 1-D array without NaNs (the same value), without its overhead."""
    middle = len(values) // 2
    if len(values) % 2:
        return np.partition(values, middle)[middle]
    low, high = np.partition(values, [middle - 1, middle])[middle - 1 : middle + 1]
    return (low + high) / 2


def _background_floor(border: np.ndarray) -> float:
    """The level at and below which a pixel is background or its noise: the median of the border plus
    NOISE_SIGMAS robust standard deviations of it."""
    background = _median(border)
    spread = 1.4826 * _median(np.abs(border - background))  # a standard deviation robust to ink on it
    return background + NOISE_SIGMAS * spread


def _ink_box(is_ink: np.ndarray) -> tuple[slice, slice] | None:
    """The bounding box of the True pixels; None when there are none."""
    rows, cols = np.flatnonzero(is_ink.any(axis=1)), np.flatnonzero(is_ink.any(axis=0))
    if len(rows) == 0:
        return None
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _ink(pixels: np.ndarray, floor: float, peak: float) -> np.ndarray:
    """Background and its noise -> 0, brightest ink -> 1; an MNIST digit (black border) keeps its levels."""
    return np.minimum(np.maximum((pixels - floor) / (peak - floor), 0.0), 1.0)  # np.clip, less overhead


def _no_digit(light_background: bool, invert: InvertMode) -> None:
    wrong_way = light_background and invert == "never"
    hint = " (dark ink on light paper needs invert 'auto' or 'always')" if wrong_way else ""
    raise UnreadableImage(f"no digit found: nothing brighter than the background{hint}")


def _fit_box(ink: np.ndarray) -> np.ndarray:
    """Scale so the longer side is BOX pixels, keeping the aspect ratio (anti-aliased when shrinking);
    the brightest pixel stays white."""
    height, width = ink.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return ink
    resized = Image.fromarray(ink.astype(np.float32)).resize(size, Image.Resampling.BILINEAR)
    resized = np.minimum(np.maximum(np.asarray(resized, dtype=np.float64), 0.0), 1.0)
    return resized / resized.max()  # strokes thinned by shrinking get MNIST's white core back


def _centre(digit: np.ndarray) -> np.ndarray:
    """Paste into a black FIELD x FIELD image so the centre of mass lands on pixel (CENTRE, CENTRE)."""
    rows, cols = np.indices(digit.shape)
    mass = digit.sum()
    top = round(CENTRE - (rows * digit).sum() / mass)
    left = round(CENTRE - (cols * digit).sum() / mass)
    field = np.zeros((FIELD, FIELD))
    height, width = digit.shape
    r0, c0 = max(top, 0), max(left, 0)
    r1, c1 = min(top + height, FIELD), min(left + width, FIELD)
    field[r0:r1, c0:c1] = digit[r0 - top : r1 - top, c0 - left : c1 - left]
    return field
