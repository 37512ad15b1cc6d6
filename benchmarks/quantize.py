"""The int8 export beside the float one: test accuracy, agreement, file size, single-image latency.

    python benchmarks/quantize.py --data_dir /path/to/datasets [--runs 3]

For each recipe (the default MLP for 3 epochs, the ConvNet preset for 1): ``fit`` in a temporary folder,
``export`` of the best checkpoint as a float ONNX file and with ``--quantize int8`` (each through the command
line, whose checks must pass), then both files measured here, ``--runs`` times, on the 10,000 test images:
accuracy, agreement, sizes, and the median single-image latency of 2,000 runs with onnxruntime on one thread
(the files taking turns). Prints a Markdown table and writes ``benchmarks/QUANTIZE.md``; the targets are
those of the int8 export: accuracy within 0.2 points, file <= 0.35x, latency <= the float file's.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mnist_lightning.callbacks.fingerprints import cpu_model
from mnist_lightning.data.datasets import load_split
from mnist_lightning.tools.quantize import check_quantized

REPO = Path(__file__).resolve().parents[1]
RECIPES = {
    "MLP (default recipe, 3 epochs)": ["--trainer.max_epochs=3"],
    "ConvNet (configs/cnn.yaml, 1 epoch)": [
        "--config",
        str(REPO / "configs" / "cnn.yaml"),
        "--trainer.max_epochs=1",
    ],
}
LATENCY_RUNS = 2000


def cli(*args: str, cwd: Path) -> str:
    command = [sys.executable, "-m", "mnist_lightning", *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return result.stdout


def measure(recipe: list[str], data_dir: str, folder: Path, runs: int) -> list:
    """Train, export both files through the command line, then measure them ``runs`` times."""
    fit = cli(
        "fit", *recipe, f"--data.data_dir={data_dir}", "--trainer.enable_progress_bar=false", cwd=folder
    )
    checkpoint = folder / re.search(r"Best checkpoint: (\S+)", fit).group(1)
    float_file, int8_file = folder / "model.onnx", folder / "model-int8.onnx"
    cli(
        "export",
        "--ckpt_path",
        str(checkpoint),
        "--output",
        str(float_file),
        "--data.data_dir",
        data_dir,
        cwd=folder,
    )
    exported = cli(
        "export", "--ckpt_path", str(checkpoint), "--output", str(int8_file), "--data.data_dir", data_dir,
        "--quantize", "int8", cwd=folder,
    )  # fmt: skip
    calibrated = int(re.search(r"calibrated on (\d+) training images", exported).group(1))
    images, labels = load_split(data_dir, train=False)
    pixels = (images.unsqueeze(1).float() / 255).numpy()
    return [check_quantized(float_file, int8_file, pixels, labels.numpy(), calibrated) for _ in range(runs)]


def microseconds(milliseconds: list[float]) -> str:
    return f"{min(milliseconds) * 1000:.0f}-{max(milliseconds) * 1000:.0f} us"


def table(results: dict[str, list]) -> str:
    lines = [
        "| model | float accuracy | int8 accuracy | drop (points) | same prediction | float file | int8 file "
        "| size ratio | float latency | int8 latency | latency ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, checks in results.items():
        first = checks[0]
        float_ms = [check.float_latency_ms for check in checks]
        int8_ms = [check.int8_latency_ms for check in checks]
        ratios = [i / f for i, f in zip(int8_ms, float_ms, strict=True)]
        lines.append(
            f"| {name} | {first.float_accuracy:.2%} | {first.int8_accuracy:.2%} | "
            f"{first.accuracy_drop * 100:+.2f} | {first.same_predictions:,}/{first.images:,} | "
            f"{first.float_bytes / 1000:.1f} kB | {first.int8_bytes / 1000:.1f} kB | "
            f"{first.int8_bytes / first.float_bytes:.2f}x | {microseconds(float_ms)} | "
            f"{microseconds(int8_ms)} | {min(ratios):.2f}-{max(ratios):.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True, help="folder holding MNIST/raw/")
    parser.add_argument("--runs", type=int, default=3, help="measurements of each pair of files")
    options = parser.parse_args()
    import mnist_lightning.tools.quantize as quantize

    quantize.LATENCY_RUNS = LATENCY_RUNS
    results = {}
    for name, recipe in RECIPES.items():
        with tempfile.TemporaryDirectory() as folder:
            results[name] = measure(recipe, options.data_dir, Path(folder), options.runs)
            print(f"{name}: done", file=sys.stderr)
    text = (
        f"# int8 export\n\n`python benchmarks/quantize.py`, {time.strftime('%Y-%m-%d')}. Each model trained "
        "once (seed 42) and exported twice (`export`, `export --quantize int8`); both files measured "
        f"{options.runs} times on the 10,000 MNIST test images. Latency: the median of {LATENCY_RUNS} "
        "single-image runs, onnxruntime on one thread, the two files taking turns; the range over the "
        "measurements. Accuracy, agreement and sizes do not change between measurements.\n\n"
        f"{table(results)}\n\nTargets: int8 accuracy within 0.2 points of float; file <= 0.35x; latency <= "
        f"float's (ratio <= 1.00x).\n\nMachine: {cpu_model()}, {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}, onnxruntime {__import__('onnxruntime').__version__}, shared "
        "with other work (OMP_NUM_THREADS=1).\n"
    )
    print(text)
    (REPO / "benchmarks" / "QUANTIZE.md").write_text(text)


if __name__ == "__main__":
    main()
