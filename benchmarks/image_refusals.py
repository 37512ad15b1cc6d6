"""How fast and how cheaply the crafted images of ``tests/helpers/bombs.py`` are refused, in this process,
by the path ``predict`` and ``serve`` share (``open_image``), next to the old path (``Image.open`` + size
check + ``load``) for the JPEG of many scans and the tall PNG:

    PYTHONPATH=.:tests python benchmarks/image_refusals.py [--runs 7] [--old]

Prints, for each image, its size in bytes, the median time to refuse it over ``--runs`` runs, the growth of
the process's peak RSS while refusing them, and the reason given; then what the largest pictures accepted
cost to open and prepare (time, and growth of peak RSS). ``--old`` also times the old path once on
each of those two (seconds each).
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from pathlib import Path

from PIL import Image

from mnist_lightning.data.digits import prepare_digit
from mnist_lightning.data.untrusted_images import UnreadableImage, open_image

from helpers import bombs


def peak_rss_mb() -> float:
    """The process's peak RSS since the last :func:`reset_peak_rss` (Linux: VmHWM)."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def reset_peak_rss() -> None:
    """Start the peak RSS again from the current RSS (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    Path("/proc/self/clear_refs").write_text("5")


def refusal_time(data: bytes, runs: int) -> tuple[float, str]:
    """The median seconds ``open_image`` takes to refuse ``data``, and its reason."""
    times, reason = [], ""
    for _ in range(runs):
        start = time.perf_counter()
        try:
            open_image(data)
            reason = "accepted"
        except UnreadableImage as refusal:
            reason = str(refusal)
        times.append(time.perf_counter() - start)
    return statistics.median(times), reason


def preparing_time(data: bytes, runs: int) -> float:
    """The median seconds ``open_image`` and ``prepare_digit`` take on an accepted (blank) picture."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        try:
            prepare_digit(open_image(data))
        except UnreadableImage:  # blank: no digit, after all the work
            pass
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def old_path_time(data: bytes) -> float:
    """What the old code did with an image: open, check 25 M pixels in all, decode."""
    start = time.perf_counter()
    with Image.open(io.BytesIO(data)) as image:
        assert image.width * image.height <= 25_000_000
        image.load()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--old", action="store_true", help="also time the old path on two of the images")
    args = parser.parse_args()
    images = {
        "PNG 1 x 24,000,000": bombs.blank_png(1, 24_000_000),
        "ICO with a 13000x13000 PNG": bombs.ico_with_png(bombs.blank_png(13000, 13000)),
        "PNG 10000x10000": bombs.blank_png(10000, 10000),
        "EPS": bombs.eps_file(),
        "GIF 65535x65535 screen": bombs.gif((65535, 65535), (2, 2)),
        "GIF 65535x65535 frame": bombs.gif((2, 2), (65535, 65535)),
        "JPEG 65000x65000": bombs.jpeg_claiming(65000, 65000),
        "WebP 16384x16384 canvas": bombs.animated_webp((16384, 16384)),
        "JPEG 4096x4096, 1,006 scans": bombs.jpeg_with_scans(1000, side=4096),
    }
    try:
        open_image(b"\x89PNG\r\n\x1a\n")  # imports Pillow's plugins once, outside the timings
    except UnreadableImage:
        pass
    reset_peak_rss()
    before = peak_rss_mb()
    print(f"{'image':28} {'bytes':>9} {'median ms':>10}  reason")
    for name, data in images.items():
        seconds, reason = refusal_time(data, args.runs)
        print(f"{name:28} {len(data):9,} {1000 * seconds:10.2f}  {reason}")
    print(f"peak RSS {before:.0f} MB before, {peak_rss_mb():.0f} MB after ({args.runs} runs of each)")
    for name, data in {
        "PNG 4096x4096 grey": bombs.blank_png(4096, 4096),
        "PNG 4096x4096 RGBA 16-bit": bombs.blank_png(4096, 4096, "RGBA;16"),
    }.items():
        reset_peak_rss()
        before = peak_rss_mb()
        seconds = preparing_time(data, args.runs)
        print(
            f"largest accepted, {name} ({len(data):,} bytes): open and prepare {seconds:.2f} s (median), "
            f"peak RSS +{peak_rss_mb() - before:.0f} MB"
        )
    if args.old:
        for name in ("JPEG 4096x4096, 1,006 scans", "PNG 1 x 24,000,000"):
            reset_peak_rss()
            before = peak_rss_mb()
            seconds = old_path_time(images[name])
            print(f"old path, {name}: {seconds:.2f} s, peak RSS +{peak_rss_mb() - before:.0f} MB")


if __name__ == "__main__":
    main()
