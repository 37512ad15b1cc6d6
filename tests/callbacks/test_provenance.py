"""``provenance.json``: which code, packages, machine, command and data made a run, as commands write it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import lightning
import torch

from mnist_lightning.callbacks import fingerprints

from helpers.commands import CONFIG, QUICK, subprocess_env
from helpers.inprocess import run_main
from helpers.tracking import git_work_tree


def sessions_of(folder: Path) -> list[dict]:
    return json.loads((folder / "provenance.json").read_text())["sessions"]


def test_a_fit_records_its_code_packages_machine_command_and_data(tmp_path, tiny_data, monkeypatch):
    """In a work tree with uncommitted changes: the commit, branch and dirty flag, the diff saved as
    code.diff and the untracked file named; the versions and requirements.txt; the machine; the command line
    and seed; each data file's SHA-256."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    commit = git_work_tree(tmp_path)
    (tmp_path / "experiment.yaml").write_text("trainer:\n  max_epochs: 1  # changed\n")
    (tmp_path / "notes.txt").write_text("not committed\n")
    args = ("fit", "--config", str(CONFIG), f"--data.data_dir={tiny_data}", *QUICK)
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "mnist_lightning", *args])  # as a user runs it
    status, _, stderr = run_main(*args, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0"
    [session] = sessions_of(run)
    git = session["git"]
    assert (git["commit"], git["branch"], git["dirty"]) == (commit, "main", True)
    assert git["untracked"] == ["notes.txt"] and git["diff_file"] == "code.diff"
    assert "+  max_epochs: 1  # changed" in (run / "code.diff").read_text()
    assert session["versions"]["torch"] == torch.__version__.split("+")[0]
    assert session["versions"]["lightning"] == lightning.__version__
    assert session["versions"]["python"] and "cuda" in session["versions"]
    requirements = (run / session["requirements_file"]).read_text().splitlines()
    assert f"lightning=={lightning.__version__}" in requirements and len(requirements) > 20
    machine = session["machine"]
    assert machine["hostname"] and machine["cpu"] and machine["cpu_count"] >= 1
    assert machine["gpu_count"] == len(machine["gpus"])
    assert session["processes"]["world_size"] == 1 and session["processes"]["num_nodes"] == 1
    assert session["command_line"] == f"python -m mnist_lightning fit --config {CONFIG} " + " ".join(
        [f"--data.data_dir={tiny_data}", *QUICK]
    )
    assert session["seed"] == 42
    assert session["command"] == "fit" and session["project"]["name"] == "mnist-lightning"
    raw = tiny_data / "MNIST" / "raw"
    assert {Path(entry["path"]).name: entry["sha256"] for entry in session["data"]} == {
        name: hashlib.sha256((raw / name).read_bytes()).hexdigest()
        for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    }


def test_a_resumed_fit_appends_its_session_and_a_test_writes_its_own_beside_its_results(tmp_path, tiny_data):
    args = ("--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK)
    status, _, stderr = run_main("fit", *args, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    status, _, stderr = run_main("fit", *args, "--trainer.max_epochs=2", "--ckpt_path=last", cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0"
    first, resumed = sessions_of(run)
    assert first["checkpoint"] is None and resumed["checkpoint"].endswith("last.ckpt")
    # the same packages: the resumed session names the first one's file, no copy
    assert (first["requirements_file"], resumed["requirements_file"]) == ("requirements.txt",) * 2
    assert (run / "requirements.txt").is_file() and not (run / "requirements.session2.txt").exists()

    last = run / "checkpoints" / "last.ckpt"
    status, _, stderr = run_main("test", *args, "--ckpt_path", last, cwd=tmp_path)
    assert status == 0, stderr[-3000:]
    [tested] = sessions_of(run / "test" / "last")
    assert tested["command"] == "test" and tested["checkpoint"] == str(last.resolve())
    assert [Path(entry["path"]).name for entry in tested["data"]] == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    assert len(sessions_of(run)) == 2  # the training's record is left alone


def test_a_data_file_is_hashed_once_until_its_size_or_time_changes(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    hashed = []
    real_sha256 = fingerprints.sha256_of
    monkeypatch.setattr(fingerprints, "sha256_of", lambda path: hashed.append(path) or real_sha256(path))
    data = tmp_path / "images.idx"
    data.write_bytes(b"\x00" * 1000)
    first = fingerprints.file_hashes([data])
    assert fingerprints.file_hashes([data]) == first and len(hashed) == 1  # from the cache file
    assert first[0]["sha256"] == hashlib.sha256(b"\x00" * 1000).hexdigest()
    data.write_bytes(b"\x01" * 1000)  # the same size, a new modification time
    assert fingerprints.file_hashes([data])[0]["sha256"] == hashlib.sha256(b"\x01" * 1000).hexdigest()
    assert len(hashed) == 2
    cached = json.loads(fingerprints.hash_cache_path().read_text())["files"]
    assert cached[str(data.resolve())]["size"] == 1000


def test_the_cudnn_version_is_recorded_without_loading_cudnn_on_a_cpu_run():
    """Asking torch for cuDNN's version loads more of the library (libcudnn_graph: 52 MB of resident memory
    on a CPU-only run, which never uses it): a process without CUDA in use reads the installed wheel's."""
    wheels = {
        distribution.metadata["Name"].lower(): distribution.version
        for distribution in importlib.metadata.distributions()
        if (distribution.metadata["Name"] or "").lower().startswith("nvidia-cudnn-cu")
    }
    code = (
        "import json, torch; from mnist_lightning.callbacks.fingerprints import package_versions; "
        "libraries = lambda: {line.split('/')[-1].strip() for line in open('/proc/self/maps') "
        "if 'cudnn' in line}; "
        "before = libraries(); versions, _ = package_versions(); "
        "print(json.dumps([versions['cudnn'], sorted(libraries() - before)]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    recorded, loaded = json.loads(result.stdout.splitlines()[-1])
    assert loaded == []  # (importing torch maps libcudnn.so itself)
    assert recorded == (wheels[max(wheels)] if wheels else None)
