"""``python -m mnist_lightning sweep``: trials, pruning, shared and resumed studies, bad input."""

from __future__ import annotations

import csv
import json
import logging
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import optuna
import pytest
import yaml

from mnist_lightning import compat
from mnist_lightning.tools.sweep.report import PLOTS
from mnist_lightning.tools.sweep.spec import SweepSpec, load_sweep_file
from mnist_lightning.tools.sweep.storage import (
    HEARTBEAT,
    HOST,
    PID,
    RetryTrial,
    fail_dead_trials,
    host_id,
    retried_from,
)

from helpers.commands import REPO, subprocess_env
from helpers.sweeps import run_sweep, sweep_args, write_sweep


def start_sweep(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mnist_lightning", "sweep", *args],
        cwd=cwd,
        env=subprocess_env(OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def load_study(sweep_dir: Path, name: str) -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep_dir / "study.journal"))
    )
    return optuna.load_study(study_name=name, storage=storage)


def states(study: optuna.Study) -> list[str]:
    return [trial.state.name for trial in study.get_trials()]


def test_sweep_runs_trials_writes_outputs_and_resumes(tmp_path, tiny_data):
    sweep_file = write_sweep(tmp_path, trials=2, test=True)
    status, out, err = run_sweep(*sweep_args(sweep_file, tiny_data), cwd=tmp_path)
    assert status == 0, err[-3000:]
    sweep_dir = tmp_path / "lightning_logs" / "sweeps" / "tiny"
    study = load_study(sweep_dir, "tiny")
    assert states(study) == ["COMPLETE"] * 2
    for trial in study.trials:  # each trial an ordinary run in its own folder, with its sampled values
        run = sweep_dir / f"trial_{trial.number}"
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["model"]["optimizer"]["init_args"]["lr"] == pytest.approx(
            trial.params["model.optimizer.init_args.lr"]
        )
        assert config["data"]["batch_size"] == trial.params["data.batch_size"]
        assert (
            json.dumps(config["model"]["net"]["init_args"]["hidden_sizes"])
            == (trial.params["model.net.init_args.hidden_sizes"])
        )
        summary = json.loads((run / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["epochs"] == 2
        assert trial.value == pytest.approx(summary["best_score"])
        assert list(run.glob("events.out.tfevents.*")) and (run / "hparams.yaml").is_file()
        assert Path(tmp_path / trial.user_attrs["best_checkpoint"]).is_file()
        [metrics] = (run / "test").glob("*/metrics.json")
        assert json.loads(metrics.read_text())["test_acc"] == pytest.approx(trial.user_attrs["test_acc"])
    rows = list(csv.DictReader((sweep_dir / "trials.csv").open()))
    assert [row["state"] for row in rows] == ["COMPLETE"] * 2 and all(row["test_acc"] for row in rows)
    for plot in PLOTS:
        assert (sweep_dir / plot).read_bytes().startswith(b"\x89PNG"), plot
    best = study.best_trial
    assert f"Best trial: {best.number}, val_acc {best.value:.4f}" in out
    assert f"run folder: lightning_logs/sweeps/tiny/trial_{best.number}" in out
    params = {tuple(sorted(trial.params.items())) for trial in study.trials}
    assert len(params) == 2  # a seeded sampler draws different values for each trial

    # the same command again: the study has its 2 finished trials, nothing runs again
    status, out, err = run_sweep(*sweep_args(sweep_file, tiny_data), cwd=tmp_path)
    assert status == 0, err[-3000:]
    assert "continued, 2 trials so far" in out and "trial 2" not in out
    assert len(load_study(sweep_dir, "tiny").trials) == 2
    # one more requested: exactly one more trial, with new values (not the seeded sampler's first draw again)
    status, out, err = run_sweep(*sweep_args(sweep_file, tiny_data, "--trials", "3"), cwd=tmp_path)
    study = load_study(sweep_dir, "tiny")
    assert status == 0 and states(study) == ["COMPLETE"] * 3
    assert study.trials[2].params not in (study.trials[0].params, study.trials[1].params)
    status, out, _ = run_sweep("--sweep", str(sweep_file), "--report", cwd=tmp_path)
    assert status == 0 and "3 complete" in out and "Best trial" in out


def test_pruner_stops_a_trial_early(tmp_path, tiny_data):
    # val_acc is never above 1.1: the threshold pruner prunes at the first report after its one warm-up epoch
    pruner = {"name": "ThresholdPruner", "args": {"lower": 1.1, "n_warmup_steps": 1}}
    sweep_file = write_sweep(tmp_path, "pruned", trials=1, pruner=pruner)
    import lightning.pytorch  # noqa: F401  (importing it sets its loggers' level: the level to come back to)

    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels, filters = [logger.level for logger in loggers], list(warnings.filters)
    status, out, err = run_sweep(*sweep_args(sweep_file, tiny_data, "--trainer.max_epochs=4"), cwd=tmp_path)
    assert status == 0, err[-3000:]
    # sweep.main leaves a longer-lived process (a notebook, a script) its logging and warnings as they were
    assert [logger.level for logger in loggers] == levels and warnings.filters == filters
    sweep_dir = tmp_path / "lightning_logs" / "sweeps" / "pruned"
    [trial] = load_study(sweep_dir, "pruned").trials
    assert trial.state.name == "PRUNED" and sorted(trial.intermediate_values) == [0, 1]
    summary = json.loads((sweep_dir / "trial_0" / "summary.json").read_text())
    assert summary["status"] == "pruned" and summary["epochs"] == 1  # stopped in its 2nd epoch of 4
    assert "trial 0 pruned" in out and "Pruned: 1 trial," in out
    assert "No trial has completed yet" in out


@pytest.mark.slow  # whole processes
def test_two_processes_share_one_study(tmp_path, tiny_data):
    sweep_file = write_sweep(tmp_path, "shared", trials=6)
    args = sweep_args(sweep_file, tiny_data, "--trainer.max_epochs=4")
    first, second = start_sweep(*args, cwd=tmp_path), start_sweep(*args, cwd=tmp_path)
    outputs = [process.communicate(timeout=240) for process in (first, second)]
    for process, (_, err) in zip((first, second), outputs, strict=True):
        assert process.returncode == 0, err[-3000:]
        assert "locked" not in err and "Traceback" not in err
    sweep_dir = tmp_path / "lightning_logs" / "sweeps" / "shared"
    study = load_study(sweep_dir, "shared")
    finished = study.get_trials()
    assert len(finished) >= 6 and set(states(study)) == {"COMPLETE"}  # none lost, none failed
    pids = {trial.system_attrs[PID] for trial in finished}
    assert pids == {first.pid, second.pid}  # both processes ran trials of the one study
    for trial in finished:
        summary = json.loads((sweep_dir / f"trial_{trial.number}" / "summary.json").read_text())
        assert summary["status"] == "finished"


def stop_mid_trial(args: list[str], cwd: Path, signum: int = signal.SIGKILL) -> tuple[Path, int, str]:
    """Start a sweep of trials of 30 short epochs, send it ``signum`` after trial 0's first checkpoint, long
    before its last; returns the sweep's folder, the process's exit status and what it wrote to stderr."""
    process = start_sweep(*args, cwd=cwd)
    last = cwd / "lightning_logs" / "sweeps" / "killed" / "trial_0" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert last.exists(), process.communicate()[1][-3000:]
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    return last.parents[2], process.returncode, stderr


def killed_mid_trial(args: list[str], cwd: Path) -> Path:
    sweep_dir, _, _ = stop_mid_trial(args, cwd)
    summary = json.loads((sweep_dir / "trial_0" / "summary.json").read_text())
    assert summary["status"] == "running"  # killed mid-trial, no chance to say more
    return sweep_dir


def run_sweep_process(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mnist_lightning", "sweep", *args],
        cwd=cwd, capture_output=True, text=True, timeout=240,
        env=subprocess_env(OMP_NUM_THREADS="1"),
    )  # fmt: skip


def assert_failed_then_retried_once(study: optuna.Study, sweep_dir: Path) -> None:
    assert states(study) == ["FAIL", "COMPLETE", "COMPLETE"]
    failed, retry, _ = study.trials
    assert retry.params == failed.params and retried_from(retry) == 0  # retried once, by the config
    rows = list(csv.DictReader((sweep_dir / "trials.csv").open()))
    assert [row["retry_of"] for row in rows] == ["", "0", ""]


@pytest.mark.slow  # whole processes
def test_sigkill_mid_trial_then_the_same_command_continues(tmp_path, tiny_data):
    sweep_file = write_sweep(tmp_path, "killed", trials=2, retry_failed=1)
    args = sweep_args(sweep_file, tiny_data, "--trainer.max_epochs=30")
    sweep_dir = killed_mid_trial(args, tmp_path)
    assert states(load_study(sweep_dir, "killed")) == ["RUNNING"]

    result = run_sweep_process(args, tmp_path)  # at once: the process check, not a heartbeat, finds it dead
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Trial 0 was left running by a process that is gone: marked failed" in result.stdout
    assert_failed_then_retried_once(load_study(sweep_dir, "killed"), sweep_dir)


@pytest.mark.slow  # whole processes
def test_ctrl_c_mid_trial_queues_it_again_and_the_same_command_continues(tmp_path, tiny_data):
    sweep_file = write_sweep(tmp_path, "killed", trials=2, retry_failed=1)
    args = sweep_args(sweep_file, tiny_data, "--trainer.max_epochs=30")
    sweep_dir, status, stderr = stop_mid_trial(args, tmp_path, signal.SIGINT)
    assert status == 130
    assert "Traceback" not in stderr and "[W " not in stderr, stderr  # no Optuna warning, no traceback
    assert "(continue: the same sweep command, which continues the study)" in stderr
    assert "--ckpt_path last" not in stderr
    summary = json.loads((sweep_dir / "trial_0" / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    study = load_study(sweep_dir, "killed")
    assert states(study) == ["FAIL", "WAITING"]  # marked failed by Optuna, queued again by the sweep
    failed, retry = study.trials
    assert failed.user_attrs["interrupted"] and "interrupted" not in retry.user_attrs

    result = run_sweep_process(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "marked failed" not in result.stdout  # nothing left running
    assert_failed_then_retried_once(load_study(sweep_dir, "killed"), sweep_dir)


@pytest.mark.slow  # a whole process: Optuna's log handler writes to the process's own stderr
def test_a_mistake_found_in_a_trial_is_one_error_line_without_optunas_traceback(tmp_path, tiny_data):
    sweep_file = write_sweep(tmp_path, "mistake", trials=1)
    result = run_sweep_process(sweep_args(sweep_file, tiny_data, "--data.val_size=5000"), tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: data.val_size (5000) must be smaller than the 512 training images." in result.stderr
    assert "Traceback" not in result.stderr and "[W " not in result.stderr, result.stderr


@pytest.mark.slow  # whole processes
def test_sigkill_mid_trial_on_sqlite_is_failed_and_retried_by_optunas_heartbeat(tmp_path, tiny_data):
    sweep_file = write_sweep(tmp_path, "killed", trials=2, retry_failed=1, heartbeat=1)  # grace: 4 s
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    args = sweep_args(sweep_file, tiny_data, "--trainer.max_epochs=30", f"--storage={storage}")
    sweep_dir = killed_mid_trial(args, tmp_path)
    [killed] = optuna.load_study(study_name="killed", storage=storage).trials
    assert killed.state.name == "RUNNING" and HEARTBEAT not in killed.system_attrs  # Optuna's heartbeat only

    time.sleep(4 + 2)  # past the grace period (SQLite's clock has whole seconds): Optuna's heartbeat is stale
    result = run_sweep_process(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ExperimentalWarning" not in result.stderr and "FutureWarning" not in result.stderr
    assert "Trial 0 sent no heartbeat for over 4 s: marked failed; its parameters are queued again" in (
        result.stdout
    )
    assert "left running by a process that is gone" not in result.stdout  # not the sweep's process check
    study = optuna.load_study(study_name="killed", storage=storage)
    assert_failed_then_retried_once(study, sweep_dir)
    retry = study.trials[1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry) == 0
    assert retry.system_attrs[PID] != killed.system_attrs[PID]  # run by the second process


def test_a_failed_trial_is_queued_again_retry_failed_times_without_its_process_marks(capsys):
    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    compat.storage_of(study).set_trial_system_attr(compat.trial_id_of(trial), HOST, "another/host")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    retry_once = RetryTrial(1, "was left running by a process that is gone")
    retry_once(study, study.trials[0])
    assert capsys.readouterr().out.splitlines() == [
        "Trial 0 was left running by a process that is gone: marked failed; its parameters are queued again."
    ]
    failed, retry = study.trials
    assert retry.state.name == "WAITING" and retry.params == failed.params and retried_from(retry) == 0
    assert HOST not in retry.system_attrs  # the dead process's marks are left out: a live one claims it
    # the retry fails too: retry_failed (1) is spent, nothing more is queued
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    retry_once(study, study.trials[1])
    assert len(study.trials) == 2
    assert capsys.readouterr().out == "Trial 1 was left running by a process that is gone: marked failed.\n"
    RetryTrial(0)(study, study.trials[0])  # retry_failed: 0 queues nothing, and says nothing without a why
    assert len(study.trials) == 2 and capsys.readouterr().out == ""


def test_a_trial_read_while_its_process_writes_its_marks_is_left_running():
    """Two processes share a study: one claims a trial mark by mark while the other looks for dead trials."""
    study = optuna.create_study()
    claimed, dead = study.ask(), study.ask()
    storage = compat.storage_of(study)
    storage.set_trial_system_attr(compat.trial_id_of(claimed), HOST, host_id())  # its pid not written yet
    for key, value in {HOST: host_id(), PID: 2**22 + 1}.items():  # above Linux's largest pid: no process
        storage.set_trial_system_attr(compat.trial_id_of(dead), key, value)
    fail_dead_trials(study, SweepSpec(path=Path("sweep.yaml"), params=[]))
    assert [trial.state.name for trial in study.trials] == ["RUNNING", "FAIL"]


@pytest.mark.parametrize(
    ("change", "option", "message"),
    [
        ({"params": {"model.optimizer.init_args.learning_rate": {"low": 0.001, "high": 0.01}}}, None,
         "params.model.optimizer.init_args.learning_rate: 'model.optimizer.init_args.learning_rate' is not"),
        ({"params": {"model.optimizer.init_args.lr": {"low": 0.01, "high": 0.001}}}, None,
         "params.model.optimizer.init_args.lr: low (0.01) is greater than high (0.001)"),
        ({"sampler": {"name": "TPESamplr"}}, None, "unknown sampler 'TPESamplr'; Optuna's samplers are:"),
        ({"heartbeat": 0.5}, None, "heartbeat must be a whole number >= 1"),
        ({}, "--storage=sqlite:////nonexistent/folder/study.db", "cannot open the study storage 'sqlite:////nonexistent"),
        ({}, "--trials=0", "--trials must be 1 or more"),
        ({}, "--trails=2", "--trails (did you mean --trials?)"),
    ],
    ids=[
        "unknown-option", "low-above-high", "unknown-sampler", "fractional-heartbeat", "unreachable-storage",
        "no-trials", "misspelt-sweep-option",
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_error_before_anything_runs(tmp_path, tiny_data, change, option, message):
    sweep_dir = tmp_path / "lightning_logs" / "sweeps" / "tiny"
    sweep_dir.mkdir(parents=True)
    existing = optuna.create_study(
        study_name="tiny",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(sweep_dir / "study.journal"))
        ),
        direction="maximize",
    )
    existing.add_trial(optuna.trial.create_trial(value=0.5, params={}, distributions={}))
    before = (sweep_dir / "study.journal").read_bytes()
    sweep_file = write_sweep(tmp_path, **change)
    status, out, err = run_sweep(
        *sweep_args(sweep_file, tiny_data, *([option] if option else [])), cwd=tmp_path
    )
    assert status == 2
    [line] = [line for line in err.splitlines() if line.startswith("error:")]
    assert message in line, err
    assert "Traceback" not in err and "trial 0" not in out
    assert (sweep_dir / "study.journal").read_bytes() == before
    assert sorted(path.name for path in sweep_dir.iterdir()) == ["study.journal"]


def test_a_sweep_file_that_is_not_valid_yaml_is_named_with_the_line(tmp_path, tiny_data):
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "params:\n  data.batch_size: {choices: [16, 32]\n  model.optimizer.init_args.lr: 0.01\n"
    )
    status, out, err = run_sweep(*sweep_args(broken, tiny_data), cwd=tmp_path)
    assert status == 2 and out == ""
    assert err == (
        f"error: the sweep file '{broken}' is not valid YAML at line 3, column 3: expected ',' or '}}', "
        f"but got '<scalar>'.\n"
    )


SHIPPED_SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED_SWEEPS, ids=lambda path: path.name)
def test_every_shipped_sweep_file_is_a_valid_sweep(path):
    spec = load_sweep_file(path)
    assert spec.params, f"{path.name} searches nothing"
