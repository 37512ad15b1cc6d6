"""Side-by-side speed benchmark: plain PyTorch vs this project, in one run on one machine.

    python benchmarks/run.py --data_dir /path/to/datasets

Measures, interleaved over ``--rounds`` rounds (medians are reported; a ratio is the median of the rounds' own
ratios, each comparing runs taken minutes apart, which a shared machine's drifting load affects least):
  (a) the seed recipe as plain PyTorch with the torchvision DataLoader, batch 64;
  (b) the same loop on pre-loaded tensors (the eager floor);
  (c) ``python -m mnist_lightning fit --config configs/default.yaml``, everything on (logger, checkpoints,
      progress bar, validation every epoch), then ``test`` on its best checkpoint;
  (d) the fast preset (``--config configs/default.yaml --config configs/fast.yaml``), then ``test``.
Seconds per epoch exclude process start-up: for (a) and (b) the loop is timed inside the script, for (c)
they are the intervals between the epoch-end events in the run's TensorBoard log (training, validation and
checkpointing included). Peak RSS is the largest resident set of the process.
Writes ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEAK_RSS = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
    "sys.exit(code)"
)


def run(command: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a command under a wrapper that reports its peak RSS; returns (result, wall seconds, peak MB)."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *command], cwd=cwd, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    peak_kb = int(re.search(r"PEAK_RSS_KB (\d+)", result.stderr).group(1))
    return result, wall, peak_kb / 1024


def plain(data_dir: str, loader: str, epochs: int) -> dict:
    command = [sys.executable, str(REPO / "benchmarks" / "plain_pytorch.py"), f"--data_dir={data_dir}"]
    result, _, peak_mb = run([*command, f"--loader={loader}", f"--epochs={epochs}"], REPO)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return {
        "epoch_s": statistics.median(figures["epoch_seconds"]),
        "test_acc": figures["test_acc"],
        "rss_mb": peak_mb,
    }


def epoch_intervals(log_dir: Path) -> list[float]:
    """Seconds between consecutive epoch-end events (train_loss is logged once per epoch)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    times = [event.wall_time for event in events.Scalars("train_loss")]
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


def project(data_dir: str, configs: list[str], workdir: Path) -> dict:
    cli = [sys.executable, "-m", "mnist_lightning"]
    config_args = [arg for config in configs for arg in ("--config", str(REPO / "configs" / config))]
    fitted, fit_wall, peak_mb = run([*cli, "fit", *config_args, f"--data.data_dir={data_dir}"], workdir)
    best = re.search(r"Best checkpoint: (\S+)", fitted.stdout).group(1)
    log_dir = workdir / Path(best).parent.parent
    tested, _, _ = run(
        [*cli, "test", *config_args, f"--data.data_dir={data_dir}", f"--ckpt_path={best}"], workdir
    )
    metrics_path = re.search(r"Test metrics written to (\S+)", tested.stdout).group(1)
    metrics = json.loads((workdir / metrics_path).read_text())
    intervals = epoch_intervals(log_dir)
    return {
        "epoch_s": statistics.median(intervals) if intervals else float("nan"),
        "test_acc": metrics["test_acc"],
        "rss_mb": peak_mb,
        "fit_wall_s": fit_wall,
        "epochs": len(intervals) + 1,
    }


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = names[0] if names else cpu
    import torch

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default="data")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--plain_epochs", type=int, default=2)
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args()
    data_dir = str(Path(args.data_dir).resolve())

    samples: dict[str, list[dict]] = {"a": [], "b": [], "c": [], "d": []}
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            samples["a"].append(plain(data_dir, "torchvision", args.plain_epochs))
            samples["b"].append(plain(data_dir, "tensor", args.plain_epochs))
            samples["c"].append(project(data_dir, ["default.yaml"], Path(scratch)))
            samples["d"].append(project(data_dir, ["default.yaml", "fast.yaml"], Path(scratch)))
            print(f"round {round_ + 1}/{args.rounds}: " + json.dumps({k: v[-1] for k, v in samples.items()}))

    def med(key: str, field: str) -> float:
        return statistics.median(sample[field] for sample in samples[key])

    def ratios(top: str, bottom: str) -> list[float]:
        pairs = zip(samples[top], samples[bottom], strict=True)
        return [up["epoch_s"] / down["epoch_s"] for up, down in pairs]

    rounds_cb = ratios("c", "b")
    ratio_ca, ratio_cb = statistics.median(ratios("c", "a")), statistics.median(rounds_cb)
    per_round_cb = ", ".join(f"{value:.2f}" for value in rounds_cb)
    rows = [
        ("(a) plain PyTorch, torchvision DataLoader", "a"),
        ("(b) plain PyTorch, pre-loaded tensors", "b"),
        ("(c) `fit --config configs/default.yaml`", "c"),
        ("(d) fast preset `--config configs/fast.yaml`", "d"),
    ]
    lines = [
        f"Measured {datetime.date.today()} on {machine()}; medians of {args.rounds} interleaved rounds.",
        "",
        "| run | s/epoch | test acc | peak RSS (MB) | fit wall (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, key in rows:
        wall = f"{med(key, 'fit_wall_s'):.1f}" if "fit_wall_s" in samples[key][0] else "-"
        lines.append(
            f"| {label} | {med(key, 'epoch_s'):.2f} | {100 * med(key, 'test_acc'):.2f}% | "
            f"{med(key, 'rss_mb'):.0f} | {wall} |"
        )
    fast_wall, fast_acc = med("d", "fit_wall_s"), med("d", "test_acc")
    default_rss, default_acc = med("c", "rss_mb"), med("c", "test_acc")
    targets = [
        ("(c) s/epoch <= 0.40 x (a)", f"c/a = {ratio_ca:.2f}", ratio_ca <= 0.40),
        ("(c) s/epoch <= 2.0 x (b)", f"c/b = {ratio_cb:.2f} (rounds: {per_round_cb})", ratio_cb <= 2.0),
        (
            "fast preset: fit wall <= 10 s to >= 97.5% test acc",
            f"{fast_wall:.1f} s to {100 * fast_acc:.2f}%",
            fast_wall <= 10 and fast_acc >= 0.975,
        ),
        ("default fit peak RSS <= 1000 MB", f"{default_rss:.0f} MB", default_rss <= 1000),
        ("default keeps >= 97.5% test acc", f"{100 * default_acc:.2f}%", default_acc >= 0.975),
    ]
    lines += ["", "| target | measured | met |", "| --- | --- | --- |"]
    lines += [f"| {target} | {measured} | {'yes' if met else 'NO'} |" for target, measured, met in targets]
    lines += [
        "",
        "(a) and (b) train on all 60k images and time the training loop only; (c) and (d) train on 55k,",
        "validate on 5k and save checkpoints every epoch; their s/epoch covers all of that.",
        "Fit wall time includes start-up. A ratio is the median of the rounds' own ratios.",
    ]
    table = "\n".join(lines) + "\n"
    Path(args.output).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
