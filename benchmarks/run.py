"""Side-by-side speed benchmark: plain PyTorch vs this project, in one run on one machine.

    python benchmarks/run.py --data_dir /path/to/datasets     # or set MNIST_DATA_DIR; default: ./data

Measures, interleaved over ``--rounds`` rounds (medians are reported; a ratio is the median of the rounds' own
ratios, each comparing runs taken minutes apart, which a shared machine's drifting load affects least):
  (a) the seed recipe as plain PyTorch with the torchvision DataLoader, batch 64;
  (b) the same loop on pre-loaded tensors (the eager floor);
  (c) ``python -m mnist_lightning fit --config configs/default.yaml``, everything on (logger, checkpoints,
      progress bar, validation every epoch), then ``test`` on its best checkpoint;
  (d) the fast preset (``--config configs/default.yaml --config configs/fast.yaml``), then ``test``.
Seconds per epoch are whole-run figures, so a slow epoch counts in full: for (a) and (b) the training loop's
total time over its epochs (timed inside the script, without start-up); for (c) and (d) the difference
between the wall time of the E-epoch fit and of a 1-epoch fit of the same config, over E - 1 (start-up,
the first epoch's warm-up and the final messages cancel; validation and checkpointing count).
Peak RSS is the largest resident set of the process.

A round whose figures cannot be right on a machine with the CPU to itself (the plain-tensor floor (b) not
faster than (a) and (c), or one run's epochs more than ``SPREAD`` times apart) is run again, up to
``--retries`` times; a round still implausible is reported as flagged and left out of the medians, and with
fewer than half the rounds good the targets read "not measured".
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

SPREAD = 3.0  # the slowest epoch of a run may take at most this many times its fastest
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
    epochs_s = figures["epoch_seconds"]
    return {"epoch_s": sum(epochs_s) / len(epochs_s), "epochs_s": epochs_s, "test_acc": figures["test_acc"],
            "rss_mb": peak_mb}  # fmt: skip


def epoch_intervals(log_dir: Path) -> list[float]:
    """Seconds between consecutive epoch-end events (train_loss is logged once per epoch): each epoch's own
    time, used only to see whether the epochs of a run took wildly different times."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    times = [event.wall_time for event in events.Scalars("train_loss")]
    return [later - earlier for earlier, later in zip(times, times[1:], strict=False)]


def project(data_dir: str, configs: list[str], workdir: Path, max_epochs: int | None) -> dict:
    cli = [sys.executable, "-m", "mnist_lightning"]
    config_args = [arg for config in configs for arg in ("--config", str(REPO / "configs" / config))]
    config_args += [f"--data.data_dir={data_dir}"] + (
        [f"--trainer.max_epochs={max_epochs}"] if max_epochs else []
    )
    fitted, fit_wall, peak_mb = run([*cli, "fit", *config_args], workdir)
    best = re.search(r"Best checkpoint: (\S+)", fitted.stdout).group(1)
    log_dir = workdir / Path(best).parent.parent
    tested, _, _ = run([*cli, "test", *config_args, f"--ckpt_path={best}"], workdir)
    metrics_path = re.search(r"Test metrics written to (\S+)", tested.stdout).group(1)
    metrics = json.loads((workdir / metrics_path).read_text())
    intervals = epoch_intervals(log_dir)
    epochs = len(intervals) + 1
    _, one_epoch_wall, _ = run([*cli, "fit", *config_args, "--trainer.max_epochs=1"], workdir)
    return {
        "epoch_s": (fit_wall - one_epoch_wall) / (epochs - 1) if epochs > 1 else float("nan"),
        "epochs_s": intervals,
        "test_acc": metrics["test_acc"],
        "rss_mb": peak_mb,
        "fit_wall_s": fit_wall,
        "epochs": epochs,
    }


