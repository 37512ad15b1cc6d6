"""A run's life, the one description of it: the states a ``fit`` run goes through, as ``summary.json``
records them (``callbacks/run_summary.py`` writes, ``runs`` reads), and which process a running run is.

::

    (created) --fit--> running --> finished | stopped early | interrupted | pruned | failed
                          |                       |
                          +-- process gone --> killed --fit --ckpt_path--> running (a resumed session)

A ``running`` summary names its process (machine, pid and the pid's start time, so a reused pid is not
mistaken for it): a reader finds the run ``killed`` when that process is gone, the way a sweep finds its dead
trials (``tools/sweep/storage.py``). Torch-free: ``runs`` reads with it without torch or Lightning.
The table of transitions is on the architecture page (docs/architecture.md#a-runs-life).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

RUNNING = "running"  # a fit session is training (or its process was killed: see :func:`current_status`)
FINISHED = "finished"  # trained all its epochs
STOPPED_EARLY = "stopped early"  # by an EarlyStopping callback
INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM: interrupted.ckpt saved, resumable
PRUNED = "pruned"  # stopped by a sweep's pruner
FAILED = "failed"  # an exception ended it
KILLED = "killed"  # summary says running, its process is gone (SIGKILL, out of memory, power)


def host_id() -> str:
    """This machine and PID namespace: process ids are only comparable within one."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux; None elsewhere or when it is gone), so a reused pid is
    not mistaken for the old process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, start: str | None) -> bool:
    """Whether process ``pid`` (on this machine) still runs and is the one that started at ``start``."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start is None or process_start(pid) in (None, start)


def this_process() -> dict[str, Any]:
    """What a ``running`` summary records of the process that trains: ``{"host", "pid", "pid_start"}``."""
    pid = os.getpid()
    return {"host": host_id(), "pid": pid, "pid_start": process_start(pid)}


def current_status(summary: dict[str, Any]) -> str:
    """A run's state now, from its ``summary.json``: its recorded status, except that a ``running`` run
    whose process is gone is ``killed``. A running summary of another machine, or one written before runs
    named their process, cannot be checked: ``running/killed``."""
    status = summary.get("status") or "?"
    if status != RUNNING:
        return status
    process = summary.get("process")
    if not isinstance(process, dict) or not isinstance(process.get("pid"), int):
        return f"{RUNNING}/{KILLED}"
    if process.get("host") != host_id():
        return f"{RUNNING}/{KILLED}"
    return RUNNING if process_alive(process["pid"], process.get("pid_start")) else KILLED
