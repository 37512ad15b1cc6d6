"""A run's folder, the one description of it: where a run and its evaluations keep their files, what each
file is called, and which ``version_N`` a new run gets. Every writer (the callbacks, the command line) and
every reader (``runs``, ``--ckpt_path last``) takes names from here; ``tests/test_run_layout.py`` finds any
file name written elsewhere. Torch-free: ``runs`` reads runs with it without importing torch or Lightning.

::

    <log folder>/version_N/                  a run (a sweep's trial: <sweep folder>/trial_N/)
        config.yaml  hparams.yaml  summary.json  provenance.json  trackers.json  metrics.csv
        requirements.txt  code.diff          (a resumed fit's later sessions: requirements.session2.txt, ...)
        checkpoints/  epoch=3-val_acc=0.9712.ckpt  last.ckpt  interrupted.ckpt
                      .last.ckpt.partial     (a write cut short by a kill: removed as the next fit starts)
        <stage>/<checkpoint name>/           an evaluation (test, validate; predict: one folder further per
            config.yaml  provenance.json  metrics.json  report files  predictions.csv      input)
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

# where runs go unless told otherwise: the default recipe's save_dir (configs/default.yaml), the folder of
# runs without a folder logger, what `runs` lists; a sweep's and a learning-rate search's folders under it
LOG_ROOT = "lightning_logs"
SWEEPS_FOLDER = "sweeps"  # <log root>/sweeps/<study>/trial_N
LR_FIND_FOLDER = "lr_find"  # <log root>/lr_find/version_N

# a run's own files
CONFIG_FILE = "config.yaml"  # the command's whole configuration (SaveConfigCallback's config_filename)
HPARAMS_FILE = "hparams.yaml"  # the logger's record of the hyperparameters
SUMMARY_FILE = "summary.json"  # fit: settings, status and results (callbacks/run_summary.py)
PROVENANCE_FILE = "provenance.json"  # code, environment, command and data of each session
TRACKERS_FILE = "trackers.json"  # the run's MLflow/W&B runs, continued by later commands
CSV_METRICS_FILE = "metrics.csv"  # a CSVLogger's metrics (Lightning names it)
CHECKPOINTS_FOLDER = "checkpoints"  # where ModelCheckpoint writes (Lightning's <log_dir>/checkpoints)
LAST_CHECKPOINT = "last.ckpt"  # after every epoch (the default recipe's second ModelCheckpoint)
INTERRUPTED_CHECKPOINT = "interrupted.ckpt"  # on Ctrl-C or SIGTERM (callbacks/interrupt.py)
RESUMABLE_NAMES = (LAST_CHECKPOINT, INTERRUPTED_CHECKPOINT)  # what --ckpt_path last resumes from
# the monitored checkpoints' names, as the default recipe's ModelCheckpoint writes them
# ("epoch={epoch}-val_acc={val_acc:.4f}", "-v1" when the name was taken): epoch and score
SCORED_CHECKPOINT = re.compile(r"epoch=(\d+)-val_acc=([0-9.]+?)(?:-v\d+)?\.ckpt$")
RUN_MARKERS = (HPARAMS_FILE, SUMMARY_FILE)  # a folder holding one of these is a run's folder

# an evaluation's files
METRICS_FILE = "metrics.json"  # test: the test metrics
PREDICTIONS_FILE = "predictions.csv"  # predict: one row per input
CLASSIFICATION_REPORT_FILE = "classification_report.txt"
REPORT_NUMBERS_FILE = "report.json"
CONFUSION_CSV_FILE = "confusion_matrix.csv"
CONFUSION_IMAGE_FILE = "confusion_matrix.png"
MISCLASSIFIED_IMAGE_FILE = "misclassified.png"
REPORT_FILES = (  # test: the report (callbacks/test_report.py)
    CLASSIFICATION_REPORT_FILE,
    REPORT_NUMBERS_FILE,
    CONFUSION_CSV_FILE,
    CONFUSION_IMAGE_FILE,
    MISCLASSIFIED_IMAGE_FILE,
)
TEST_SET_INPUT = "test_set"  # predict's input folder for the data set's test split
PARTIAL_SUFFIX = ".partial"  # a checkpoint being written: .<name>.partial (partial_file_name)


def session_file_names(index: int) -> tuple[str, str]:
    """The diff and the package list of the ``index``-th session (0 = the first) of a run's folder:
    ``code.diff`` and ``requirements.txt``, then ``code.session2.diff``, ``requirements.session2.txt``."""
    suffix = "" if index == 0 else f".session{index + 1}"
    return f"code{suffix}.diff", f"requirements{suffix}.txt"


def partial_file_name(name: str) -> str:
    """``.<name>.partial``: where a checkpoint ``name`` is written before it is renamed into place
    (``checkpointing/checkpoint_io.py``); one is left behind only by a kill during the write."""
    return f".{name}{PARTIAL_SUFFIX}"


def version_folder_name(version: int) -> str:
    """``version_N``: a run's folder under its log folder, as Lightning's loggers name it."""
    return f"version_{version}"


def trial_folder_name(number: int) -> str:
    """``trial_N``: the run folder of a sweep's trial ``number``, in the sweep's folder."""
    return f"trial_{number}"


def next_version_folder(root: str | Path) -> Path:
    """The folder of a new run under ``root``: ``version_<largest N + 1>`` (``version_0`` in an empty or
    missing folder), the rule Lightning's TensorBoard and CSV loggers follow, so a run never takes a number
    below one that exists (a removed run's number is not reused)."""
    root = Path(root)
    numbers = [
        int(path.name.removeprefix("version_"))
        for path in (root.iterdir() if root.is_dir() else [])
        if path.is_dir() and re.fullmatch(r"version_\d+", path.name)
    ]
    return root / version_folder_name(max(numbers, default=-1) + 1)


def run_folder(trainer: Any) -> Path:
    """The folder a ``Trainer``'s run writes into: its first logger's ``log_dir`` (the command line puts a
    TensorBoard or CSV logger first), or ``trainer.default_root_dir`` without a logger. Every rank must ask:
    ``trainer.log_dir`` is a broadcast under DDP."""
    return Path(trainer.log_dir or trainer.default_root_dir)


def checkpoint_folder(run: str | Path) -> Path:
    """``<run>/checkpoints``: where a run's checkpoints are."""
    return Path(run) / CHECKPOINTS_FOLDER


def run_folder_of(ckpt_path: str | Path) -> Path | None:
    """The run that saved ``ckpt_path``: ``<run>/checkpoints/*.ckpt`` where ``<run>`` holds the logger's
    ``hparams.yaml`` or the ``summary.json`` of fit (a ``version_N``, a sweep's ``trial_N``, a moved run);
    None for a checkpoint outside a run."""
    checkpoint = Path(ckpt_path).resolve()
    run = checkpoint.parent.parent
    if checkpoint.parent.name == CHECKPOINTS_FOLDER and any((run / name).is_file() for name in RUN_MARKERS):
        return run
    return None


def evaluation_folder(stage: str, ckpt_path: str | None, predict_path: str | None = None) -> Path:
    """``<stage>/<checkpoint name>``: where in its run one evaluation of one checkpoint is kept (``<stage>``
    without a checkpoint path); for ``predict``, one folder further per input (:func:`input_name`)."""
    folder = Path(stage, Path(ckpt_path).stem) if ckpt_path else Path(stage)
    return folder / input_name(predict_path) if stage == "predict" else folder


def input_name(predict_path: str | None) -> str:
    """``test_set``, or for image files (``data.predict_path``) the name of the file or folder (of a glob:
    its folder) and a short hash of its whole path: ``my_digits-3fa2c1``. Each input its own folder."""
    if predict_path is None:
        return TEST_SET_INPUT
    path = Path(predict_path).expanduser().absolute()
    name = path.parent.name if any(char in path.name for char in "*?[") else path.name
    readable = re.sub(r"[^\w.-]+", "_", name).strip("_.") or "files"
    return f"{readable}-{hashlib.sha1(str(path).encode()).hexdigest()[:6]}"


def read_json(path: str | Path) -> dict[str, Any]:
    """A run's JSON file (``summary.json``, ``provenance.json``, ``trackers.json``, ``metrics.json``) as a
    dict: {} when it is missing, unreadable or not a JSON object (a run's files are data, perhaps half
    written or from elsewhere)."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}
