"""Images from outside are checked before they are decoded: only the accepted formats, the others refused by
name, the size read from the header and refused over the limits, for ``predict`` on files and for the
server's requests alike."""

from __future__ import annotations

import io
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image, ImageFile

from mnist_lightning.data.datamodule import MNISTDataModule
from mnist_lightning.data.digits import prepare_digit
from mnist_lightning.data.images import UnreadableImage, read_image
from mnist_lightning.tools.serve.image_text import decode_image

from helpers import bombs


def read_file(data: bytes, folder: Path) -> Image.Image:
    path = folder / "picture.img"
    path.write_bytes(data)
    return read_image(path)


def read_request(data: bytes, folder: Path) -> Image.Image:
    return decode_image(data)


OPENERS = {"predict on a file": read_file, "a request to the server": read_request}


@pytest.fixture(params=OPENERS.values(), ids=OPENERS.keys())
def refusal(request, tmp_path) -> Callable[[bytes], str]:
    """Opens bytes as ``predict`` (a file) or the server (a request's bytes) does, with warnings as errors;
    the reason it gives for refusing them (the test fails if they are accepted)."""
    opener = request.param

    def refused(data: bytes) -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a DecompressionBombWarning fails the test
            with pytest.raises((UnreadableImage, ValueError)) as refused_error:
                opener(data, tmp_path)
        return str(refused_error.value)

    return refused


@pytest.fixture
def nothing_decoded(monkeypatch) -> None:
    """The test fails at the first image Pillow decodes (``ImageFile.load``) or hands to Ghostscript."""

    def load(self: ImageFile.ImageFile):
        raise AssertionError(f"a {self.format} image of {self.size} was decoded")

    def ghostscript(*args, **kwargs):
        raise AssertionError("Ghostscript was called")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)


@pytest.fixture
def plugins_called(monkeypatch) -> list[str]:
    """The formats whose Pillow plugin was asked to open the bytes (it is recorded, then refuses)."""
    Image.init()
    called = []
    for format_ in ("ICO", "EPS", "PSD", "PPM"):
        factory, accept = Image.OPEN[format_]

        def recording_factory(fp, filename=None, format_=format_):
            called.append(format_)
            raise SyntaxError(f"{format_} plugin called")

        monkeypatch.setitem(Image.OPEN, format_, (recording_factory, accept))
    return called


def test_a_tall_thin_png_is_refused_from_its_header_before_decoding(refusal, nothing_decoded):
    tall = bombs.blank_png(1, 24_000_000)  # 47 KB; decoding it took 8.6 s and 1.3 GB
    assert len(tall) < 50_000
    assert refusal(tall) == (
        "is 1x24000000 pixels, over the limits of 8192 pixels a side and 16,777,216 in all; scale it down"
    )
    assert "8192 pixels a side" in refusal(bombs.blank_png(8193, 2))
    assert "16,777,216 in all" in refusal(bombs.blank_png(4097, 4097))


@pytest.mark.parametrize("width, height", [(8192, 2048), (4096, 4096), (4000, 3000), (1, 8192)])
def test_images_up_to_the_limits_are_decoded(width, height):
    assert decode_image(bombs.blank_png(width, height)).size == (width, height)


