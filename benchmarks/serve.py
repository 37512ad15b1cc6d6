"""Throughput and latency of ``python -m mnist_lightning serve`` under load from ``wrk``, beside a baseline.

Servers of the same model, one after the other, each started pinned to the same CPU cores (``taskset``):

- (a) ``serve --ckpt_path CKPT`` (LitServe, the checkpoint run by torch);
- (b) ``serve --model model.onnx`` (LitServe, the checkpoint exported to ONNX, run by onnxruntime);
- (c) ``benchmarks/baseline_server.py model.onnx``: what a user might write instead, one FastAPI + uvicorn
  process running the same ONNX file with onnxruntime, the same image preparation, no batching;
- (d) the same with onnxruntime on one thread (``--threads 1``), the baseline tuned as ``serve`` is.

Each server first answers a sample of test digits one by one, checked against the model run in this process
on the same prepared digits; then ``wrk`` (the Debian package ``wrk``) loads it: a warm-up, then 1, 8 and 64
keep-alive connections for ``--duration`` seconds each, POSTing JSON bodies in turn, each a 112x112
dark-on-light PNG of a real MNIST test digit (``post_bodies.lua``). Requests/s, the p50/p90/p99 latency and
the errors (sockets, timeouts, non-2xx answers) of each, with each server's requests/s as a ratio to (c)'s;
the CPU time each kind of process used per request; the memory (RSS) of the server's processes after the
warm-up and at the end: markdown tables in ``benchmarks/SERVE.md``. ``wrk`` runs on the same machine, so it
competes with the servers for the cores.

Without ``--ckpt_path`` it first trains a small checkpoint on the real data (one epoch limited to
``--train_batches`` batches, the default recipe's network unless ``--net``).

    python benchmarks/serve.py --data_dir /path/to/datasets
    python benchmarks/serve.py --ckpt_path CKPT --servers a b --serve_args="--max_batch_size 16"
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
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from process_stats import (  # benchmarks/process_stats.py, beside this script
    children_cpu,
    cpu_pressure_seconds,
    cpu_seconds,
    process_tree,
    pss_mb,
    rss_mb,
    runqueue_waits,
    waited_seconds,
)
from serve_report import SERVERS, Measured, checks_and_memory, cpu_table, markdown_table

from mnist_lightning.callbacks.fingerprints import cpu_model
from mnist_lightning.data.datasets import load_split
from mnist_lightning.data.digits import prepare_digit

REPO = Path(__file__).resolve().parents[1]
LUA_SCRIPT = REPO / "benchmarks" / "post_bodies.lua"
# what says a server is ready to answer: serve's model loaded and warmed up; the baselines' process up
READY_PATHS = {"a": "/readyz", "b": "/readyz"}
MEMORY_HEADER = (
    "Answers and memory: RSS, the resident memory of all the server's processes added up (a page shared by "
    "forked processes counts in each); PSS, each shared page divided among the processes that share it; "
    "start to ready, from starting the command to its first answer on its ready path (`serve`: "
    f"{READY_PATHS['b']}; the baselines: /health).\n\n"
)
CONNECTIONS = (1, 8, 64)
SAMPLE = 100  # digits each server answers one by one before the load, checked
ATTACK_SECTION = "## Under attack"  # benchmarks/serve_attack.py's part of SERVE.md, kept when it is rewritten
NETWORKS = {"MLP": "mnist_lightning.models.nets.MLP", "ConvNet": "mnist_lightning.models.nets.ConvNet"}


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(
            "error: this benchmark drives the servers with wrk, which is not installed. Install the Debian "
            "package 'wrk' (sudo apt-get install wrk), or put a wrk binary on the PATH."
        )
    return path


def train_checkpoint(net: str, data_dir: str, train_batches: int, folder: Path) -> str:
    """A short ``fit`` of ``net`` on the real data; the path of its best checkpoint."""
    result = subprocess.run(
        [
            sys.executable, "-m", "mnist_lightning", "fit", f"--model.net.class_path={net}",
            f"--data.data_dir={data_dir}", "--trainer.max_epochs=1",
            f"--trainer.limit_train_batches={train_batches}", "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={folder}", f"--trainer.default_root_dir={folder}",
        ],
        cwd=folder, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return str(folder / re.search(r"Best checkpoint: (\S+)", result.stdout).group(1))


def export_onnx(ckpt_path: str, data_dir: str, folder: Path) -> str:
    output = folder / "model.onnx"
    subprocess.run(
        [
            sys.executable, "-m", "mnist_lightning", "export", "--ckpt_path", ckpt_path,
            "--output", str(output), f"--data.data_dir={data_dir}", "--overwrite",
        ],
        cwd=folder, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return str(output)


def test_pictures(data_dir: str, count: int) -> tuple[list[bytes], list[int]]:
    """The first ``count`` MNIST test digits as JSON request bodies (112x112 dark-on-light PNGs), and their
    labels."""
    images, labels = load_split(data_dir, train=False)
    bodies = []
    for image in images[:count].numpy():
        picture = ImageOps.invert(Image.fromarray(image)).resize((112, 112), Image.Resampling.BILINEAR)
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        bodies.append(json.dumps({"image": base64.b64encode(buffer.getvalue()).decode()}).encode())
    return bodies, labels[:count].tolist()


def local_predictions(onnx_path: str, bodies: list[bytes]) -> np.ndarray:
    """What the ONNX file answers for the bodies' pictures, prepared as the servers prepare them."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    digits = [
        prepare_digit(Image.open(io.BytesIO(base64.b64decode(json.loads(body)["image"])))) for body in bodies
    ]
    images = (np.stack(digits)[:, None] / np.float32(255)).astype(np.float32)
    return session.run(None, {"images": images})[0]


