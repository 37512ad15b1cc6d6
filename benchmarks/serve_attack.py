"""``serve`` under attack: ordinary requests' latency and the server's memory while two clients send bombs.

The server (``serve --ckpt_path CKPT``, pinned to ``--cpus`` with ``taskset``) first answers ``--sample`` real
MNIST test digits (112x112 dark-on-light PNGs) one by one on an idle server: those answers are the reference.
Then, at once:

- two attackers, each on its own keep-alive connection, send ``--bombs`` pairs of bombs back to back, a
  tall PNG then an ICO in turn: a 1 x 24,000,000 grayscale PNG (47 KB of zlib-compressed zero rows, under the
  25 M pixel limit of the code it was found against) and an ICO file whose one image is a 13000x13000 PNG
  (169 M pixels, 165 KB); both are built here;
- a third connection sends the ordinary digits in turn, back to back, until the attackers are done, and
  records each one's latency and whether its answer is the reference answer.

Printed: the ordinary requests' count, p50/p90/p99/max latency, wrong or failed answers; the bombs' answers
by status and their latency; the total RSS of the server's processes (every process of its tree) before the
attack, at its end and ``--settle`` seconds later; the load average. ``--rounds`` repeats it on a fresh
server; a round is flagged when the machine was busy (load average before it over ``--busy_load``), or when a
bomb was answered 200 (not refused: implausible). The figures go to a section of ``benchmarks/SERVE.md``.

    python benchmarks/serve_attack.py --data_dir /path/to/datasets
    python benchmarks/serve_attack.py --ckpt_path CKPT --bombs 10 --rounds 2
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import shlex
import socket
import struct
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
from process_stats import rss_mb  # benchmarks/process_stats.py, beside this script
from serve import ATTACK_SECTION, NETWORKS, Server, test_pictures, train_checkpoint

from mnist_lightning.callbacks.fingerprints import cpu_model

REPO = Path(__file__).resolve().parents[1]
SECTION = ATTACK_SECTION  # the heading of this script's section of SERVE.md


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def zero_png(width: int, height: int) -> bytes:
    """A black 8-bit grayscale PNG of ``width`` x ``height``, its rows compressed as one zlib stream."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)  # filter byte 0, then the pixels
    rows_per_piece = max(1, 4_000_000 // len(row))
    piece = row * rows_per_piece
    parts, left = [], height
    while left:
        count = min(left, rows_per_piece)
        parts.append(compressor.compress(piece if count == rows_per_piece else row * count))
        left -= count
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def ico_of(png: bytes) -> bytes:
    """An ICO file with ``png`` as its one image (the directory says 256x256, as for any large image)."""
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 22) + png


def bomb_bodies() -> dict[str, bytes]:
    """The JSON bodies of the two bombs."""
    bombs = {"tall PNG": zero_png(1, 24_000_000), "ICO": ico_of(zero_png(13_000, 13_000))}
    for name, data in bombs.items():
        print(f"{name} bomb: {len(data) / 1000:.0f} KB", flush=True)
    return {
        name: json.dumps({"image": base64.b64encode(data).decode()}).encode() for name, data in bombs.items()
    }