@pytest.mark.parametrize("format_", ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"])
def test_each_accepted_format_gives_its_digit_from_a_file_and_a_request(tmp_path, format_):
    digit = Image.new("L", (40, 40), 0)
    digit.paste(255, (12, 8, 24, 32))
    buffer = io.BytesIO()
    digit.save(buffer, format_, **{"WEBP": {"lossless": True}, "JPEG": {"quality": 95}}.get(format_, {}))
    expected = prepare_digit(digit)
    for opener in OPENERS.values():
        prepared = prepare_digit(opener(buffer.getvalue(), tmp_path))
        difference = np.abs(prepared.astype(float) - expected.astype(float))
        assert difference.mean() < 10 if format_ == "JPEG" else difference.max() == 0, format_  # JPEG: lossy


def test_a_truncated_image_and_a_png_whose_text_or_profile_inflates_past_1_mb_are_refused(refusal):
    digit = io.BytesIO()
    Image.new("L", (64, 64), 0).save(digit, "PNG")
    png = digit.getvalue()
    assert refusal(png[:-30]).startswith("not a readable PNG image (")
    inflating = zlib.compress(bytes(100_000_000), 9)  # 100 KB inflating to 100 MB
    at = png.index(b"IDAT") - 4
    for chunk in (b"iCCP", b"zTXt"):
        bomb = png[:at] + bombs.png_chunk(chunk, b"name\x00\x00" + inflating) + png[at:]
        assert refusal(bomb) == (
            "not a readable PNG image (Decompressed data too large for PngImagePlugin.MAX_TEXT_CHUNK)"
        )


def test_an_ico_carrying_a_huge_png_is_refused_by_name_unopened(refusal, nothing_decoded, plugins_called):
    ico = bombs.ico_with_png(bombs.blank_png(13000, 13000))
    assert refusal(ico) == "ICO images are not accepted; send PNG, JPEG, GIF, BMP, WebP or TIFF"
    assert plugins_called == []


def test_an_eps_file_is_refused_by_name_and_never_reaches_ghostscript(
    refusal, nothing_decoded, plugins_called
):
    assert refusal(bombs.eps_file()) == "EPS images are not accepted; send PNG, JPEG, GIF, BMP, WebP or TIFF"
    assert plugins_called == []


@pytest.mark.parametrize("format_", ["PPM", "PSD", "ICO", "PCX", "SGI"])
def test_formats_outside_the_list_are_refused_by_name_unopened(refusal, plugins_called, format_):
    buffer = io.BytesIO()
    if format_ == "PSD":  # Pillow reads PSD, does not write it
        buffer.write(b"8BPS\x00\x01" + bytes(40))
    else:
        Image.new("RGB", (30, 30), "white").save(buffer, format_)
    assert refusal(buffer.getvalue()).startswith(f"{format_} images are not accepted; send PNG, JPEG,")
    assert plugins_called == []


def test_bytes_in_no_format_are_not_an_image(refusal):
    assert refusal(b"GIF? no, a text") == (
        "not an image: its bytes are in none of the accepted formats (PNG, JPEG, GIF, BMP, WebP or TIFF)"
    )


def test_no_decompression_bomb_warning_for_a_size_pillow_only_warns_about(refusal, nothing_decoded):
    """10000x10000 is between Pillow's warning (89 M pixels) and its error (179 M): refused, no warning."""
    assert refusal(bombs.blank_png(10000, 10000)).startswith("is 10000x10000 pixels, over the limits")


@pytest.mark.parametrize(
    "screen, frame",
    [((65535, 65535), (2, 2)), ((2, 2), (65535, 65535)), ((2, 2), (9000, 1))],
    ids=["huge screen, tiny frame", "tiny screen, huge frame", "a frame wider than the limit"],
)
def test_a_gif_is_measured_by_its_screen_grown_to_its_first_frame(refusal, nothing_decoded, screen, frame):
    width, height = max(screen[0], frame[0]), max(screen[1], frame[1])
    assert refusal(bombs.gif(screen, frame)).startswith(f"is {width}x{height} pixels")


def test_an_animated_webp_with_a_huge_canvas_is_refused(refusal, nothing_decoded):
    assert refusal(bombs.animated_webp((16384, 16384))).startswith("is 16384x16384 pixels")


def test_a_jpeg_over_the_limits_is_decoded_smaller_or_refused(tmp_path, refusal):
    photo = Image.new("L", (8000, 6000), 0)  # a 48 MP photo, decoded at half its size
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=50)
    assert read_file(buffer.getvalue(), tmp_path).size == (4000, 3000)
    assert decode_image(buffer.getvalue()).size == (4000, 3000)
    assert refusal(bombs.jpeg_claiming(65000, 65000)).startswith("is 65000x65000 pixels")
    assert refusal(bombs.jpeg_claiming(1, 60000)).startswith("is 1x60000 pixels")  # 1/8 still too tall


