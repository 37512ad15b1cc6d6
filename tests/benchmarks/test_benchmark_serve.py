"""benchmarks/serve.py's own parts: a missing wrk is named, and its tables put each server beside (c)."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from helpers.commands import REPO

sys.path.append(str(REPO / "benchmarks"))  # as when the script runs: its helpers are beside it
spec = importlib.util.spec_from_file_location("benchmark_serve", REPO / "benchmarks" / "serve.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def test_without_wrk_the_benchmark_names_the_package_to_install(monkeypatch):
    monkeypatch.setattr(benchmark.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="Install the Debian package 'wrk'"):
        benchmark.require_wrk()


def row(connections: int, requests_per_s: float) -> dict:
    return {
        "connections": connections, "requests": int(requests_per_s * 10), "requests_per_s": requests_per_s,
        "p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": 3.0, "errors": 0, "waited_ms": 0.1, "pressure": 0.25,
        "load": 0.4, "cpu_ms": {"http": 1.0, "worker": 0.25, "wrk": 0.05},
    }  # fmt: skip


def test_each_servers_requests_per_second_is_a_ratio_to_the_baselines():
    served = benchmark.Measured(benchmark.SERVERS["b"], rows=[row(1, 300.0), row(64, 1500.0)])
    baseline = benchmark.Measured(benchmark.SERVERS["c"], rows=[row(1, 600.0), row(64, 1000.0)])
    table = benchmark.markdown_table([served, baseline]).splitlines()
    assert "| 1 | 3,000 | 300 | 0.50x |" in table[2]
    assert "| 64 | 15,000 | 1,500 | 1.50x |" in table[3]
    assert "| 1.00x |" in table[4]
    cpu = benchmark.cpu_table([served]).splitlines()
    assert cpu[2].endswith("| 1 | 1.00 | 0.25 |  |  | 0.05 | 1.30 | 0.10 | 25% | 0.4 |")
