"""How fast the command line starts: whole processes, side by side, against ``python -c "import lightning"``.

    python benchmarks/startup.py [--rounds 5]

Each round runs every command once, in turn (so a change in the machine's load touches them all alike);
a command's time is its median over the rounds and its ratio is that median over the floor's. A round
whose floor took more than twice the fastest floor is thrown away and run again: the machine was busy.
``runs`` lists a folder of 50 made-up runs that this script writes.

Targets: ``--help`` and ``fit --help`` within 1.15 x the floor (``fit --help`` builds the parser, which
needs Lightning); ``runs`` faster than the floor itself (it needs neither torch nor Lightning);
``sweep --help``, ``export --help``, ``serve --help`` within 1.3 x; ``upgrade --help`` faster than the floor
(torch is imported only to read a checkpoint).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]  # the commands run here: this checkout's code
FLOOR = "python -c 'import lightning'"

# label, arguments after `python`, target ratio to the floor, strict (<) or not (<=)
COMMANDS = [
    (FLOOR, ["-c", "import lightning"], None, False),
    ("--help", ["-m", "mnist_lightning", "--help"], 1.15, False),
    ("fit --help", ["-m", "mnist_lightning", "fit", "--help"], 1.15, False),
    ("runs (50 runs)", ["-m", "mnist_lightning", "runs", "{runs}"], 1.0, True),
    ("sweep --help", ["-m", "mnist_lightning", "sweep", "--help"], 1.3, False),
    ("export --help", ["-m", "mnist_lightning", "export", "--help"], 1.3, False),
    ("serve --help", ["-m", "mnist_lightning", "serve", "--help"], 1.3, False),
    ("upgrade --help", ["-m", "mnist_lightning", "upgrade", "--help"], 1.0, True),
]


def write_fake_runs(folder: Path, count: int = 50) -> Path:
    """``count`` finished runs as ``fit`` and ``test`` leave them: config, hparams, checkpoints, metrics."""
    config = (REPO / "configs" / "default.yaml").read_text()
    for index in range(count):
        run = folder / f"version_{index}"
        (run / "checkpoints").mkdir(parents=True)
        lr = 10 ** (-4 + 2 * index / count)
        (run / "config.yaml").write_text(config.replace("lr: 0.001", f"lr: {lr:.6f}"))
        (run / "hparams.yaml").write_text(
            f"optimizer:\n  class_path: torch.optim.Adam\n  init_args:\n    lr: {lr}\n"
        )
        epoch, val_acc = index % 20, 0.9 + index / 1000
        (run / "checkpoints" / f"epoch={epoch}-val_acc={val_acc:.4f}.ckpt").write_bytes(b"")
        (run / "checkpoints" / "last.ckpt").write_bytes(b"")
        if index % 5 == 0:
            (run / "metrics.json").write_text(f'{{"test_acc": {val_acc - 0.002}, "test_loss": 0.1}}\n')
    return folder


def time_once(arguments: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *arguments], cwd=REPO, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(
            f"`python {' '.join(arguments)}` failed ({result.returncode}):\n{result.stderr[-2000:]}"
        )
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--max-retries", type=int, default=10, help="busy rounds run again at most this often"
    )
    options = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="startup-"))
    try:
        runs = write_fake_runs(work / "lightning_logs")
        commands = [
            (label, [arg.format(runs=runs) for arg in arguments], target, strict)
            for label, arguments, target, strict in COMMANDS
        ]

        for _, arguments, _, _ in commands:  # warm the file cache and the bytecode once, untimed
            time_once(arguments)
        rounds: list[dict[str, float]] = []
        retries = 0
        while len(rounds) < options.rounds:
            times = {label: time_once(arguments) for label, arguments, _, _ in commands}
            floors = [r[FLOOR] for r in rounds] + [times[FLOOR]]
            if times[FLOOR] > 2 * min(floors) and retries < options.max_retries:
                retries += 1
                print(f"round thrown away: the floor took {times[FLOOR]:.2f} s (fastest {min(floors):.2f} s)")
                continue
            rounds.append(times)
            # a round that makes an earlier one implausible (its floor now > 2x the fastest) replaces it
            fastest = min(r[FLOOR] for r in rounds)
            busy = [r for r in rounds if r[FLOOR] > 2 * fastest]
            if busy and retries < options.max_retries:
                retries += len(busy)
                rounds = [r for r in rounds if r not in busy]
                print(f"{len(busy)} earlier round(s) thrown away: their floor was over 2x the fastest")
            print(f"round {len(rounds)}: " + ", ".join(f"{label} {t:.2f}s" for label, t in times.items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    floor = statistics.median(r[FLOOR] for r in rounds)
    print()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; medians of {len(rounds)} interleaved rounds "
        f"({retries} busy rounds redone)"
    )
    print()
    print("| command | median (s) | min (s) | x floor | target | met |")
    print("| --- | ---: | ---: | ---: | --- | --- |")
    for label, _, target, strict in commands:
        times = [r[label] for r in rounds]
        ratio = statistics.median(times) / floor
        if target is None:
            goal, met = "-", "-"
        else:
            goal = f"{'<' if strict else '<='} {target:g} x"
            met = "yes" if (ratio < target if strict else ratio <= target) else "NO"
        print(
            f"| `{label}` | {statistics.median(times):.2f} | {min(times):.2f} | {ratio:.2f} | {goal} "
            f"| {met} |"
        )


if __name__ == "__main__":
    main()