def implausible(round_: dict[str, dict]) -> list[str]:
    """Why a round's figures cannot be right on a machine with the CPU to itself; empty when plausible.

    The plain loop on pre-loaded tensors (b) does the least work per epoch of all four, so it must be the
    fastest of (a), (b) and (c); and the epochs of one run do the same work, so they must take similar times.
    """
    problems = [
        f"(b) {round_['b']['epoch_s']:.2f} s/epoch is not faster than ({key}) {round_[key]['epoch_s']:.2f}"
        for key in ("a", "c")
        if not round_["b"]["epoch_s"] < round_[key]["epoch_s"]
    ]
    for key, sample in round_.items():
        epochs = sample["epochs_s"]
        if epochs and max(epochs) > SPREAD * min(epochs):
            problems.append(f"({key}) epochs took {min(epochs):.2f} to {max(epochs):.2f} s")
    return problems


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = re.findall(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = names[0] if names else cpu
    import torch

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"


def measure_round(data_dir: str, args: argparse.Namespace, scratch: Path) -> dict[str, dict]:
    return {
        "a": plain(data_dir, "torchvision", args.plain_epochs),
        "b": plain(data_dir, "tensor", args.plain_epochs),
        "c": project(data_dir, ["default.yaml"], scratch, args.max_epochs),
        "d": project(data_dir, ["default.yaml", "fast.yaml"], scratch, args.max_epochs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data_dir", default=os.environ.get("MNIST_DATA_DIR", "data"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--retries", type=int, default=2, help="re-runs of an implausible round")
    parser.add_argument("--plain_epochs", type=int, default=2)
    parser.add_argument(
        "--max_epochs",
        type=int,
        help="epochs of (c) and (d) instead of their configs' (a quick check: no targets)",
    )
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args()
    if args.max_epochs is not None and args.max_epochs < 2:
        parser.error("--max_epochs must be at least 2 (s/epoch is the difference to a 1-epoch fit)")
    data_dir = str(Path(args.data_dir).resolve())

    good: list[dict[str, dict]] = []
    flagged: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        for round_ in range(args.rounds):
            for attempt in range(args.retries + 1):
                figures = measure_round(data_dir, args, Path(scratch))
                problems = implausible(figures)
                summary = {key: round(value["epoch_s"], 2) for key, value in figures.items()}
                verdict = problems or "ok"
                print(f"round {round_ + 1}/{args.rounds}, try {attempt + 1}: s/epoch {summary} {verdict}")
                if not problems:
                    good.append(figures)
                    break
            else:
                flagged.append(f"round {round_ + 1}: {'; '.join(problems)}")
    table = results_table(good, flagged, args)
    Path(args.output).write_text(table)
    print(table)


def results_table(good: list[dict[str, dict]], flagged: list[str], args: argparse.Namespace) -> str:
    """RESULTS.md: medians of the good rounds, the targets, and the rounds left out with the reason."""
    measured = bool(good) and len(good) >= args.rounds / 2 and args.max_epochs is None

    def med(key: str, field: str) -> float:
        return statistics.median(figures[key][field] for figures in good) if good else float("nan")

    def ratios(top: str, bottom: str) -> list[float]:
        return [figures[top]["epoch_s"] / figures[bottom]["epoch_s"] for figures in good]

    rounds_cb = ratios("c", "b")
    ratio_ca = statistics.median(ratios("c", "a")) if good else float("nan")
    ratio_cb = statistics.median(rounds_cb) if good else float("nan")
    per_round_cb = ", ".join(f"{value:.2f}" for value in rounds_cb)
    rows = [
        ("(a) plain PyTorch, torchvision DataLoader", "a"),
        ("(b) plain PyTorch, pre-loaded tensors", "b"),
        ("(c) `fit --config configs/default.yaml`", "c"),
        ("(d) fast preset `--config configs/fast.yaml`", "d"),
    ]
    lines = [
        f"Measured {datetime.date.today()} on {machine()}; medians of {len(good)} good rounds of "
        f"{args.rounds}"
        + (f" ((c) and (d): {args.max_epochs} epochs, a quick check)." if args.max_epochs else "."),
        "",
        "| run | s/epoch | test acc | peak RSS (MB) | fit wall (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for label, key in rows:
        wall = f"{med(key, 'fit_wall_s'):.1f}" if key in ("c", "d") else "-"
        lines.append(
            f"| {label} | {med(key, 'epoch_s'):.2f} | {100 * med(key, 'test_acc'):.2f}% | "
            f"{med(key, 'rss_mb'):.0f} | {wall} |"
        )
    fast_wall, fast_acc = med("d", "fit_wall_s"), med("d", "test_acc")
    default_rss, default_acc = med("c", "rss_mb"), med("c", "test_acc")
    targets = [
        ("(c) s/epoch <= 0.40 x (a)", f"c/a = {ratio_ca:.2f}", ratio_ca <= 0.40),
        ("(c) s/epoch <= 1.5 x (b)", f"c/b = {ratio_cb:.2f} (rounds: {per_round_cb})", ratio_cb <= 1.5),
        (
            "fast preset: fit wall <= 10 s to >= 97.5% test acc",
            f"{fast_wall:.1f} s to {100 * fast_acc:.2f}%",
            fast_wall <= 10 and fast_acc >= 0.975,
        ),
        ("default fit peak RSS <= 1000 MB", f"{default_rss:.0f} MB", default_rss <= 1000),
        ("default keeps >= 97.5% test acc", f"{100 * default_acc:.2f}%", default_acc >= 0.975),
    ]
    lines += ["", "| target | measured | met |", "| --- | --- | --- |"]
    lines += [
        f"| {target} | {value} | {('yes' if met else 'NO') if measured else 'not measured'} |"
        for target, value, met in targets
    ]
    lines += [
        "",
        "(a) and (b) train on all 60k images and time the training loop only; (c) and (d) train on 55k,",
        "validate on 5k and save checkpoints every epoch; their s/epoch covers all of that: the E-epoch",
        "fit's wall time minus a 1-epoch fit's, over E - 1. Fit wall time includes start-up. A ratio is the",
        "median of the rounds' own ratios.",
    ]
    if flagged:
        lines += ["", "Left out as implausible (a machine busy with other work?):", ""]
        lines += [f"- {reason}" for reason in flagged]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
