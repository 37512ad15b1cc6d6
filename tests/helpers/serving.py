"""Helpers for the serve tests: pictures of digits, the server as a real subprocess, and HTTP calls to it."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from mnist_lightning.data.digits import prepare_digit

STARTUP_DEADLINE = (
    180.0  # seconds for the server to answer /health (imports torch twice on a busy 2-core CPU)
)
STOP_DEADLINE = 60.0
# the guarded server (conftest's guarded_server): its API key and --read_timeout (seconds)
GUARDED_KEY = "correct horse battery staple"
GUARDED_READ_TIMEOUT = 2


def digit_picture(digit: int, rng: np.random.Generator) -> Image.Image:
    """A photo-like picture of a digit: dark ink of a random size, weight and tilt on light grey paper."""
    size = int(rng.integers(40, 90))
    paper = int(rng.integers(200, 256))
    picture = Image.new("L", (2 * size, 2 * size), paper)
    ImageDraw.Draw(picture).text(
        (size // 2 + int(rng.integers(-8, 8)), size // 3),
        str(digit),
        fill=int(rng.integers(0, 60)),
        font=ImageFont.load_default(size=size),
        stroke_width=int(rng.integers(0, 4)),
        stroke_fill=0,
    )
    return picture.rotate(float(rng.uniform(-12, 12)), fillcolor=paper)


def digit_pictures(count: int, seed: int) -> tuple[list[Image.Image], list[int]]:
    """``count`` pictures of the digits 0-9 in turn."""
    rng = np.random.default_rng(seed)
    labels = [index % 10 for index in range(count)]
    return [digit_picture(label, rng) for label in labels], labels


def prepared_digits(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pictures of digits prepared as MNIST digits (uint8 (N, 28, 28)) and their labels: a data set on which
    a model learns to recognize the pictures the tests send as PNG or JPEG (half of them went through JPEG
    compression, whose artifacts change the prepared digits slightly)."""
    pictures, labels = digit_pictures(count, seed)
    compressed = np.random.default_rng(seed).random(count) < 0.5  # at random: not tied to the digit
    pictures = [
        decoded(picture, "JPEG") if jpeg else picture
        for picture, jpeg in zip(pictures, compressed, strict=True)
    ]
    return torch.from_numpy(np.stack([prepare_digit(picture) for picture in pictures])), torch.tensor(labels)


def decoded(picture: Image.Image, image_format: str) -> Image.Image:
    """The picture after a round trip through a PNG or JPEG file."""
    return Image.open(io.BytesIO(base64.b64decode(encoded(picture, image_format))))


def encoded(picture: Image.Image, image_format: str = "PNG") -> str:
    """The picture as base64 text of a PNG or JPEG file."""
    buffer = io.BytesIO()
    picture.convert("RGB" if image_format == "JPEG" else picture.mode).save(buffer, image_format)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url: str, timeout: float = 30, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=timeout
        ) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def post(
    url: str,
    body: bytes,
    content_type: str = "application/json",
    timeout: float = 60,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict]:
    """POST ``body`` (with ``headers`` too); the status and the decoded JSON answer (also for 4xx answers)."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": content_type, **(headers or {})}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def predict(url: str, image: str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    return post(f"{url}/predict", json.dumps({"image": image}).encode(), headers=headers)


class ServerProcess:
    """``python -m mnist_lightning serve ARGS`` on a free port, in its own process group; ``host``: where it
    is reached (as ``--host`` in ARGS says); ``api_key``: the key it is given in ARGS, which GET /health needs
    too."""

    def __init__(self, *args: object, cwd: Path, host: str = "127.0.0.1", api_key: str | None = None) -> None:
        self.headers = {"X-API-Key": api_key} if api_key else {}
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self.stderr_path = cwd / f"serve-{self.port}.stderr"
        with self.stderr_path.open("w") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mnist_lightning", "serve", *map(str, args), "--port", str(self.port)],
                cwd=cwd,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # a process group of its own, as a terminal's Ctrl-C reaches it
                env=dict(os.environ),
            )
        self.wait_until_ready()

    def wait_until_ready(self) -> None:
        """Poll GET /health until it answers 200; fail at the deadline or when the process ends."""
        deadline = time.monotonic() + STARTUP_DEADLINE
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}: {self.stderr()[-3000:]}")
            try:
                if get(f"{self.url}/health", timeout=2, headers=self.headers)[0] == 200:
                    return
            except OSError:  # not listening yet
                pass
            time.sleep(0.2)
        os.killpg(self.process.pid, signal.SIGKILL)  # its HTTP processes and workers too
        raise AssertionError(f"serve did not get ready in {STARTUP_DEADLINE:.0f} s: {self.stderr()[-3000:]}")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        """Stop the server as a terminal's Ctrl-C does (SIGINT to every process of the group) or as ``kill``,
        Docker and Kubernetes do (SIGTERM to the server's process); its exit status once it has stopped."""
        if signum == signal.SIGINT:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise AssertionError(
                f"serve did not stop within {STOP_DEADLINE:.0f} s of signal {signum}"
            ) from None

    def stderr(self) -> str:
        return self.stderr_path.read_text()


def process_group(leader: int) -> set[int]:
    """The live processes of ``leader``'s process group (a server started with ``start_new_session``: its HTTP
    processes, workers, fork servers and image decoders; not those ended and not yet reaped), from /proc."""
    members = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after "pid (name)": state ppid pgrp ...
        except OSError:  # ended meanwhile
            continue
        if int(fields[2]) == leader and fields[0] != "Z":
            members.add(int(stat.parent.name))
    return members


def mapped_files(pid: int) -> set[str]:
    """The files process ``pid`` has mapped into its memory: its executable and every shared library loaded
    (an imported C extension such as torch's ``libtorch_cpu.so`` among them)."""
    lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    return {line.split(maxsplit=5)[5] for line in lines if len(line.split(maxsplit=5)) == 6}
