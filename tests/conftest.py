"""Shared fixtures: tiny MNIST-format IDX files written by the tests, the real data, the network blocked, a
tiny checkpoint and the server subprocesses. Functions the tests share live in ``tests/helpers``."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest
import torch

from helpers.commands import CONFIG, OFFLINE_GUARD, QUICK, REAL_DATA_DIR, REPO
from helpers.idx import write_idx, write_mnist

# Tiny models on a shared 2-core CPU: one thread per process (this one and every subprocess) is the fastest,
# and threads that wait for each other on a busy machine the slowest (a test took 7 s on one, 138 s on two).
if "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs as on an offline machine: connections that leave it fail at once (loopback works)."""
    monkeypatch.setattr("socket.socket.connect", OFFLINE_GUARD.connect)
    monkeypatch.setattr("socket.socket.connect_ex", OFFLINE_GUARD.connect_ex)


# The files that take longest, longest first (pytest --durations on a 2-core machine): pytest-xdist hands out
# whole files in collection order (--no-loadscope-reorder keeps it, rather than most tests first), so these
# start at once and the short files fill in around them, instead of one worker finishing a long file alone.
LONGEST_FILES = (
    "test_sweep", "test_serve", "test_page", "test_serve_exposure", "test_promises", "test_resume",
    "test_export", "test_tracking", "test_distributed", "test_cli", "test_kfold", "test_swap", "test_predict",
    "test_lr_find", "test_trackers", "test_bad_input", "test_provenance", "test_sweep_report",
)  # fmt: skip
# The files whose tests use the digit server (``server``, ``guarded_server``): one unit of work for
# pytest-xdist, so that one worker trains digit_checkpoint and starts each server once.
SERVED_FILES = ("test_serve", "test_page", "test_serve_exposure")


def pytest_collection_modifyitems(items) -> None:
    """Tests that use the real MNIST files or the server subprocess are ``slow`` (as are the tests marked so
    for the processes they start): ``pytest -m "not slow"`` is the quick inner loop. Longest files first."""
    for item in items:
        if {"real_data", "server"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: a file's own order is kept


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` with the SERVED_FILES as one unit; other ``--dist`` modes left to pytest-xdist."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ServedFilesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return "the files of the digit server" if Path(path).stem in SERVED_FILES else path

    return ServedFilesTogether(config, log)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A data_dir holding tiny synthetic MNIST files (512 train, 128 test); treat as read-only."""
    return write_mnist(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The folder with the real MNIST raw files: MNIST_DATA_DIR, else the project's ``data/``.

    Missing files are downloaded there as the CLI would (a session fixture, set up before the network is
    blocked for the test); offline and without them the test fails with the CLI's own message.
    """
    from mnist_lightning.data.datamodule import MNISTDataModule
    from mnist_lightning.errors import UserError

    try:
        MNISTDataModule(data_dir=str(REAL_DATA_DIR)).prepare_data()
    except UserError as err:
        pytest.fail(f"error: {err} (the tests read MNIST_DATA_DIR, else {REPO / 'data'})", pytrace=False)
    return REAL_DATA_DIR


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_data) -> Path:
    """The best checkpoint of a QUICK command-line fit on tiny_data (it still errs); treat as read-only."""
    from helpers.inprocess import run_main

    folder = tmp_path_factory.mktemp("tiny_fit")
    status, stdout, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={tiny_data}", *QUICK, cwd=folder
    )
    assert status == 0, stderr[-3000:]
    return folder / re.search(r"Best checkpoint: (\S+)", stdout).group(1)


@pytest.fixture(scope="session")
def digit_data(tmp_path_factory) -> Path:
    """A data_dir whose MNIST files hold pictures of printed digits prepared as MNIST digits (800 train, 100
    test), so a model trained on them recognizes the pictures the serve tests send; treat as read-only."""
    from helpers.serving import prepared_digits

    data_dir = tmp_path_factory.mktemp("digits")
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count, seed in (("train", 800, 0), ("t10k", 100, 1)):
        images, labels = prepared_digits(count, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return data_dir


@pytest.fixture(scope="session")
def digit_checkpoint(tmp_path_factory, digit_data) -> Path:
    """The best checkpoint of a short fit (in this process) on digit_data; treat as read-only."""
    from helpers.inprocess import run_main

    folder = tmp_path_factory.mktemp("digit_fit")
    status, stdout, stderr = run_main(
        "fit", "--config", CONFIG, f"--data.data_dir={digit_data}", "--trainer.max_epochs=8",
        "--trainer.enable_progress_bar=false", "--data.batch_size=32", "--data.val_size=100", cwd=folder,
    )  # fmt: skip
    assert status == 0, stderr[-3000:]
    return folder / re.search(r"Best checkpoint: (\S+)", stdout).group(1)


@pytest.fixture(scope="session")
def server(tmp_path_factory, digit_checkpoint):
    """``serve --ckpt_path digit_checkpoint`` running as a subprocess; stopped with SIGTERM at the end, which
    must end it cleanly."""
    from helpers.serving import ServerProcess

    served = ServerProcess("--ckpt_path", digit_checkpoint, cwd=tmp_path_factory.mktemp("serve"))
    yield served
    assert served.stop(signal.SIGTERM) == 0, served.stderr()[-3000:]
    assert "Traceback" not in served.stderr(), served.stderr()[-3000:]


@pytest.fixture(scope="session")
def guarded_server(tmp_path_factory, digit_checkpoint):
    """``serve`` as one exposes it: on ``localhost``, with an API key (``GUARDED_KEY``), a short read timeout
    (``GUARDED_READ_TIMEOUT``) and ``--docs``; stopped with SIGTERM at the end, which must end it cleanly."""
    from helpers.serving import GUARDED_KEY, GUARDED_READ_TIMEOUT, ServerProcess

    served = ServerProcess(
        "--ckpt_path", digit_checkpoint, "--host", "localhost", "--api_key", GUARDED_KEY,
        "--read_timeout", GUARDED_READ_TIMEOUT, "--docs", cwd=tmp_path_factory.mktemp("guarded"),
        host="localhost", api_key=GUARDED_KEY,
    )  # fmt: skip
    yield served
    assert served.stop(signal.SIGTERM) == 0, served.stderr()[-3000:]
    assert "Traceback" not in served.stderr(), served.stderr()[-3000:]
