"""Which model ``serve`` answers with: its version (file name and SHA-256 prefix), and with ``--model_dir``
the newest model file of a folder, swapped in without a request failing.

Each inference worker holds a :class:`ServedModel`. With a folder, a thread of the worker looks at it every
second (and at once on SIGHUP, which the server's process forwards to its workers: :func:`forward_reloads`):
when the newest ``.onnx``/``.pt2`` file there is not the one served, it is loaded beside the served one, its
class names compared, and it answers a warm-up batch; only then does it become the model of the next batch (a
batch takes the model once, so no answer comes from a model half loaded or half swapped). A file that does not
load, answers with the wrong shape, names other classes or fails its warm-up is refused with one line on
stderr; the served one stays, and the file is not tried again until it changes (or on SIGHUP). Removing the
served file rolls back: the newest file left that loads is served. The files are untrusted data, loaded as
``--model`` loads them (the loader is given by ``inference.py``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_lightning.errors import UserError

SUFFIXES = (".onnx", ".pt2")
POLL_SECONDS = 1.0
WARM_UP_IMAGES = 2
VERSION_HEX = 12  # hex digits of the SHA-256 in a version

Predictor = Callable[[np.ndarray], np.ndarray]  # float32 (N, 1, 28, 28) in [0, 1] -> probabilities (N, C)
Signature = tuple[str, int, int]  # a file's path, modification time (ns) and size: it changed when this did


def version_of(path: str | os.PathLike) -> str:
    """``<file name>@<first 12 hex digits of the file's SHA-256>``."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return f"{Path(path).name}@{digest.hexdigest()[:VERSION_HEX]}"


def signature_of(path: str | os.PathLike) -> Signature:
    stat = os.stat(path)
    return (str(path), stat.st_mtime_ns, stat.st_size)


def model_files(folder: str | os.PathLike) -> list[Signature]:
    """The ``.onnx`` and ``.pt2`` files of ``folder`` (not its subfolders), newest first (by modification
    time; of two as new, the later name first)."""
    files = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.lower().endswith(SUFFIXES) and entry.is_file():
                stat = entry.stat()
                files.append((entry.path, stat.st_mtime_ns, stat.st_size))
    return sorted(files, key=lambda file: (file[1], Path(file[0]).name), reverse=True)


