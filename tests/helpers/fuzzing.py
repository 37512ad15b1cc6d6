"""Hypothesis settings and strategies shared by the fuzz tests of what parses untrusted bytes.

Each fuzz test runs ``FUZZ_EXAMPLES`` examples (default 100, a few seconds), derandomized so that CI sees
the same inputs every run. A longer, random run explores new inputs: ``FUZZ_EXAMPLES=5000 make test`` or
``FUZZ_EXAMPLES=5000 pytest tests/data/test_image_fuzz.py tests/tools/test_request_fuzz.py``.
"""

from __future__ import annotations

import io
import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image

from helpers import bombs

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "100"))
fuzz_settings = settings(
    max_examples=EXAMPLES,
    derandomize="FUZZ_EXAMPLES" not in os.environ,
    deadline=2000,  # ms per example: the slowest accepted image (16 M pixels) decodes well within it
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)


def _digit_files() -> list[bytes]:
    """A small picture of a digit in each accepted format, and animated or multi-page ones."""
    digit = Image.new("L", (24, 30), 230)
    digit.paste(20, (8, 5, 14, 25))
    files = []
    for format_, mode, extra in [
        ("PNG", "L", {}), ("PNG", "RGBA", {}), ("PNG", "I;16", {}), ("PNG", "P", {"save_all": True}),
        ("JPEG", "RGB", {}), ("JPEG", "L", {"progressive": True}), ("GIF", "P", {"save_all": True}),
        ("BMP", "RGB", {}), ("BMP", "1", {}), ("WEBP", "RGB", {"save_all": True}),
        ("WEBP", "RGBA", {"lossless": True}), ("TIFF", "L", {"save_all": True}),
        ("TIFF", "RGB", {"compression": "tiff_lzw"}), ("TIFF", "F", {}), ("TIFF", "CMYK", {}),
    ]:  # fmt: skip
        buffer = io.BytesIO()
        picture = digit.convert(mode)
        if extra.get("save_all"):
            extra = {**extra, "append_images": [picture.rotate(90)]}
        picture.save(buffer, format_, **extra)
        files.append(buffer.getvalue())
    return files


DIGIT_FILES = _digit_files()


@st.composite
def mutated_files(draw) -> bytes:
    """A digit file with some bytes changed, inserted or cut off: mostly in its header, where sizes are."""
    data = bytearray(draw(st.sampled_from(DIGIT_FILES)))
    for _ in range(draw(st.integers(0, 6))):
        position = draw(st.one_of(st.integers(0, min(64, len(data) - 1)), st.integers(0, len(data) - 1)))
        action = draw(st.sampled_from(["set", "insert", "delete"]))
        if action == "set":
            data[position] = draw(st.integers(0, 255))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[position : position + draw(st.integers(1, 8))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


sides = st.integers(1, 70000)
claimed_sizes = st.one_of(
    st.builds(bombs.jpeg_claiming, sides.filter(lambda side: side <= 65535), st.integers(1, 65535)),
    st.builds(bombs.gif, st.tuples(st.integers(1, 65535), st.integers(1, 65535)),
              st.tuples(st.integers(1, 65535), st.integers(1, 65535))),
    st.builds(bombs.animated_webp, st.tuples(st.integers(1, 16384), st.integers(1, 16384))),
    st.builds(bombs.blank_png, st.integers(1, 3000), st.integers(1, 3000)),
)  # fmt: skip

untrusted_bytes = st.one_of(st.binary(max_size=2000), mutated_files(), claimed_sizes)
