"""Image files and bytes from outside (a person's files, HTTP requests) opened without letting them cost
more than a picture of a digit should.

Images are untrusted data: a 47 KB PNG can claim 1 x 24,000,000 pixels, an ICO can carry a 13000x13000 PNG
that Pillow decodes when it opens the file, and an EPS file is handed to Ghostscript. :func:`open_image`
therefore:

1. refuses more than ``MAX_BYTES`` of input;
2. names the format from the first bytes and refuses every format but PNG, JPEG, GIF, BMP, WebP and TIFF by
   name; Pillow is then given only the accepted formats' plugins (``Image.open(..., formats=...)``), so no
   other plugin ever sees the bytes;
3. reads the width and height of the frame it will decode from the header (a GIF's logical screen grown to
   its first frame, a TIFF's first page, an animated PNG's or WebP's canvas) and refuses more than
   ``MAX_SIDE`` pixels on a side or ``MAX_PIXELS`` in all before any pixel is decoded; a JPEG over the
   limits is decoded at 1/2, 1/4 or 1/8 of its size (libjpeg's draft mode) when that fits, and a JPEG of
   more than ``MAX_JPEG_SCANS`` scans is refused (libjpeg decodes each scan over the whole picture);
4. refuses a TIFF compressed other than as LZW, Deflate, PackBits, CCITT fax or not at all;
5. decodes the first frame only, applies the EXIF rotation, and turns any failure into
   :class:`UnreadableImage` with the reason.

Pillow's own decompression-bomb check is switched off (``Image.MAX_IMAGE_PIXELS = None``) in the processes
that import this module: it would only warn (``DecompressionBombWarning``) between 89 M and 179 M pixels,
inside the plugins, before this module could refuse such an image by its stricter limits. Every untrusted
image of the project is opened here. Pillow's other bounds stay as they are: text and ICC chunks of a PNG are
capped (``PngImagePlugin.MAX_TEXT_CHUNK``, ``MAX_TEXT_MEMORY``) and a truncated image is an error.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

from PIL import Image, ImageOps

# Pillow's format -> the name a person knows it by; the formats accepted, in the order they are named
ACCEPTED_FORMATS = {"PNG": "PNG", "JPEG": "JPEG", "GIF": "GIF", "BMP": "BMP", "WEBP": "WebP", "TIFF": "TIFF"}
ACCEPTED_NAMES = "PNG, JPEG, GIF, BMP, WebP or TIFF"
# A digit needs 28x28 pixels; a phone photo of one (12 MP, 4000x3000) fits, and a 24-48 MP photo fits as a
# JPEG decoded at half or a quarter of its size. Decoded as RGBA that is at most 64 MiB.
MAX_SIDE = 8192
MAX_PIXELS = 4096 * 4096
MAX_BYTES = 80_000_000  # the most read at all; the largest picture stored at 4 bytes a pixel is 67 MB
JPEG_SCALES = (2, 4, 8)  # the reductions libjpeg decodes at directly (draft mode)
# libjpeg decodes every scan of a JPEG over the whole picture, so a 99 KB JPEG of 4096x4096 pixels with 1,000
# copies of one of its scans took 20 s. A baseline JPEG has 1 scan, a progressive one about 10 (6 in grey).
MAX_JPEG_SCANS = 32
# TIFF compressions decoded (Pillow's names): the plain ones, whose cost follows the picture's size. A TIFF of
# JPEG strips has the JPEG's cost of scans, and the rarer codecs are more code than a digit needs.
TIFF_COMPRESSIONS = {
    "raw", "tiff_lzw", "tiff_adobe_deflate", "tiff_deflate", "packbits", "tiff_ccitt", "group3", "group4"
}  # fmt: skip
# Pillow formats that decode as another accepted one: a camera's multi-picture JPEG is a JPEG
SAME_AS = {"MPO": "JPEG"}

Image.MAX_IMAGE_PIXELS = None  # replaced by MAX_SIDE and MAX_PIXELS, checked before decoding (see above)


class UnreadableImage(Exception):
    """An image that is refused or cannot be decoded, or that shows no digit; the message says why in one
    sentence."""


def open_image(source: bytes | Path) -> Image.Image:
    """The first frame of the image in ``source`` (bytes, or a file's path) decoded, EXIF rotation applied.

    Raises UnreadableImage naming what was wrong: too many bytes, a format (or a JPEG's scans, a TIFF's
    compression) that is not accepted, a size over the limits, or bytes that do not decode.
    """
    data = _read(source)
    if not data:
        raise UnreadableImage("is empty: 0 bytes")
    formats = [format_ for format_ in ACCEPTED_FORMATS if _claims(format_, data[:16])]
    if not formats:
        raise UnreadableImage(_refusal(data[:16]))
    name = ACCEPTED_FORMATS[formats[0]]
    if name == "JPEG":
        _check_scans(data)
    try:
        with Image.open(io.BytesIO(data), formats=formats) as image:
            name = ACCEPTED_FORMATS[SAME_AS.get(image.format, image.format)]
            _fit_limits(image, name)
            if name == "TIFF":
                _check_compression(image)
            image.load()  # the current frame: the first
            # a copy: the file's object keeps its plugin's state (a WebP's decoder and canvas, the bytes)
            return ImageOps.exif_transpose(image)
    except UnreadableImage:
        raise
    except Image.UnidentifiedImageError:  # its message names the BytesIO object
        raise UnreadableImage(f"not a readable {name} image (its header is broken)") from None
    except Exception as err:  # Pillow raises many types on malformed bytes; all mean "does not decode" here
        reason = (str(err).splitlines() or [""])[0].strip()[:200] or type(err).__name__
        raise UnreadableImage(f"not a readable {name} image ({reason})") from None


def _read(source: bytes | Path) -> bytes:
    if isinstance(source, bytes):
        size = len(source)
    else:
        try:
            size = source.stat().st_size
            if size <= MAX_BYTES:
                return source.read_bytes()
        except OSError as err:
            raise UnreadableImage(f"not readable ({err.strerror or type(err).__name__})") from None
    if size > MAX_BYTES:
        raise UnreadableImage(f"is {size:,} bytes, more than the {MAX_BYTES:,} accepted for an image")
    return source


def _claims(format_: str, prefix: bytes) -> bool:
    """Whether Pillow's plugin for ``format_`` recognizes ``prefix`` (the first 16 bytes) as its own."""
    Image.init()  # registers every plugin (once): the refused formats are named by their own test
    if format_ not in Image.OPEN:  # WebP without libwebp
        return False
    accept = Image.OPEN[format_][1]
    try:
        claimed = accept(prefix) if accept is not None else False
    except (struct.error, IndexError, TypeError, ValueError):  # too short for its test: as in Image.open
        return False
    return claimed is True or (bool(claimed) and not isinstance(claimed, str))


def _refusal(prefix: bytes) -> str:
    """Why bytes in no accepted format are refused: their format's name when a Pillow plugin knows it."""
    for format_ in Image.ID:
        if format_ not in ACCEPTED_FORMATS and _claims(format_, prefix):
            return f"{format_} images are not accepted; send {ACCEPTED_NAMES}"
    return f"not an image: its bytes are in none of the accepted formats ({ACCEPTED_NAMES})"


def _fit_limits(image: Image.Image, name: str) -> None:
    """Refuse an image over MAX_SIDE or MAX_PIXELS before decoding it; a JPEG decodes smaller if that fits."""
    width, height = image.size
    if not _within_limits(width, height) and name == "JPEG":
        for scale in JPEG_SCALES:
            if _within_limits(-(-width // scale), -(-height // scale)):
                image.draft(image.mode, (-(-width // scale), -(-height // scale)))
                break
    if not _within_limits(*image.size):
        raise UnreadableImage(
            f"is {width}x{height} pixels, over the limits of {MAX_SIDE} pixels a side and {MAX_PIXELS:,} in "
            f"all; scale it down"
        )


def _check_scans(jpeg: bytes) -> None:
    """Refuse a JPEG of more than MAX_JPEG_SCANS scans, counted by their start markers (0xFFDA); coded data
    never holds that pair of bytes, so only a thumbnail or a profile inside the file can add to the count."""
    scans = jpeg.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise UnreadableImage(
            f"is a JPEG of {scans:,} scans, more than the {MAX_JPEG_SCANS} accepted "
            f"(a progressive JPEG has ~10)"
        )


def _check_compression(tiff: Image.Image) -> None:
    compression = tiff.info.get("compression")
    if compression not in TIFF_COMPRESSIONS:
        raise UnreadableImage(
            f"TIFF images compressed as {compression} are not accepted; send a PNG, or a TIFF compressed as "
            f"LZW, Deflate, PackBits or CCITT fax, or none"
        )


def _within_limits(width: int, height: int) -> bool:
    return 0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and width * height <= MAX_PIXELS
