"""benchmarks/run.py's judgement of its own figures: implausible rounds are left out, not counted."""

from __future__ import annotations

import argparse
import importlib.util

from helpers.commands import REPO

spec = importlib.util.spec_from_file_location("benchmark_run", REPO / "benchmarks" / "run.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def sample(epoch_s: float, epochs_s: list[float] | None = None, **extra: float) -> dict:
    return {
        "epoch_s": epoch_s,
        "epochs_s": epochs_s or [epoch_s] * 2,
        "test_acc": 0.98,
        "rss_mb": 500,
        **extra,
    }


def a_round(b: float = 0.5, c_epochs: list[float] | None = None) -> dict[str, dict]:
    return {
        "a": sample(4.0),
        "b": sample(b),
        "c": sample(1.0, c_epochs, fit_wall_s=30.0),
        "d": sample(1.0, fit_wall_s=8.0),
    }


def test_a_quiet_machines_round_is_plausible():
    assert benchmark.implausible(a_round()) == []


def test_a_floor_slower_than_the_project_or_wildly_varying_epochs_are_implausible():
    assert benchmark.implausible(a_round(b=196.0)) == [
        "(b) 196.00 s/epoch is not faster than (a) 4.00",
        "(b) 196.00 s/epoch is not faster than (c) 1.00",
    ]
    assert benchmark.implausible(a_round(c_epochs=[1.0, 0.9, 3.5])) == ["(c) epochs took 0.90 to 3.50 s"]


def test_targets_are_not_measured_without_enough_good_rounds():
    args = argparse.Namespace(rounds=5, max_epochs=None)
    flagged = ["round 2: (b) 196.00 s/epoch is not faster than (c) 1.00"]
    table = benchmark.results_table([a_round()] * 3, flagged, args)
    assert "medians of 3 good rounds of 5" in table and "| yes |" in table and "not measured" not in table
    assert "- round 2: (b) 196.00 s/epoch" in table
    table = benchmark.results_table([a_round()] * 2, flagged, args)
    assert "| yes |" not in table and table.count("| not measured |") == 5
    assert "not measured" in benchmark.results_table(
        [], flagged, argparse.Namespace(rounds=1, max_epochs=None)
    )