def log(line: str) -> None:
    print(f"serve: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ModelFolder:
    """``--model_dir``: the folder, the files in it the server's process refused before it started, and the
    seconds between two looks at it (``--model_poll``; 0: only on SIGHUP)."""

    path: str
    refused: tuple[Signature, ...] = ()
    poll_s: float = POLL_SECONDS


def first_model(
    folder: str, classes_of: Callable[[str], list[str]], poll_s: float = POLL_SECONDS
) -> tuple[str, list[str], ModelFolder]:
    """The newest file of ``folder`` that loads (``classes_of`` raises UserError for one that does not, which
    is refused with a line on stderr), its class names, and the folder with those refused; a UserError when
    none does."""
    if not Path(folder).is_dir():
        raise UserError(f"--model_dir '{folder}' is not a folder; name the folder 'export' writes files to.")
    refused = []
    for signature in model_files(folder):
        try:
            classes = classes_of(signature[0])
        except UserError as err:
            log(f"refused {Path(signature[0]).name}: {err}")
            refused.append(signature)
            continue
        return signature[0], classes, ModelFolder(folder, tuple(refused), poll_s)
    found = (
        f"none of its {len(refused)} .onnx/.pt2 files loads" if refused else "it has no .onnx or .pt2 file"
    )
    raise UserError(f"--model_dir '{folder}' has no model to serve: {found}; write one there with 'export'.")


def warm_up(predict: Predictor, classes: list[str]) -> None:
    """Run ``predict`` on a batch of blank images; ValueError unless it answers one probability per class for
    each."""
    probabilities = np.asarray(predict(np.zeros((WARM_UP_IMAGES, 1, 28, 28), np.float32)))
    expected = (WARM_UP_IMAGES, len(classes))
    if probabilities.shape != expected:
        raise ValueError(f"it answers a batch of shape {probabilities.shape}, not {expected}")
    if not np.all(np.isfinite(probabilities)) or not np.allclose(probabilities.sum(axis=1), 1, atol=1e-3):
        raise ValueError("its answers to a warm-up batch are not probabilities")


@dataclass(frozen=True)
class LoadedModel:
    predict: Predictor
    version: str
    signature: Signature


class ServedModel:
    """The model an inference worker answers with and, given a folder, its swaps (see the module).

    ``load``: path -> (predictor, class names), raising for a file it refuses; ``classes``: those the server
    answers with, which a new file must have; ``on_switch(version, previous)`` and ``on_refused()``: called
    when a file is served, refused (the worker's metrics)."""

    def __init__(
        self,
        load: Callable[[str], tuple[Predictor, list[str]]],
        classes: list[str],
        folder: ModelFolder | None = None,
        on_switch: Callable[[str, str | None], None] = lambda version, previous: None,
        on_refused: Callable[[], None] = lambda: None,
    ) -> None:
        self.load, self.classes, self.folder = load, classes, folder
        self.on_switch, self.on_refused = on_switch, on_refused
        self.refused: set[Signature] = set(folder.refused) if folder else set()
        # a pipe, not a threading.Event: reload() runs in a SIGHUP handler, and a second SIGHUP arriving while
        # the first held the Event's lock would deadlock the worker's main thread; os.write takes no lock
        self.wake_reader, self.wake_writer = os.pipe()
        os.set_blocking(self.wake_writer, False)
        self.missing_logged = False

    def start(self, path: str) -> None:
        """Load ``path`` and warm it up (a failure raises: the worker fails to start)."""
        self.current = self.prepare(signature_of(path))
        self.on_switch(self.current.version, None)

    def watch_in_background(self) -> None:
        """Watch the folder (if any) in a thread of this process, for as long as it runs."""
        if self.folder is not None:
            threading.Thread(target=self.watch, name="model-versions", daemon=True).start()

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, str]:
        """Probabilities for ``images`` and the version of the model that computed them."""
        model = self.current  # once per batch: a swap meanwhile takes effect at the next one
        return model.predict(images), model.version

    def reload(self) -> None:
        """Look at the folder now, and try again the files refused so far (SIGHUP)."""
        with contextlib.suppress(BlockingIOError):  # the pipe is full: a look is already due
            os.write(self.wake_writer, b"\0")

    def watch(self) -> None:
        while True:
            self.wait_and_look()

    def wait_and_look(self) -> None:
        """Wait for the next look (``poll_s``, or a reload), then look."""
        if select.select([self.wake_reader], [], [], self.folder.poll_s or None)[0]:
            os.read(self.wake_reader, 4096)
            self.refused.clear()
        self.look()

    def look(self) -> None:
        """Serve the newest file of the folder that loads, unless it is served already."""
        try:
            files = model_files(self.folder.path)
        except OSError as err:
            files = []
            reason = err.strerror or str(err)
        else:
            reason = "it has no model file"
        for signature in files:
            if signature == self.current.signature:
                self.missing_logged = False
                return
            if signature in self.refused:
                continue
            try:
                loaded = self.prepare(signature)
            except Exception as err:  # a file from elsewhere: onnxruntime, torch and checks raise their own
                self.refused.add(signature)
                self.on_refused()
                why = " ".join(f"{err}".split()) or type(err).__name__
                log(f"refused {Path(signature[0]).name} ({why}); still serving {self.current.version}")
                continue
            previous, self.current = self.current, loaded
            self.on_switch(loaded.version, previous.version)
            self.missing_logged = False
            log(f"serving {loaded.version} (was {previous.version})")
            return
        if not self.missing_logged and not Path(self.current.signature[0]).is_file():
            self.missing_logged = True
            log(
                f"--model_dir '{self.folder.path}': {reason} that loads; still serving {self.current.version}"
            )

    def prepare(self, signature: Signature) -> LoadedModel:
        """The file loaded and warmed up; raises when it is refused, or changed while it was read."""
        path = signature[0]
        version = version_of(path)
        predict, classes = self.load(path)
        if list(classes) != list(self.classes):
            raise ValueError(f"its classes {list(classes)} are not the served model's {list(self.classes)}")
        warm_up(predict, self.classes)
        if signature_of(path) != signature:
            raise ValueError("it changed while it was loaded; it is tried again once it stops changing")
        return LoadedModel(predict, version, signature)


def forward_reloads(server: Any) -> None:
    """SIGHUP to the server's process is passed on to its inference workers (each then looks at
    ``--model_dir`` at once); its other processes ignore SIGHUP.

    SIGHUP is ignored until the workers are started (``server.launch_inference_worker``), so that a worker
    starts ignoring it (an ignored signal stays ignored in a spawned process) until its ``setup`` handles it;
    the processes forked later inherit the handler, which does nothing in them."""
    server_pid = os.getpid()
    workers: list = []
    launch = server.launch_inference_worker

    def forward(signum: int, frame: Any) -> None:
        if os.getpid() != server_pid:
            return
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.pid, signal.SIGHUP)

    def launch_then_forward(lit_api: Any) -> list:
        started = launch(lit_api)
        workers.extend(started)
        signal.signal(signal.SIGHUP, forward)
        return started

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    server.launch_inference_worker = launch_then_forward
