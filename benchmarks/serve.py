"""Throughput and latency of ``python -m mnist_lightning serve`` for 1, 8 and 64 concurrent clients.

For the MLP and the ConvNet: starts ``serve`` on 127.0.0.1, sends real MNIST test digits as PNG pictures
(dark on light, 112x112, as a scan would be) from N client threads, each on its own keep-alive connection,
and measures requests/s and the p50/p99 latency of a request. Prints a markdown table and writes it to
``benchmarks/SERVE.md``.

Without ``--mlp_ckpt``/``--cnn_ckpt`` it first trains small checkpoints itself on the real data (one epoch
limited to ``--train_batches`` batches). The clients run on the same machine as the server.

    python benchmarks/serve.py --data_dir /path/to/datasets
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from mnist_lightning.data.datasets import load_split

REPO = Path(__file__).resolve().parents[1]

CLIENTS = (1, 8, 64)
NETWORKS = {"MLP": "mnist_lightning.models.nets.MLP", "ConvNet": "mnist_lightning.models.nets.ConvNet"}


def train_checkpoint(net: str, data_dir: str, train_batches: int, folder: Path) -> str:
    """A short ``fit`` of ``net`` on the real data; the path of its best checkpoint."""
    result = subprocess.run(
        [
            sys.executable, "-m", "mnist_lightning", "fit", "--config", str(REPO / "configs/default.yaml"),
            f"--model.net.class_path={net}", f"--data.data_dir={data_dir}", "--trainer.max_epochs=1",
            f"--trainer.limit_train_batches={train_batches}", "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={folder}", f"--trainer.default_root_dir={folder}",
        ],
        cwd=folder, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return str(folder / re.search(r"Best checkpoint: (\S+)", result.stdout).group(1))


def test_pictures(data_dir: str, count: int) -> tuple[list[bytes], list[int]]:
    """The first ``count`` MNIST test digits as request bodies (112x112 dark-on-light PNGs) and labels."""
    images, labels = load_split(data_dir, train=False)
    bodies = []
    for image in images[:count].numpy():
        picture = ImageOps.invert(Image.fromarray(image)).resize((112, 112), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        bodies.append(json.dumps({"image": base64.b64encode(buffer.getvalue()).decode()}).encode())
    return bodies, labels[:count].tolist()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(ckpt_path: str, port: int, deadline_s: float = 300) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "mnist_lightning", "serve", "--ckpt_path", ckpt_path, "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"serve exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        time.sleep(0.2)
    server.kill()
    raise SystemExit(f"serve was not ready after {deadline_s:.0f} s")


def run_clients(port: int, bodies: list[bytes], labels: list[int], clients: int, requests: int) -> dict:
    """``clients`` threads send ``requests`` requests in all; latencies, throughput, errors and accuracy."""
    latencies: list[float] = []
    correct = errors = 0
    lock = threading.Lock()
    counter = iter(range(requests))

    def client() -> None:
        nonlocal correct, errors
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for index in counter:  # shared: each request index is taken by exactly one thread
            body = bodies[index % len(bodies)]
            start = time.perf_counter()
            connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = json.loads(response.read())
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if response.status != 200:
                    errors += 1
                elif answer["prediction"] == labels[index % len(labels)]:
                    correct += 1
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    milliseconds = np.array(latencies) * 1000
    return {
        "requests_per_s": requests / wall,
        "p50_ms": float(np.percentile(milliseconds, 50)),
        "p99_ms": float(np.percentile(milliseconds, 99)),
        "errors": errors,
        "accuracy": correct / requests,
    }


def markdown_table(rows: list[tuple[str, int, int, dict]]) -> str:
    lines = [
        "| network | concurrent clients | requests | requests/s | p50 latency (ms) | p99 latency (ms) "
        "| errors | correct |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for network, clients, requests, result in rows:
        lines.append(
            f"| {network} | {clients} | {requests} | {result['requests_per_s']:.0f} | {result['p50_ms']:.1f} "
            f"| {result['p99_ms']:.1f} | {result['errors']} | {result['accuracy']:.1%} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=os.environ.get("MNIST_DATA_DIR", "data"))
    parser.add_argument("--mlp_ckpt", help="checkpoint of an MLP (trained here when left out)")
    parser.add_argument("--cnn_ckpt", help="checkpoint of a ConvNet (trained here when left out)")
    parser.add_argument("--train_batches", type=int, default=300, help="training batches of the checkpoints")
    parser.add_argument("--requests", type=int, default=600, help="requests per measurement (after warm-up)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "SERVE.md"))
    options = parser.parse_args()

    bodies, labels = test_pictures(options.data_dir, 500)
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        given = {"MLP": options.mlp_ckpt, "ConvNet": options.cnn_ckpt}
        for network, net in NETWORKS.items():
            ckpt_path = given[network] or train_checkpoint(
                net, os.path.abspath(options.data_dir), options.train_batches, Path(scratch)
            )
            port = free_port()
            server = start_server(ckpt_path, port)
            try:
                run_clients(port, bodies, labels, clients=8, requests=100)  # warm-up
                for clients in CLIENTS:
                    result = run_clients(port, bodies, labels, clients, options.requests)
                    rows.append((network, clients, options.requests, result))
                    print(markdown_table(rows[-1:]).splitlines()[-1], flush=True)
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=60)

    table = markdown_table(rows)
    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    header = (
        "# Serving benchmark\n\n"
        f"`python benchmarks/serve.py`: `serve` with its defaults (LitServe, one inference worker, "
        f"batches of up to 32 requests, 5 ms batch timeout), {options.requests} requests per row after a "
        f"warm-up, each a 112x112 PNG of an MNIST test digit; clients are threads on the same machine, one "
        f"keep-alive connection each. Machine: {os.cpu_count()} CPU cores shared with other work, "
        f"{platform.machine()}, Python {platform.python_version()}, OMP_NUM_THREADS={threads}.\n\n"
    )
    Path(options.output).write_text(header + table + "\n")
    print(f"\n{table}\n\nwritten to {options.output}")


if __name__ == "__main__":
    main()