def test_a_jpeg_of_too_many_scans_is_refused_before_decoding(refusal, nothing_decoded):
    assert refusal(bombs.jpeg_with_scans(1000)) == (
        "is a JPEG of 1,006 scans, more than the 32 accepted (a progressive JPEG has ~10)"
    )


def test_a_progressive_jpeg_is_decoded(tmp_path):
    progressive = bombs.jpeg_with_scans(0)
    assert progressive.count(b"\xff\xda") == 6
    assert read_file(progressive, tmp_path).size == decode_image(progressive).size == (1024, 1024)


@pytest.mark.parametrize("compression", ["jpeg", "lzma"])
def test_a_tiff_is_refused_unless_its_compression_is_a_plain_one(tmp_path, refusal, compression):
    digit = Image.new("RGB", (40, 40), 0)
    digit.paste((255, 255, 255), (12, 8, 24, 32))
    for accepted in ("raw", "tiff_lzw", "tiff_adobe_deflate", "packbits"):
        buffer = io.BytesIO()
        digit.save(buffer, "TIFF", compression=accepted)
        assert read_file(buffer.getvalue(), tmp_path).size == (40, 40), accepted
    buffer = io.BytesIO()
    digit.save(buffer, "TIFF", compression=compression)
    assert refusal(buffer.getvalue()) == (
        f"TIFF images compressed as {compression} are not accepted; send a PNG, or a TIFF compressed as "
        f"LZW, Deflate, PackBits or CCITT fax, or none"
    )


def test_only_the_first_page_of_a_tiff_and_the_first_frame_of_an_animation_are_decoded():
    digit = Image.new("L", (40, 40), 0)
    digit.paste(255, (12, 8, 24, 32))
    later = {"TIFF": Image.new("L", (9000, 2), 0)}  # a later page over the limits is never looked at
    for format_ in ("TIFF", "GIF", "PNG", "WEBP"):
        buffer = io.BytesIO()
        digit.save(buffer, format_, save_all=True, append_images=[later.get(format_, digit.rotate(90))],
                   lossless=True)  # fmt: skip
        opened = decode_image(buffer.getvalue())
        assert opened.size == (40, 40), format_
        assert np.array_equal(prepare_digit(opened), prepare_digit(digit)), format_


def test_a_file_over_the_byte_limit_is_refused_unread_and_the_largest_picture_uncompressed_is_read(tmp_path):
    largest = tmp_path / "largest.bmp"
    Image.new("RGBA", (4096, 4096)).save(largest)  # 4 bytes a pixel
    assert largest.stat().st_size > 67_000_000 and read_image(largest).size == (4096, 4096)
    huge = tmp_path / "huge.png"
    with huge.open("wb") as file:
        file.truncate(100_000_000)  # sparse: no disk used
    with pytest.raises(UnreadableImage, match="is 100,000,000 bytes, more than the 80,000,000 accepted"):
        read_image(huge)


def test_refused_files_are_named_with_their_reason_and_the_others_predicted(tmp_path, capsys):
    digit = Image.new("L", (40, 40), 0)
    digit.paste(255, (12, 8, 24, 32))
    digit.save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(bombs.blank_png(1, 24_000_000))
    (tmp_path / "c.ico").write_bytes(bombs.ico_with_png(bombs.blank_png(13000, 13000)))
    data = MNISTDataModule(predict_path=str(tmp_path))
    data.setup("predict")
    assert [path.name for path in data.datasets["predict"].paths] == ["a.png"]
    assert capsys.readouterr().err == (
        "Skipped 2 file(s) that could not be read as an image of a digit:\n"
        f"  {tmp_path / 'b.png'}: is 1x24000000 pixels, over the limits of 8192 pixels a side and "
        "16,777,216 in all; scale it down\n"
        f"  {tmp_path / 'c.ico'}: ICO images are not accepted; send PNG, JPEG, GIF, BMP, WebP or TIFF\n"
    )
