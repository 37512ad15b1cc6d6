"""Accuracy and time of the presets over several seeds: the README's results table.

    python benchmarks/presets.py --data_dir /path/to/datasets --seeds 1 2 3

For each preset and seed: ``fit`` (timed as a whole process, start-up included) with ``--seed_everything``
and ``--data.seed`` set to the seed, then ``test`` on the best checkpoint by validation accuracy. Prints a
Markdown table (test accuracy mean and spread, epochs, fit wall time, parameters) and writes
``benchmarks/PRESETS.md``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
BATCH_NORM_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
PRESETS = {
    "default": ["default.yaml"],
    "fast": ["default.yaml", "fast.yaml"],
    "best": ["default.yaml", "best.yaml"],
}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mnist_lightning", *args, "--trainer.enable_progress_bar=false"]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return result


def trainable_parameters(checkpoint_path: Path) -> int:
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=True)["state_dict"]
    return sum(
        tensor.numel()
        for name, tensor in state.items()
        if name.startswith("net.") and not name.endswith(BATCH_NORM_BUFFERS)
    )


def run(preset: str, seed: int, data_dir: str, workdir: Path) -> dict:
    configs = [arg for config in PRESETS[preset] for arg in ("--config", str(REPO / "configs" / config))]
    common = [*configs, f"--data.data_dir={data_dir}", f"--seed_everything={seed}", f"--data.seed={seed}"]
    start = time.perf_counter()
    fitted = cli("fit", *common, cwd=workdir)
    wall = time.perf_counter() - start
    best = workdir / re.search(r"Best checkpoint: (\S+)", fitted.stdout).group(1)
    tested = cli("test", *common, f"--ckpt_path={best}", cwd=workdir)
    metrics_path = workdir / re.search(r"Test metrics written to (\S+)", tested.stdout).group(1)
    test_acc = json.loads(metrics_path.read_text())["test_acc"]
    epochs = torch.load(best.parent / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] + 1
    return {"test_acc": test_acc, "wall": wall, "epochs": epochs, "params": trainable_parameters(best)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "PRESETS.md"))
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())

    lines = [
        "| preset | test accuracy (mean ± sd) | per seed | epochs | fit wall time (median) | parameters |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        for preset in args.presets:
            runs = [run(preset, seed, data_dir, Path(scratch)) for seed in args.seeds]
            print(preset, json.dumps(runs), flush=True)
            accuracies = [100 * r["test_acc"] for r in runs]
            spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
            lines.append(
                f"| {preset} | {statistics.mean(accuracies):.2f}% ± {spread:.2f} | "
                f"{', '.join(f'{a:.2f}' for a in accuracies)} | {runs[0]['epochs']} | "
                f"{statistics.median(r['wall'] for r in runs):.0f} s | {runs[0]['params']:,} |"
            )
    seeds = " ".join(map(str, args.seeds))
    table = "\n".join(lines) + f"\n\nSeeds {seeds}: `python benchmarks/presets.py --seeds {seeds}`.\n"
    Path(args.output).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
