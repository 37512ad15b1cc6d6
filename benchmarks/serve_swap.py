"""A model swap under load: ``serve --model_dir`` loaded by ``wrk`` while a new model file is dropped in.

One server (``serve --model_dir DIR``, pinned to ``--cpus``) starts with ``--old`` in DIR. ``wrk`` loads it
twice with ``--connections`` keep-alive connections for ``--duration`` seconds, POSTing 112x112 PNGs of real
MNIST test digits (``post_bodies.lua``, as ``benchmarks/serve.py``): first as is, then with ``--new`` dropped
into DIR (written beside it, then renamed) ``--swap_at`` seconds into the run. For each run: requests/s,
p50 and p99 latency, and the failed requests (non-2xx answers, socket errors, timeouts); then the versions
``/metrics`` says the worker serves, the model files it loaded or refused, and the version of an answer after.

    python benchmarks/serve_swap.py --old old.onnx --new new.onnx --data_dir /path/to/datasets
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from serve import Server, require_wrk, run_wrk, test_pictures  # benchmarks/serve.py, beside this script

from mnist_lightning.callbacks.fingerprints import cpu_model
from mnist_lightning.tools.serve.model_versions import version_of


def drop(source: Path, folder: Path) -> None:
    """``source`` into ``folder`` under its own name, whole at once (written beside it, then renamed)."""
    partial = folder / f".{source.name}.partial"
    shutil.copyfile(source, partial)
    os.replace(partial, folder / source.name)


def model_metrics(port: int) -> list[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return [line for line in text.splitlines() if line.startswith(("mnist_model_info", "mnist_model_loads"))]


def answer_version(port: int, body: bytes) -> str:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/predict", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["model_version"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="the model file served first (.onnx or .pt2)")
    parser.add_argument("--new", required=True, help="the model file dropped in during the load")
    parser.add_argument("--data_dir", default=os.environ.get("MNIST_DATA_DIR", "data"))
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of each wrk run")
    parser.add_argument("--swap_at", type=float, default=8.0, help="seconds into the second run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--cpus", default="0-1", help="the cores the server is pinned to (taskset)")
    parser.add_argument("--port", type=int, default=18765)
    options = parser.parse_args()
    old, new = Path(options.old), Path(options.new)
    if old.name == new.name:
        raise SystemExit("error: --old and --new must have different file names (both go into one folder)")
    wrk = require_wrk()
    bodies, _ = test_pictures(options.data_dir, 500)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "models"
        folder.mkdir()
        shutil.copyfile(old, folder / old.name)
        bodies_path = Path(scratch) / "bodies.jsonl"
        bodies_path.write_bytes(b"\n".join(bodies) + b"\n")
        command = [sys.executable, "-m", "mnist_lightning", "serve", "--model_dir", str(folder)]
        server = Server([*command, "--port", str(options.port)], options.port, options.cpus)
        try:
            run_wrk(wrk, options.port, bodies_path, options.connections, options.threads, 3)  # warm-up
            rows = {"no swap": run_wrk(wrk, options.port, bodies_path, options.connections, options.threads,
                                       options.duration)}  # fmt: skip
            swap = threading.Timer(options.swap_at, drop, (new, folder))
            swap.start()
            rows["swap"] = run_wrk(
                wrk, options.port, bodies_path, options.connections, options.threads, options.duration
            )
            swap.join()
            time.sleep(1)  # the answers of the last requests in flight
            after = answer_version(options.port, bodies[0])
            metrics = model_metrics(options.port)
        finally:
            server.stop()
    print(
        f"{time.strftime('%Y-%m-%d')}, {cpu_model()}, server on cores {options.cpus}, wrk on the same machine"
    )
    print(
        f"serve --model_dir: {version_of(old)} first, {version_of(new)} dropped in at {options.swap_at:g} s"
    )
    print("| run | requests | requests/s | p50 | p99 | failed (non-2xx, socket errors, timeouts) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['requests']:,} | {row['requests_per_s']:,.0f} | {row['p50_ms']:.1f} ms | "
            f"{row['p99_ms']:.1f} ms | {row['errors']} |"
        )
    print(f"answer after the run: {after}")
    print("\n".join(metrics))


if __name__ == "__main__":
    main()
