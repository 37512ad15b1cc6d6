"""The command line as tests run it: paths, the quick options, subprocesses with the network blocked, and
which modules a process imported."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# the real MNIST files: MNIST_DATA_DIR, else the project's own data folder (downloaded there when missing)
REAL_DATA_DIR = Path(os.environ.get("MNIST_DATA_DIR") or REPO / "data")
CONFIG = REPO / "configs" / "default.yaml"
OFFLINE = Path(__file__).resolve().parent / "offline"  # its sitecustomize blocks the network in subprocesses


def _load_offline_guard():
    spec = importlib.util.spec_from_file_location("offline_guard", OFFLINE / "sitecustomize.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


OFFLINE_GUARD = _load_offline_guard()


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a test's ``python`` subprocess: this one's, with the network blocked at start-up.

    Warnings are left as a user sees them (no PYTHONWARNINGS=ignore), so a test can see a warning appear.
    """
    path = os.pathsep.join(filter(None, [str(OFFLINE), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


# Arguments that make a CLI run small: a couple of small batches per epoch, no progress bar; QUICK: one epoch.
SMALL = (
    "--trainer.limit_train_batches=4",
    "--trainer.limit_val_batches=2",
    "--trainer.enable_progress_bar=false",
    "--data.batch_size=32",
    "--data.val_size=64",
)
QUICK = ("--trainer.max_epochs=1", *SMALL)


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
# Optuna; export: onnx, onnxruntime; serve: LitServe), and the trackers' (MLflow, W&B) without their preset
OTHER_COMMANDS = (
    "mnist_lightning.tools.sweep.command", "mnist_lightning.tools.runs.command",
    "mnist_lightning.tools.export", "mnist_lightning.tools.serve.server", "mnist_lightning.tools.lr_find",
    "optuna", "onnx", "onnxruntime", "onnxscript", "litserve", "mlflow", "wandb",
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
