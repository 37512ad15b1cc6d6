"""What the processes of a server use, read from Linux's ``/proc``: their tree, resident and proportional
memory, CPU time by role, the time their threads waited for a core, the machine's CPU pressure; and the CPU
time of this process's finished children (``wrk``). Used by ``benchmarks/serve.py``."""

from __future__ import annotations

import os
import re
import resource
from pathlib import Path


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rpartition(")")[2].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def summed_mb(root: int, file: str, field: str) -> float:
    """``field`` (a figure in kB, e.g. ``VmRSS``) of ``/proc/<pid>/<file>`` added up over ``root``'s
    processes, MB; a process that ended meanwhile counts nothing."""
    total = 0
    for pid in process_tree(root):
        try:
            text = Path(f"/proc/{pid}/{file}").read_text()
        except OSError:
            continue
        found = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
        total += int(found.group(1)) if found else 0
    return total / 1024


def rss_mb(root: int) -> float:
    """The resident memory of ``root``'s processes together, MB."""
    return summed_mb(root, "status", "VmRSS")


def pss_mb(root: int) -> float:
    """The proportional memory of ``root``'s processes together, MB: each page shared by N processes counts
    1/N in each (forked processes share much of their memory, which RSS counts once per process)."""
    return summed_mb(root, "smaps_rollup", "Pss")


def cpu_seconds(root: int) -> dict[str, float]:
    """The CPU time (user + system) each process of ``root``'s tree has used, by role: ``main`` (the process
    started), ``worker`` (LitServe's inference workers, spawned), ``manager`` (the multiprocessing Manager
    holding LitServe's queues, forked before the workers), ``http`` (uvicorn processes, forked after them;
    a server of one process is all ``http``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in sorted(process_tree(root)):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        found[pid] = (command, (int(stat[11]) + int(stat[12])) / ticks)
    if len(found) == 1:  # the baseline: one process answers HTTP and runs the model
        return {"http": next(iter(found.values()))[1]}
    workers = [pid for pid, (command, _) in found.items() if "spawn_main" in command]
    seconds: dict[str, float] = {}
    for pid, (command, used) in found.items():
        if pid == root or command.startswith("taskset"):
            role = "main"
        elif "spawn_main" in command:
            role = "worker"
        elif "resource_tracker" in command:
            role = "tracker"
        else:
            role = "manager" if workers and pid < min(workers) else "http"
        seconds[role] = seconds.get(role, 0.0) + used
    return seconds


def runqueue_waits(root: int) -> dict[int, int]:
    """How long each thread of ``root``'s processes has waited, runnable, for a core (ns, ``schedstat``)."""
    waited = {}
    for pid in process_tree(root):
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                waited[int(task.name)] = int((task / "schedstat").read_text().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return waited


def waited_seconds(before: dict[int, int], after: dict[int, int]) -> float:
    """The waiting between two :func:`runqueue_waits` of the threads alive at the second (a thread that
    ended in between is left out; one that started counts from zero)."""
    return sum(end - before.get(thread, 0) for thread, end in after.items()) / 1e9


def cpu_pressure_seconds() -> float:
    """The time some runnable task on this machine has waited for a core (PSI ``some``), 0 without PSI."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return 0.0
    return int(line.rpartition("total=")[2]) / 1e6


def children_cpu() -> float:
    """CPU seconds used by the finished child processes of this one (the wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
