"""Shared fixtures: tiny MNIST-format IDX files written by the tests, the real data, the network blocked,
and a CLI runner for the few tests that need a real subprocess (the others use ``inprocess.run_main``)."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# the real MNIST files: MNIST_DATA_DIR, else the project's own data folder (downloaded there when missing)
REAL_DATA_DIR = Path(os.environ.get("MNIST_DATA_DIR") or REPO / "data")
CONFIG = REPO / "configs" / "default.yaml"
TINY_TRAIN, TINY_TEST = 512, 128
DIGITS = [str(digit) for digit in range(10)]
OFFLINE = Path(__file__).resolve().parent / "offline"  # its sitecustomize blocks the network in subprocesses

# Tiny models on a shared 2-core CPU: one thread per process (this one and every subprocess) is the fastest,
# and threads that wait for each other on a busy machine the slowest (a test took 7 s on one, 138 s on two).
if "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def _load_offline_guard():
    spec = importlib.util.spec_from_file_location("offline_guard", OFFLINE / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_OFFLINE_GUARD = _load_offline_guard()


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs as on an offline machine: connections that leave it fail at once (loopback works)."""
    monkeypatch.setattr("socket.socket.connect", _OFFLINE_GUARD.connect)
    monkeypatch.setattr("socket.socket.connect_ex", _OFFLINE_GUARD.connect_ex)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a test's ``python`` subprocess: this one's, with the network blocked at start-up.

    Warnings are left as a user sees them (no PYTHONWARNINGS=ignore), so a test can see a warning appear.
    """
    path = os.pathsep.join(filter(None, [str(OFFLINE), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


# The files that take longest, longest first: pytest-xdist hands out whole files in collection order, so these
# start at once and the short files fill in around them, instead of one worker finishing a long file alone.
LONGEST_FILES = ("test_resume", "test_sweep", "test_distributed", "test_promises", "test_serve", "test_cli")


def pytest_collection_modifyitems(items) -> None:
    """Tests that use the real MNIST files or the server subprocess are ``slow`` (as are the tests marked so
    for the processes they start): ``pytest -m "not slow"`` is the quick inner loop. Longest files first."""
    for item in items:
        if {"real_data", "server"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    rank = {name: index for index, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: a file's own order is kept


def write_idx(path: Path, array: torch.Tensor) -> None:
    """Write a uint8 tensor in the IDX format of the original MNIST files (big-endian header, raw bytes)."""
    array = array.to(torch.uint8).contiguous()
    header = struct.pack(">HBB", 0, 0x08, array.dim()) + struct.pack(f">{array.dim()}I", *array.shape)
    path.write_bytes(header + array.numpy().tobytes())


def synthetic_digits(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable fake digits: class k lights a 6x6 patch at a position of its own, on top of noise."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(count) % 10
    labels = labels[torch.randperm(count, generator=generator)]
    images = torch.randint(0, 60, (count, 28, 28), generator=generator)
    for k in range(10):
        row, col = 3 + 8 * (k // 4), 3 + 8 * (k % 4)
        images[labels == k, row : row + 6, col : col + 6] = 255
    return images.to(torch.uint8), labels.to(torch.uint8)


def write_mnist(
    data_dir: Path, train: int = TINY_TRAIN, test: int = TINY_TEST, dataset: str = "MNIST"
) -> Path:
    """Write the four raw IDX files (synthetic content) under ``data_dir/<dataset>/raw``; returns data_dir."""
    raw = data_dir / dataset / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, count, seed in (("train", train, 0), ("t10k", test, 1)):
        images, labels = synthetic_digits(count, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return data_dir


def mnist_normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 MNIST images (N, 28, 28) -> the normalized float batch (N, 1, 28, 28) the model takes."""
    from mnist_lightning.datasets import DATASETS
    from mnist_lightning.sampling import normalize

    return normalize(images, DATASETS["MNIST"].mean, DATASETS["MNIST"].std)


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
    from mnist_lightning.data import MNISTDataModule
    from mnist_lightning.errors import UserError

    try:
        MNISTDataModule(data_dir=str(REAL_DATA_DIR)).prepare_data()
    except UserError as err:
        pytest.fail(f"error: {err} (the tests read MNIST_DATA_DIR, else {REPO / 'data'})", pytrace=False)
    return REAL_DATA_DIR


def run_cli(
    *args: object, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python -m mnist_lightning ARGS`` as a user would, in ``cwd``; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "mnist_lightning", *map(str, args)],
        cwd=cwd,
        env=env or subprocess_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# What fit, validate, test and predict must never import: the other commands' modules and libraries (sweep:
# Optuna; export: onnx, onnxruntime; serve: LitServe)
OTHER_COMMANDS = (
    "mnist_lightning.sweep", "mnist_lightning.runs", "mnist_lightning.export", "mnist_lightning.serve",
    "optuna", "onnx", "onnxruntime", "onnxscript", "litserve",
)  # fmt: skip


def watching_imports(folder: Path) -> dict[str, str]:
    """A subprocess environment that lists every module the process imports on its stderr (Python's
    ``-X importtime``), with empty stand-ins for the other commands' libraries first on the path, so that an
    import of one shows up whether or not the real library is installed."""
    for name in OTHER_COMMANDS:
        if not name.startswith("mnist_lightning."):
            (folder / name).mkdir(parents=True, exist_ok=True)
            (folder / name / "__init__.py").write_text("")
    env = subprocess_env(PYTHONPROFILEIMPORTTIME="1")
    env["PYTHONPATH"] = f"{folder}{os.pathsep}{env['PYTHONPATH']}"
    return env


def imported(stderr: str) -> set[str]:
    """The modules a process run with ``watching_imports`` imported."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def without_import_times(stderr: str) -> str:
    return "\n".join(line for line in stderr.splitlines() if not line.startswith("import time:"))


# Arguments that make a CLI run tiny: a couple of small batches, no progress bar.
QUICK = (
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=4",
    "--trainer.limit_val_batches=2",
    "--trainer.enable_progress_bar=false",
    "--data.batch_size=32",
    "--data.val_size=64",
)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_data) -> Path:
    """The best checkpoint of a QUICK command-line fit on tiny_data (it still errs); treat as read-only."""
    from inprocess import run_main

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
    from serving import prepared_digits

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
    from inprocess import run_main

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
    from serving import ServerProcess

    served = ServerProcess("--ckpt_path", digit_checkpoint, cwd=tmp_path_factory.mktemp("serve"))
    yield served
    assert served.stop(signal.SIGTERM) == 0, served.stderr()[-3000:]
    assert "Traceback" not in served.stderr(), served.stderr()[-3000:]