class Server:
    """A server process started with ``taskset -c CPUS``; stopped with SIGTERM (its processes with it)."""

    def __init__(
        self, command: list[str], port: int, cpus: str, ready_path: str = "/health", deadline_s: float = 300
    ) -> None:
        self.port = port
        started = time.monotonic()
        self.process = subprocess.Popen(
            ["taskset", "-c", cpus, *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"{shlex.join(command)} exited with status {self.process.returncode}:\n"
                    f"{self.process.stderr.read()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{ready_path}", timeout=2) as response:
                    if response.status == 200:
                        self.ready_s = time.monotonic() - started
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise SystemExit(f"{shlex.join(command)} was not ready after {deadline_s:.0f} s")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            for pid in reversed(process_tree(self.process.pid)):
                os.kill(pid, signal.SIGKILL)
            self.process.wait()


def check_answers(port: int, bodies: list[bytes], labels: list[int], expected: np.ndarray) -> dict:
    """Send the bodies one by one: how many answers match the local model and the labels."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    agree = correct = 0
    largest = 0.0
    for body, label, probabilities in zip(bodies, labels, expected, strict=True):
        connection.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read())
        if response.status != 200:
            raise SystemExit(f"a sample request got {response.status}: {answer}")
        agree += answer["prediction"] == int(probabilities.argmax())
        correct += answer["prediction"] == label
        largest = max(largest, float(np.abs(np.array(answer["probabilities"]) - probabilities).max()))
    connection.close()
    return {"agree": agree, "correct": correct, "count": len(bodies), "max_difference": largest}


def run_wrk(wrk: str, port: int, bodies_path: Path, connections: int, threads: int, seconds: float) -> dict:
    """One ``wrk`` run; its results (the JSON line ``post_bodies.lua`` prints at the end)."""
    command = [
        wrk, f"-t{min(threads, connections)}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
        "-s", str(LUA_SCRIPT), f"http://127.0.0.1:{port}", "--", str(bodies_path),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next(line for line in result.stdout.splitlines() if line.startswith('{"requests"'))
    figures = json.loads(line)
    errors = sum(figures[key] for key in figures if key.endswith("_errors") or key == "timeouts")
    return {
        "connections": connections,
        "requests": figures["requests"],
        "requests_per_s": figures["requests"] / (figures["duration_us"] / 1e6),
        "p50_ms": figures["p50_us"] / 1000,
        "p90_ms": figures["p90_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
        "errors": errors,
    }


def measure(key: str, command: list[str], options, bodies, labels, expected, bodies_path, wrk) -> Measured:
    port = 18000 + ord(key)
    print(f"{SERVERS[key]}: {shlex.join(command)}", flush=True)
    server = Server(command, port, options.cpus, ready_path=READY_PATHS.get(key, "/health"))
    measured = Measured(SERVERS[key], ready_s=server.ready_s)
    try:
        measured.check = check_answers(port, bodies[:SAMPLE], labels[:SAMPLE], expected[:SAMPLE])
        warm = run_wrk(wrk, port, bodies_path, 64, options.threads, options.warmup)
        measured.rss_start_mb, measured.pss_start_mb = rss_mb(server.process.pid), pss_mb(server.process.pid)
        served = 0
        for connections in options.connections:
            before, wrk_before = cpu_seconds(server.process.pid), children_cpu()
            waits, pressure = runqueue_waits(server.process.pid), cpu_pressure_seconds()
            row = run_wrk(wrk, port, bodies_path, connections, options.threads, options.duration)
            after, wrk_used = cpu_seconds(server.process.pid), children_cpu() - wrk_before
            waited = waited_seconds(waits, runqueue_waits(server.process.pid))
            row["waited_ms"] = 1000 * waited / row["requests"]
            row["pressure"] = (cpu_pressure_seconds() - pressure) / options.duration
            row["load"] = os.getloadavg()[0]
            row["cpu_ms"] = {
                role: 1000 * (after[role] - before.get(role, 0.0)) / max(row["requests"], 1) for role in after
            }
            row["cpu_ms"]["wrk"] = 1000 * wrk_used / max(row["requests"], 1)
            measured.rows.append(row)
            served += row["requests"]
            print(
                f"  {connections:>3} connections: {row['requests_per_s']:7.0f} requests/s, p50 "
                f"{row['p50_ms']:.1f} ms, p90 {row['p90_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, "
                f"{row['errors']} errors; load {row['load']:.1f}, CPU pressure {row['pressure']:.0%}, waited "
                f"for a core {row['waited_ms']:.2f} ms/request; CPU ms per request: "
                + ", ".join(f"{role} {ms:.2f}" for role, ms in row["cpu_ms"].items() if ms >= 0.005),
                flush=True,
            )
        while served < options.soak:  # more requests before the memory is measured again
            soaked = run_wrk(wrk, port, bodies_path, 64, options.threads, options.duration)
            served += soaked["requests"]
            measured.rows.append({**soaked, "soak": True})
        measured.requests_between = served
        measured.rss_end_mb = rss_mb(server.process.pid)
        print(
            f"  warm-up {warm['requests_per_s']:.0f} requests/s; sample: {measured.check['agree']}/"
            f"{measured.check['count']} as the local model; RSS {measured.rss_start_mb:.0f} -> "
            f"{measured.rss_end_mb:.0f} MB over {served:,} requests",
            flush=True,
        )
    finally:
        server.stop()
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=os.environ.get("MNIST_DATA_DIR", "data"))
    parser.add_argument("--ckpt_path", help="the checkpoint to serve (trained here when left out)")
    parser.add_argument("--net", choices=NETWORKS, default="MLP", help="network of the checkpoint trained")
    parser.add_argument("--train_batches", type=int, default=300, help="training batches of that checkpoint")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--serve_args", default="", help="options added to both 'serve' commands")
    parser.add_argument(
        "--baseline_args", default="", help="options added to (c)'s command, e.g. --threads 1"
    )
    parser.add_argument("--connections", nargs="+", type=int, default=list(CONNECTIONS))
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of each measurement")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of the warm-up (64 connections)")
    parser.add_argument("--soak", type=int, default=0, help="load each server with this many requests in all "
                        "(64 connections) before its memory is measured again")  # fmt: skip
    parser.add_argument("--cpus", default=f"0-{os.cpu_count() - 1}", help="cores of every server (taskset)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "SERVE.md"))
    options = parser.parse_args()
    wrk = require_wrk()

    load_before = os.getloadavg()
    bodies, labels = test_pictures(options.data_dir, 500)
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        data_dir = os.path.abspath(options.data_dir)
        ckpt_path = options.ckpt_path or train_checkpoint(
            NETWORKS[options.net], data_dir, options.train_batches, folder
        )
        onnx_path = export_onnx(os.path.abspath(ckpt_path), data_dir, folder)
        expected = local_predictions(onnx_path, bodies)
        bodies_path = folder / "bodies.jsonl"
        bodies_path.write_bytes(b"\n".join(bodies) + b"\n")
        serve = [sys.executable, "-m", "mnist_lightning", "serve", *shlex.split(options.serve_args)]
        commands = {
            "a": [*serve, "--ckpt_path", ckpt_path],
            "b": [*serve, "--model", onnx_path],
            "c": [
                sys.executable,
                str(REPO / "benchmarks" / "baseline_server.py"),
                onnx_path,
                *shlex.split(options.baseline_args),
            ],
            "d": [
                sys.executable,
                str(REPO / "benchmarks" / "baseline_server.py"),
                onnx_path,
                "--threads",
                "1",
            ],
        }
        for key in options.servers:
            port_args = ["--port", str(18000 + ord(key))]
            results.append(
                measure(key, commands[key] + port_args, options, bodies, labels, expected, bodies_path, wrk)
            )
    load_after = os.getloadavg()

    table, cpu, checks = markdown_table(results), cpu_table(results), checks_and_memory(results)
    serve_args = f" `{options.serve_args}`" if options.serve_args else " (its defaults)"
    baseline_args = f" `{options.baseline_args}`" if options.baseline_args else ""
    network = f"`{options.ckpt_path}`" if options.ckpt_path else f"the {options.net} of a short fit"
    header = (
        "# Serving benchmark\n\n"
        f"`python benchmarks/serve.py`, {time.strftime('%Y-%m-%d')}: `serve`{serve_args} beside (c), "
        f"`benchmarks/baseline_server.py`{baseline_args} (one FastAPI + uvicorn process running the same "
        "ONNX file with onnxruntime, the same image preparation, no batching), each pinned to cores "
        f"{options.cpus} (`taskset`), serving {network}. Load from `wrk` ({options.threads} threads, on the "
        f"same machine) POSTing 112x112 PNGs of 500 MNIST test digits in turn; a {options.warmup:g} s "
        f"warm-up at 64 connections, then {options.duration:g} s per row. Errors: socket errors, timeouts "
        "(10 s) and non-2xx answers.\n\n"
        f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.machine()}, Python "
        f"{platform.python_version()}, litserve {version('litserve')}, onnxruntime {version('onnxruntime')}, "
        f"torch {version('torch')}; load average before the run {load_before[0]:.2f}, {load_before[1]:.2f}, "
        f"{load_before[2]:.2f} (1, 5, 15 min), after it {load_after[0]:.2f}.\n\n"
    )
    cpu_header = (
        "CPU time per request (ms), by kind of process: `http` the HTTP processes (uvicorn: parsing, image "
        "decoding and preparation; all of (c)), `worker` LitServe's inference workers, `manager` the "
        "multiprocessing Manager holding LitServe's queues, `main` the process started (LitServe's: it "
        "waits), `wrk` the load generator; `waited for a core`: the time the server's threads "
        "spent runnable but not running, per request (`/proc/<pid>/task/*/schedstat`); `CPU pressure`: the "
        "share of the row's time during which some task on the machine waited for a core "
        "(`/proc/pressure/cpu`, `some`); `load`: the 1-minute load average at the end of the row.\n\n"
    )
    output = Path(options.output)
    attack = output.read_text().partition(ATTACK_SECTION)[1:] if output.exists() else ("", "")
    output.write_text(
        header + table + "\n\n" + cpu_header + cpu + "\n\n" + MEMORY_HEADER + checks + "\n"
        + (f"\n{''.join(attack)}" if attack[0] else "")
    )  # fmt: skip
    print(f"\n{table}\n\n{cpu}\n\n{checks}\n\nwritten to {options.output}")


if __name__ == "__main__":
    main()
