"""The study's storage, and the trials of processes that are gone: marked FAIL, and their values queued again
``retry_failed`` times by Optuna's ``RetryHeartbeatStaleTrialCallback`` (:class:`RetryTrial`)."""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import threading
import time
from pathlib import Path

from mnist_lightning import compat
from mnist_lightning.cli.quiet import silenced
from mnist_lightning.errors import UserError, first_line
from mnist_lightning.tools.sweep.spec import SweepSpec

# system attributes of a trial: which process runs it, and when that process last said it was alive
HOST, PID, PID_START, HEARTBEAT = "sweep:host", "sweep:pid", "sweep:pid_start", "sweep:heartbeat"
PROCESS_ATTRS = (HOST, PID, PID_START, HEARTBEAT)


def open_storage(url: str | None, sweep_dir: Path):
    """The study's database.

    Default: a journal file, ``<sweep dir>/study.journal`` (Optuna's ``JournalStorage`` with a
    ``JournalFileBackend``): an append-only log guarded by a lock file, so several processes on one
    machine (or on a shared filesystem) write to it at once without SQLite's "database is locked" errors,
    and a killed process leaves at most an unfinished last record, which is skipped.

    ``--storage`` takes any Optuna storage URL: ``postgresql://...``, ``mysql://...`` and ``sqlite:///...``
    (SQLAlchemy; SQLite waits up to 60 s for a lock), ``journal:PATH`` or a ``*.journal`` file for a
    journal file elsewhere (e.g. on a filesystem all machines share), and ``redis://...``.
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalRedisBackend

    try:
        if url is None or url.startswith("journal:") or url.endswith(".journal"):
            path = sweep_dir / "study.journal" if url is None else Path(url.removeprefix("journal:"))
            if url is None:
                sweep_dir.mkdir(parents=True, exist_ok=True)
            elif not path.parent.is_dir():
                raise UserError(f"--storage {url}: the folder '{path.parent}' does not exist.")
            return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
        if url.startswith("redis://"):
            return optuna.storages.JournalStorage(JournalRedisBackend(url))
        engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except UserError:
        raise
    except Exception as err:  # a driver missing, a server unreachable, a file that cannot be created
        raise UserError(
            f"cannot open the study storage '{url or sweep_dir / 'study.journal'}': "
            f"{type(err).__name__}: {first_line(err)}"
        ) from None


def _host_id() -> str:
    """This machine and PID namespace: process ids are only comparable within one."""
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return f"{socket.gethostname()}/{namespace}"


def _process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (Linux), so a reused pid is not mistaken for the old process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return start is None or _process_start(pid) in (None, start)


def is_dead(trial, grace: float, now: float) -> bool:
    """A RUNNING trial whose process is gone: on this machine, its pid no longer runs (exact, at once); on
    another, it has not sent a heartbeat for ``grace`` seconds. Live processes never fail each other's
    trials."""
    attrs = trial.system_attrs
    if HOST not in attrs:  # asked for but not yet claimed (or its process died right then)
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - started > grace
    if attrs[HOST] == _host_id():
        return not _alive(int(attrs[PID]), attrs.get(PID_START))
    return now - float(attrs.get(HEARTBEAT, 0)) > grace


def fail_dead_trials(study, spec: SweepSpec) -> None:
    """Mark the RUNNING trials of dead processes FAIL and, up to ``retry_failed`` times, queue them again.

    Marking is a state change the storage refuses on a finished trial, so when two processes find the same
    dead trial only one of them marks it and queues the retry.
    """
    from optuna.trial import TrialState

    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_dead(trial, spec.grace, now):
            continue
        try:
            marked = compat.storage_of(study).set_trial_state_values(
                compat.trial_id_of(trial), state=TrialState.FAIL
            )
        except Exception:  # another process marked it first
            continue
        if marked:
            RetryTrial(spec.retry_failed, "was left running by a process that is gone")(study, trial)


class RetryTrial:
    """Queue a failed trial's values again, up to ``retry_failed`` times, with Optuna's
    ``RetryHeartbeatStaleTrialCallback``; given ``why``, say on stdout what became of the trial.

    The sweep calls it for the trials its process check or its heartbeat finds dead, and for a trial stopped
    by Ctrl-C or SIGTERM.
    """

    def __init__(self, retry_failed: int, why: str | None = None) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        with silenced():  # ExperimentalWarning
            self._retry = RetryHeartbeatStaleTrialCallback(max_retry=retry_failed)
        self.retry_failed, self.why = retry_failed, why

    def __call__(self, study, trial) -> None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        with silenced():  # ExperimentalWarning
            retries = len(RetryHeartbeatStaleTrialCallback.retry_history(trial))
        queued = bool(trial.params) and retries < self.retry_failed  # the callback's own limit
        if queued:
            # a copy: the callback appends to the trial's retry history, which may be the storage's own list;
            # without the dead process's marks, which a live process would otherwise judge the retry by
            trial = copy.deepcopy(trial)
            trial.system_attrs = {
                key: value for key, value in trial.system_attrs.items() if key not in PROCESS_ATTRS
            }
            self._retry(study, trial)
        if self.why:
            print(
                f"Trial {trial.number} {self.why}: marked failed"
                f"{'; its parameters are queued again' if queued else ''}.",
                flush=True,
            )


def retried_from(trial) -> int | None:
    """The number of the trial this one retries (the one just before it in its retry history), if any."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    with silenced():  # ExperimentalWarning
        history = RetryHeartbeatStaleTrialCallback.retry_history(trial)
    return history[-1] if history else None


class Heartbeat:
    """Marks the trial as alive in the storage every ``interval`` seconds while it runs (a daemon thread)."""

    def __init__(self, study, trial_id: int, interval: float) -> None:
        self.study, self.trial_id, self.interval = study, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):
                compat.storage_of(self.study).set_trial_system_attr(self.trial_id, HEARTBEAT, time.time())

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
