"""The study's storage, and the trials of processes that are gone.

A trial left RUNNING by a process that died (SIGKILL, out of memory, a lost machine) is marked FAIL and its
values are queued again, ``retry_failed`` times, by Optuna's ``RetryHeartbeatStaleTrialCallback`` (which
records the retried trials' numbers: :func:`retried_from`). What finds such a trial depends on the storage:

- An SQL database (``RDBStorage``: sqlite, PostgreSQL, MySQL) uses Optuna's own heartbeat: it is opened with
  ``heartbeat_interval`` and ``grace_period``, ``study.optimize`` records each trial's heartbeat from a
  thread of its own, and ``optuna.storages.fail_stale_trials`` fails the trials whose heartbeat is older
  than the grace period and hands each to the retry callback.
- A journal (the default file, or Redis) has no heartbeat in Optuna 5.1: only ``RDBStorage`` implements
  its ``BaseHeartbeat``, ``study.optimize`` runs no heartbeat thread for any other storage and
  ``fail_stale_trials`` does nothing there. So for a journal the sweep keeps its own :class:`Heartbeat`
  (a trial's system attribute, written every ``heartbeat`` seconds), which is how a trial of another
  machine sharing the journal (NFS, Redis) is found dead.

On any storage, a trial whose process ran on this machine is also checked by its process id and start time
(:func:`why_dead`): that finds it dead at once, where a heartbeat needs its grace period (4 heartbeats, 2
minutes by default), so a sweep run again right after a crash neither counts the dead trial as running in
another process nor stops short of its ``--trials`` for it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import time
from pathlib import Path

from mnist_lightning import compat
from mnist_lightning.cli.quiet import silenced
from mnist_lightning.errors import UserError, first_line
from mnist_lightning.run_states import host_id, process_alive, process_start
from mnist_lightning.tools.sweep.spec import SweepSpec

# system attributes of a trial: which process runs it, and (journal) when that process last said it was alive
HOST, PID, PID_START, HEARTBEAT = "sweep:host", "sweep:pid", "sweep:pid_start", "sweep:heartbeat"
PROCESS_ATTRS = (HOST, PID, PID_START, HEARTBEAT)


def open_storage(url: str | None, sweep_dir: Path, spec: SweepSpec):
    """The study's database.

    Default: a journal file, ``<sweep dir>/study.journal`` (Optuna's ``JournalStorage`` with a
    ``JournalFileBackend``): an append-only log guarded by a lock file, so several processes on one
    machine (or on a shared filesystem) write to it at once without SQLite's "database is locked" errors,
    and a killed process leaves at most an unfinished last record, which is skipped.

    ``--storage`` takes any Optuna storage URL: ``postgresql://...``, ``mysql://...`` and ``sqlite:///...``
    (SQLAlchemy; SQLite waits up to 60 s for a lock; Optuna's heartbeat on), ``journal:PATH`` or a
    ``*.journal`` file for a journal file elsewhere (e.g. on a filesystem all machines share), and
    ``redis://...``.
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
        with silenced():  # ExperimentalWarning of heartbeat_interval
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=spec.heartbeat,
                grace_period=spec.grace,
                heartbeat_stale_trial_callback=RetryTrial(
                    spec.retry_failed, f"sent no heartbeat for over {spec.grace} s"
                ),
            )
    except UserError:
        raise
    except Exception as err:  # a driver missing, a server unreachable, a file that cannot be created
        raise UserError(
            f"cannot open the study storage '{url or sweep_dir / 'study.journal'}': "
            f"{type(err).__name__}: {first_line(err)}"
        ) from None


def has_own_heartbeat(study) -> bool:
    """Whether the sweep keeps the trials' heartbeat itself: a journal storage, which Optuna has none for."""
    from optuna.storages import JournalStorage

    return isinstance(compat.storage_of(study), JournalStorage)


def claim(trial, heartbeat: int) -> contextlib.AbstractContextManager:
    """Mark ``trial`` as this process's; returns what keeps its heartbeat while it runs: the sweep's
    :class:`Heartbeat` on a journal, nothing on an SQL database (``study.optimize`` runs Optuna's). The marks
    are written one by one, so another process may read a trial with only some of them (:func:`why_dead`)."""
    storage, trial_id, pid = compat.storage_of(trial.study), compat.trial_id_of(trial), os.getpid()
    own_heartbeat = has_own_heartbeat(trial.study)
    marks = {HOST: host_id(), PID: pid, PID_START: process_start(pid)}
    if own_heartbeat:
        marks[HEARTBEAT] = time.time()
    for key, value in marks.items():
        storage.set_trial_system_attr(trial_id, key, value)
    return Heartbeat(trial.study, trial_id, heartbeat) if own_heartbeat else contextlib.nullcontext()


def why_dead(trial, grace: int, own_heartbeat: bool, now: float) -> str | None:
    """Why a RUNNING trial's process is gone, or None while it may live: on this machine, its pid no longer
    runs (exact, at once); on another, with the sweep's own heartbeat, it has not sent one for ``grace``
    seconds (Optuna's heartbeat judges the others). Live processes never fail each other's trials."""
    attrs = trial.system_attrs
    gone = "was left running by a process that is gone"
    if HOST not in attrs or PID not in attrs:  # not yet (wholly) claimed, or its process died right then
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        return gone if now - started > grace else None
    if attrs[HOST] == host_id():
        return None if process_alive(int(attrs[PID]), attrs.get(PID_START)) else gone
    if own_heartbeat and now - float(attrs.get(HEARTBEAT, 0)) > grace:
        return f"sent no heartbeat for over {grace} s"
    return None


def fail_dead_trials(study, spec: SweepSpec) -> None:
    """Mark the RUNNING trials of dead processes FAIL and, up to ``retry_failed`` times, queue them again.

    First Optuna's ``fail_stale_trials`` (SQL databases; ``study.optimize`` calls it too, but only after the
    loop has counted the running trials), then the process check, and the sweep's heartbeat on a journal.
    Marking is a state change the storage refuses on a finished trial, so when two processes find the same
    dead trial only one of them marks it and queues the retry.
    """
    import optuna
    from optuna.trial import TrialState

    with silenced():  # ExperimentalWarning
        optuna.storages.fail_stale_trials(study)
    own_heartbeat, now = has_own_heartbeat(study), time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        why = why_dead(trial, spec.grace, own_heartbeat, now)
        if why is None:
            continue
        try:
            marked = compat.storage_of(study).set_trial_state_values(
                compat.trial_id_of(trial), state=TrialState.FAIL
            )
        except optuna.exceptions.UpdateFinishedTrialError:  # another process marked it first
            continue
        if marked:
            RetryTrial(spec.retry_failed, why)(study, trial)


class RetryTrial:
    """Queue a failed trial's values again, up to ``retry_failed`` times, with Optuna's
    ``RetryHeartbeatStaleTrialCallback``; given ``why``, say on stdout what became of the trial.

    Optuna's heartbeat calls it for a stale trial of an SQL database; the sweep calls it for the trials its
    process check or its own heartbeat finds dead, and for a trial stopped by Ctrl-C or SIGTERM.
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
    """Marks the trial as alive in a journal storage every ``interval`` seconds while it runs (a daemon
    thread); an SQL database has Optuna's heartbeat instead."""

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
