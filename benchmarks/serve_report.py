"""The serving benchmark's results and their markdown tables (``benchmarks/SERVE.md``): requests/s and
latency beside the baseline (c), CPU time per request by kind of process, answers and memory."""

from __future__ import annotations

from dataclasses import dataclass, field

SERVERS = {
    "a": "(a) serve --ckpt_path",
    "b": "(b) serve --model model.onnx",
    "c": "(c) baseline: FastAPI + onnxruntime",
    "d": "(d) baseline, onnxruntime on 1 thread",
}


@dataclass
class Measured:
    """One server's figures: a row per load (``soak`` rows only load it before the memory is read again),
    the check of its sample answers, and its memory after the warm-up and at the end."""

    server: str
    rows: list[dict] = field(default_factory=list)
    check: dict = field(default_factory=dict)
    rss_start_mb: float = 0.0
    pss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    requests_between: int = 0
    ready_s: float = 0.0  # from the start of the command to its first ready answer


def markdown_table(results: list[Measured]) -> str:
    """Requests/s and latency by server and connections, with each row's requests/s as a ratio to the
    baselines' (c) and (d) at the same connections (blank for a baseline not measured)."""
    baselines = {
        key: {row["connections"]: row["requests_per_s"] for m in results if m.server == SERVERS[key]
              for row in m.rows if not row.get("soak")}
        for key in ("c", "d")
    }  # fmt: skip
    lines = [
        "| server | connections | requests | requests/s | vs (c) | vs (d) | p50 (ms) | p90 (ms) | p99 (ms) "
        "| errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for measured in results:
        for row in measured.rows:
            if row.get("soak"):
                continue
            ratios = [
                f"{row['requests_per_s'] / baseline[row['connections']]:.2f}x" if baseline else ""
                for baseline in baselines.values()
            ]
            lines.append(
                f"| {measured.server} | {row['connections']} | {row['requests']:,} | "
                f"{row['requests_per_s']:,.0f} | {' | '.join(ratios)} | {row['p50_ms']:.1f} | "
                f"{row['p90_ms']:.1f} | {row['p99_ms']:.1f} | {row['errors']} |"
            )
    return "\n".join(lines)


ROLES = ("http", "worker", "manager", "main", "wrk")


def cpu_table(results: list[Measured]) -> str:
    """CPU milliseconds per request, by kind of process (see :func:`cpu_seconds`; wrk is the load)."""
    lines = [
        "| server | connections | " + " | ".join(ROLES) + " | all | waited for a core | CPU pressure "
        "| load |",
        "|---|---:|" + "---:|" * (len(ROLES) + 4),
    ]
    for measured in results:
        for row in measured.rows:
            if row.get("soak"):
                continue
            cells = [f"{row['cpu_ms'][role]:.2f}" if role in row["cpu_ms"] else "" for role in ROLES]
            total = sum(row["cpu_ms"].values())
            lines.append(
                f"| {measured.server} | {row['connections']} | {' | '.join(cells)} | {total:.2f} | "
                f"{row['waited_ms']:.2f} | {row['pressure']:.0%} | {row['load']:.1f} |"
            )
    return "\n".join(lines)


def checks_and_memory(results: list[Measured]) -> str:
    lines = [
        "| server | sample answers as the local model | correct (labels) | largest probability difference "
        "| RSS after warm-up (MB) | PSS after warm-up (MB) | RSS at the end (MB) | requests in between "
        "| start to ready (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        check = m.check
        lines.append(
            f"| {m.server} | {check['agree']}/{check['count']} | {check['correct']}/{check['count']} | "
            f"{check['max_difference']:.1e} | {m.rss_start_mb:.0f} | {m.pss_start_mb:.0f} | "
            f"{m.rss_end_mb:.0f} | {m.requests_between:,} | {m.ready_s:.2f} |"
        )
    return "\n".join(lines)
