"""Images crafted as an attacker would: small files that claim huge sizes, or formats that are refused."""

from __future__ import annotations

import functools
import io
import struct
import zlib

from PIL import Image


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


PNG_KINDS = {"L": (0, 8, 1), "RGBA;16": (6, 16, 4)}  # colour type, bits per sample, samples per pixel


@functools.cache  # the same bytes each time: the tests share them
def blank_png(width: int, height: int, kind: str = "L") -> bytes:
    """A PNG of ``width`` x ``height`` black pixels (8-bit grey, or 16-bit RGBA transparent), written without
    Pillow: its rows of zeros compress ~1000 to 1, so 1 x 24,000,000 grey pixels take ~47 KB."""
    colour_type, depth, samples = PNG_KINDS[kind]
    compressor = zlib.compressobj(9)
    row = bytes(1 + width * samples * depth // 8)  # filter byte 0, then the pixels
    rows_per_piece = max(1, 1_000_000 // len(row))
    pieces = [compressor.compress(row * min(rows_per_piece, height - done)) for done in
              range(0, height, rows_per_piece)]  # fmt: skip
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(pieces) + compressor.flush())
        + png_chunk(b"IEND", b"")
    )


def ico_with_png(png: bytes) -> bytes:
    """An ICO file whose one icon is ``png`` (its directory says 256x256; the PNG says its real size)."""
    header = struct.pack("<HHH", 0, 1, 1)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return header + entry + png


def eps_file() -> bytes:
    """An EPS file: Pillow would hand it to Ghostscript to decode."""
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\n"
        b"newpath 10 10 moveto 90 90 lineto stroke\nshowpage\n%%EOF\n"
    )


def gif(screen: tuple[int, int], frame: tuple[int, int]) -> bytes:
    """A 2x2 GIF whose header is rewritten: its logical screen and its first frame claim the given sizes."""
    buffer = io.BytesIO()
    Image.new("P", (2, 2), 0).save(buffer, "GIF")
    data = bytearray(buffer.getvalue())
    data[6:10] = struct.pack("<HH", *screen)
    descriptor = data.index(b",", 13)  # after the header and the global colour table
    data[descriptor + 5 : descriptor + 9] = struct.pack("<HH", *frame)
    return bytes(data)


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose header (SOF0) is rewritten to claim ``width`` x ``height`` pixels."""
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 0).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def animated_webp(canvas: tuple[int, int]) -> bytes:
    """An animated WebP whose canvas is ``canvas`` pixels, with one 16x16 frame in its corner."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), 0).save(buffer, "WEBP", lossless=True)
    picture = buffer.getvalue()[12:]  # the VP8L chunk

    def chunk(kind: bytes, body: bytes) -> bytes:
        return kind + struct.pack("<I", len(body)) + body + bytes(len(body) % 2)

    def size(width: int, height: int) -> bytes:
        return (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")

    body = b"WEBP" + chunk(b"VP8X", b"\x02" + bytes(3) + size(*canvas))
    body += chunk(b"ANIM", bytes(4) + struct.pack("<H", 0))
    body += chunk(b"ANMF", bytes(6) + size(16, 16) + bytes(4) + picture)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def jpeg_with_scans(copies: int, side: int = 1024) -> bytes:
    """A progressive JPEG of ``side`` x ``side`` black pixels with ``copies`` more copies of its last scan
    (33 bytes each): libjpeg decodes each over the whole picture."""
    buffer = io.BytesIO()
    Image.new("L", (side, side), 0).save(buffer, "JPEG", progressive=True)
    data = buffer.getvalue()
    end = data.rindex(b"\xff\xd9")
    last_scan = data[data.rindex(b"\xff\xda") : end]
    return data[:end] + last_scan * copies + data[end:]