class Connection:
    """A keep-alive HTTP connection that reconnects when the server closed it."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port, self.timeout = port, timeout
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def post(self, body: bytes) -> tuple[int, bytes, float]:
        """POST /predict: the status (0 when the connection failed), the answer and the seconds it took."""
        started = time.perf_counter()
        try:
            self.connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
            response = self.connection.getresponse()
            status, answer = response.status, response.read()
            if response.getheader("Connection", "").lower() == "close":
                self.reconnect()
        except (OSError, http.client.HTTPException) as err:
            status, answer = 0, str(err).encode()
            self.reconnect()
        return status, answer, time.perf_counter() - started

    def reconnect(self) -> None:
        self.connection.close()
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)


def attack(port: int, bombs: dict[str, bytes], pairs: int, deadline: float, record: list) -> None:
    """Send ``pairs`` of bombs back to back (each kind in turn) until done or the deadline; record each
    ``(kind, status, seconds)``."""
    connection = Connection(port, timeout=120)
    for _ in range(pairs):
        for kind, body in bombs.items():
            if time.monotonic() > deadline:
                return
            status, _, seconds = connection.post(body)
            record.append((kind, status, seconds))


def ordinary(
    port: int, bodies: list[bytes], reference: list[int], done: threading.Event, record: list
) -> None:
    """Send the ordinary digits in turn until ``done``; record ``(status, prediction or None, expected,
    seconds)``."""
    connection = Connection(port, timeout=120)
    index = 0
    while not done.is_set():
        body, expected = bodies[index % len(bodies)], reference[index % len(reference)]
        status, answer, seconds = connection.post(body)
        prediction = json.loads(answer).get("prediction") if status == 200 else None
        record.append((status, prediction, expected, seconds))
        index += 1


def percentile(values: list[float], share: float) -> float:
    return float(np.percentile(values, share)) if values else float("nan")


def one_round(command: list[str], options, bodies, bombs) -> dict:
    port = free_port()
    load_before = os.getloadavg()
    server = Server([*command, "--port", str(port)], port, options.cpus)
    try:
        sample = Connection(port, timeout=60)
        reference = []
        for body in bodies:
            status, answer, _ = sample.post(body)
            if status != 200:
                raise SystemExit(f"an ordinary request got {status} on the idle server: {answer[:300]!r}")
            reference.append(json.loads(answer)["prediction"])
        time.sleep(1.0)
        rss_before = rss_mb(server.process.pid)
        attacks: list[list] = [[], []]
        served: list = []
        done = threading.Event()
        deadline = time.monotonic() + options.max_seconds
        attackers = [
            threading.Thread(target=attack, args=(port, bombs, options.bombs, deadline, record))
            for record in attacks
        ]
        user = threading.Thread(target=ordinary, args=(port, bodies, reference, done, served))
        started = time.monotonic()
        user.start()
        for thread in attackers:
            thread.start()
        for thread in attackers:
            thread.join()
        done.set()
        user.join()
        seconds = time.monotonic() - started
        rss_end = rss_mb(server.process.pid)
        time.sleep(options.settle)
        rss_settled = rss_mb(server.process.pid)
    finally:
        server.stop()
    latencies = [1000 * seconds for _, _, _, seconds in served]
    bombs_sent = [entry for record in attacks for entry in record]
    statuses: dict[str, dict[int, int]] = {}
    for kind, status, _ in bombs_sent:
        statuses.setdefault(kind, {}).setdefault(status, 0)
        statuses[kind][status] += 1
    load_after = os.getloadavg()
    flags = []
    if load_before[0] > options.busy_load:
        flags.append(f"busy machine (load {load_before[0]:.2f} before)")
    if any(status == 200 for _, status, _ in bombs_sent):
        flags.append("a bomb was answered 200")
    return {
        "seconds": seconds,
        "ordinary": len(served),
        "wrong": sum(status == 200 and prediction != expected for status, prediction, expected, _ in served),
        "failed": sum(status != 200 for status, _, _, _ in served),
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=float("nan")),
        "bombs": len(bombs_sent),
        "bomb_statuses": statuses,
        "bomb_p50_ms": percentile([1000 * s for _, _, s in bombs_sent], 50),
        "bomb_max_ms": max((1000 * s for _, _, s in bombs_sent), default=float("nan")),
        "rss_before_mb": rss_before,
        "rss_end_mb": rss_end,
        "rss_settled_mb": rss_settled,
        "load_before": load_before[0],
        "load_after": load_after[0],
        "flags": flags,
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def describe(number: int, row: dict) -> str:
    statuses = "; ".join(
        f"{kind}: "
        + ", ".join(f"{count} x {status or 'no answer'}" for status, count in sorted(found.items()))
        for kind, found in row["bomb_statuses"].items()
    )
    flags = f"  FLAGGED: {', '.join(row['flags'])}" if row["flags"] else ""
    return (
        f"round {number}: {row['seconds']:.0f} s; ordinary requests {row['ordinary']:,}, p50 "
        f"{row['p50_ms']:.1f} ms, p90 {row['p90_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, max "
        f"{row['max_ms']:.0f} ms, {row['wrong']} wrong, {row['failed']} failed; bombs {row['bombs']} "
        f"({statuses}), p50 {row['bomb_p50_ms']:.0f} ms, max {row['bomb_max_ms']:.0f} ms; RSS "
        f"{row['rss_before_mb']:.0f} -> {row['rss_end_mb']:.0f} MB ({row['rss_settled_mb']:.0f} MB after "
        f"the pause); load {row['load_before']:.2f} -> {row['load_after']:.2f}{flags}"
    )


def markdown(rows: list[dict], options, label: str) -> str:
    """A ``### label`` part of the section: how it was run, and a row per round."""
    command = f"python benchmarks/serve_attack.py --bombs {options.bombs} --rounds {options.rounds}"
    if options.serve_args:
        command += f" --serve_args='{options.serve_args}'"
    intro = (
        f"`{command}`, "
        f"{time.strftime('%Y-%m-%d %H:%M')} UTC, {cpu_model()}, {os.cpu_count()} cores (shared with other "
        f"work; load averages below): the server pinned to cores {options.cpus}; two attackers each sending "
        f"{options.bombs} tall PNG + ICO bomb pairs back to back while a third connection sends real MNIST "
        "test digits (112x112 PNGs) back to back; `wrong`: an answer other than the idle server's. RSS: all "
        f"the server's processes, before the attack, at its end, and {options.settle:g} s later.\n"
    )
    lines = [
        f"### {label or 'serve'}\n",
        intro,
        "| round | seconds | ordinary requests | p50 (ms) | p90 (ms) | p99 (ms) | max (ms) | wrong | failed "
        "| bombs | bomb answers | RSS before (MB) | at the end | after the pause | load before, after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for number, row in enumerate(rows, 1):
        answers = ", ".join(
            f"{kind} {'/'.join(f'{count}x{status or 0}' for status, count in sorted(found.items()))}"
            for kind, found in row["bomb_statuses"].items()
        )
        flag = " (flagged: " + ", ".join(row["flags"]) + ")" if row["flags"] else ""
        lines.append(
            f"| {number}{flag} | {row['seconds']:.0f} | {row['ordinary']:,} | {row['p50_ms']:.1f} | "
            f"{row['p90_ms']:.1f} | {row['p99_ms']:.1f} | {row['max_ms']:.0f} | {row['wrong']} | "
            f"{row['failed']} | {row['bombs']} | {answers} | {row['rss_before_mb']:.0f} | "
            f"{row['rss_end_mb']:.0f} | {row['rss_settled_mb']:.0f} | {row['load_before']:.2f}, "
            f"{row['load_after']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_section(path: Path, part: str) -> None:
    """Put ``part`` in this script's section of ``path`` (added at the end), in place of the part with the
    same ``###`` heading or after the others; ``serve.py`` keeps the section when it rewrites the file."""
    existing = path.read_text() if path.exists() else "# Serving benchmark\n"
    before, _, section = existing.partition(SECTION)
    heading = part.partition("\n")[0]
    parts = [f"### {text}".rstrip("\n") for text in section.split("\n### ")[1:]]
    parts = [text if text.partition("\n")[0] != heading else part.rstrip("\n") for text in parts]
    if heading not in (text.partition("\n")[0] for text in parts):
        parts.append(part.rstrip("\n"))
    path.write_text(f"{before.rstrip()}\n\n{SECTION}\n\n" + "\n\n".join(parts) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=os.environ.get("MNIST_DATA_DIR", "data"))
    parser.add_argument("--ckpt_path", help="the checkpoint to serve (trained here when left out)")
    parser.add_argument("--train_batches", type=int, default=300, help="training batches of that checkpoint")
    parser.add_argument("--bombs", type=int, default=200, help="bomb pairs (tall PNG + ICO) per attacker")
    parser.add_argument("--max_seconds", type=float, default=900, help="attackers stop after this long")
    parser.add_argument("--sample", type=int, default=200, help="ordinary digits, sent in turn")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before the last RSS reading")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--busy_load", type=float, default=1.5, help="a round starting above it is flagged")
    parser.add_argument("--serve_args", default="", help="options added to the 'serve' command")
    parser.add_argument("--label", default="", help="what this run measured: its heading in SERVE.md")
    parser.add_argument("--cpus", default=f"0-{os.cpu_count() - 1}", help="cores of the server (taskset)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "SERVE.md"))
    options = parser.parse_args()

    bodies = test_pictures(options.data_dir, options.sample)[0]
    bombs = bomb_bodies()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        ckpt_path = options.ckpt_path or train_checkpoint(
            NETWORKS["MLP"], os.path.abspath(options.data_dir), options.train_batches, Path(scratch)
        )
        command = [sys.executable, "-m", "mnist_lightning", "serve", "--ckpt_path", ckpt_path]
        command += shlex.split(options.serve_args)
        print(shlex.join(command), flush=True)
        for number in range(1, options.rounds + 1):
            rows.append(one_round(command, options, bodies, bombs))
            print(describe(number, rows[-1]), flush=True)
    text = markdown(rows, options, options.label)
    write_section(Path(options.output), text)
    print(f"\n{text}\nwritten to {options.output}")


if __name__ == "__main__":
    main()
