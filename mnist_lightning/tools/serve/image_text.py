"""What the server's image decoders run (``preparing.py``): the ``image`` text of a request -> the MNIST-style
digit it shows. NumPy and Pillow only (no FastAPI, no torch), so that each decoder process is small.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from PIL import Image

from mnist_lightning.data.digits import prepare_digit
from mnist_lightning.data.untrusted_images import UnreadableImage, open_image


def decode_image(data: bytes) -> Image.Image:
    """Decode an image from untrusted bytes within the limits of ``open_image`` (accepted formats, size
    checked before decoding); ValueError saying why in one sentence when it is refused or does not decode."""
    try:
        return open_image(data)
    except UnreadableImage as err:
        raise ValueError(str(err)) from None


class BadImage(ValueError):
    """An ``image`` refused; ``reason``: the kind (``not_base64``, ``not_an_image``, ``no_digit``, ...)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def prepared_digit(value: Any) -> bytes:
    """The ``image`` field of a request -> the 28x28 MNIST-style digit it shows, as 784 bytes.

    Raises BadImage (a 400 answer) when the text is not base64, the bytes are not an image or one refused
    (its format or size, see ``open_image``), or the image shows no digit.
    """
    if not isinstance(value, str):
        raise BadImage("not_a_string", "must be a string: a base64 PNG or JPEG, optionally a data URL")
    text = value.strip()
    if text.startswith("data:"):  # data:image/png;base64,....
        text = text.partition(",")[2]
    if not text:
        raise BadImage("empty", "is empty")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise BadImage("not_base64", f"is not valid base64 ({err})") from None
    try:
        image = decode_image(data)
    except ValueError as err:
        raise BadImage("not_an_image", str(err)) from None
    try:
        digit = prepare_digit(image)
    except UnreadableImage as err:
        raise BadImage("no_digit", str(err)) from None
    return digit.tobytes()
