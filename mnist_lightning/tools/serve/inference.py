"""What ``serve``'s inference workers run: the model behind ``POST /predict`` (a checkpoint or an exported
file), as a LitServe ``LitAPI`` whose batches start when a request arrives.

Torch and Lightning are imported only to serve a checkpoint (or a ``.pt2`` file): a server of an ONNX file
runs on onnxruntime, NumPy and Pillow, and none of its processes imports them."""

# No ``from __future__ import annotations``: LitServer reads the type of decode_request's ``request`` to let
# FastAPI validate the body as a DigitRequest, and a string annotation would not be resolved.
import gc
import json
import signal
from dataclasses import dataclass, replace
from pathlib import Path
from queue import Empty
from typing import Any

import litserve as ls
import numpy as np
from litserve.loops import BatchedLoop

from mnist_lightning.cli.quiet import reading_exported
from mnist_lightning.data.digits import FIELD
from mnist_lightning.errors import UserError
from mnist_lightning.tools.exported_files import Predictor, load_exported
from mnist_lightning.tools.serve.guards import ApiKeyCheck
from mnist_lightning.tools.serve.model_versions import ModelFolder, ServedModel
from mnist_lightning.tools.serve.operations import WorkerMetrics
from mnist_lightning.tools.serve.requests import DigitRequest


@dataclass(frozen=True)
class ModelSource:
    """What to serve: a checkpoint (``--ckpt_path``) or a file written by ``export`` (``--model``)."""

    path: str
    exported: bool
    trusted_modules: tuple[
        str, ...
    ] = ()  # --trust: modules of the user's whose classes a checkpoint may name

    def load(self, threads: int | None = None) -> tuple[Predictor, list[str]]:
        """The model, loaded once: float32 images (N, 1, 28, 28) in [0, 1] -> class probabilities (N, C),
        computed with ``threads`` intra-op threads (the runtime's default, one per core, when None; one suits
        the small batches of a server: more spin or wait for work, on cores the HTTP processes need), and its
        class names. A file that does not load raises what its loader raises."""
        if self.exported:
            predict, metadata = load_exported(self.path, threads)
            if "classes" not in metadata:
                raise UserError(
                    f"--model '{self.path}' has no class names in its metadata; write it with 'export'."
                )
            return predict, json.loads(metadata["classes"])
        import torch

        from mnist_lightning.tools.export import load_probability_model

        if threads is not None:
            torch.set_num_threads(threads)
        model, spec = load_probability_model(self.path, self.trusted_modules)

        def predict(images: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(images)).numpy()

        return predict, list(spec.classes)

    def class_names(self) -> list[str]:
        """The class names; loading the model for them reports a bad file as a UserError before any server
        process starts."""
        if not self.exported:
            return self.load()[1]
        if not Path(self.path).is_file():
            raise UserError(f"--model '{self.path}' does not exist; write one with 'export'.")
        try:
            with reading_exported():
                return self.load()[1]
        except UserError:
            raise
        except Exception as err:  # onnxruntime and torch.export raise their own types for a bad file
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            raise UserError(f"--model '{self.path}' cannot be loaded ({reason}).") from None


class PrefetchedQueue:
    """A request queue whose next item is one already taken from it."""

    def __init__(self, first: Any, queue: Any) -> None:
        self.first, self.queue = first, queue

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if self.first is not None:
            first, self.first = self.first, None
            return first
        return self.queue.get(block, timeout)

    def get_nowait(self) -> Any:
        return self.get(block=False)


class FirstRequestLoop(BatchedLoop):
    """LitServe's batched loop, whose batch starts when a request arrives.

    LitServe's own collects a batch by polling the queue (every millisecond) until ``batch_timeout`` has
    passed or the batch is full, whether or not a request came: a lone request waits the whole timeout, and
    an idle server polls. This one waits for the first request without polling, then lets LitServe collect
    the rest: the requests already queued (``batch_timeout`` 0) or those that arrive within ``batch_timeout``.
    """

    def get_batch_requests(self, lit_api: ls.LitAPI, request_queue: Any, transport: Any) -> tuple[list, list]:
        try:
            first = request_queue.get(timeout=1.0)  # at most a second, as LitServe's loops wait
        except Empty:
            return [], []
        return super().get_batch_requests(lit_api, PrefetchedQueue(first, request_queue), transport)


class DigitClassifierAPI(ls.LitAPI):
    """The model behind ``POST /predict``: a checkpoint, or an exported ``.onnx``/``.pt2`` file.

    Requests arrive as prepared digits, 784 bytes each (see :mod:`preparing`); LitServe stacks up to
    ``max_batch_size`` of them into one forward pass. ``api_key``: the key ``POST /predict`` needs in its
    ``X-API-Key`` header (none when None); LitServe runs ``authorize`` as a dependency of the route.
    ``folder``: ``--model_dir``, whose newest file replaces the model served (``model_versions.py``). Every
    answer names the version of the model that computed it.
    """

    def __init__(
        self,
        source: ModelSource,
        classes: list[str],
        max_batch_size: int,
        batch_timeout: float,
        threads: int | None = 1,
        api_key: str | None = None,
        folder: ModelFolder | None = None,
    ) -> None:
        super().__init__(
            max_batch_size=max_batch_size,
            batch_timeout=batch_timeout,
            api_path="/predict",
            loop=FirstRequestLoop(),
        )
        self.source, self.classes, self.threads, self.folder = source, classes, threads, folder
        self.authorize = ApiKeyCheck(api_key)

    def setup(self, device: str) -> None:
        # This worker process ends when the server shuts down; Ctrl-C in a terminal reaches every process of
        # the server, and here it would interrupt LitServe's loop with a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.metrics = WorkerMetrics(self.max_batch_size)
        self.model = ServedModel(
            self.load, self.classes, self.folder, self.metrics.serving, self.metrics.refused
        )
        self.model.start(self.source.path)  # loaded, and a warm-up batch answered, before the worker is ready
        self.model.watch_in_background()
        signal.signal(signal.SIGHUP, lambda signum, frame: self.model.reload() if self.folder else None)
        freeze_imported_objects()

    def load(self, path: str) -> tuple[Predictor, list[str]]:
        """The model of ``path`` (the source's, or a file of the folder) and its class names."""
        return replace(self.source, path=path).load(self.threads)

    def decode_request(self, request: DigitRequest) -> np.ndarray:
        """``request``: the 784 bytes of a prepared digit. The annotation is the body LitServe's route would
        read; ``server.prepare_off_the_event_loop`` replaces that route and hands LitServe prepared digits."""
        return np.frombuffer(request, dtype=np.uint8).reshape(FIELD, FIELD)

    def batch(self, digits: list[np.ndarray]) -> np.ndarray:
        return (np.stack(digits)[:, None] / np.float32(255)).astype(np.float32)

    def predict(self, images: np.ndarray) -> tuple[np.ndarray, str]:
        self.metrics.observe_batch(len(images))
        return self.model.predict(images)

    def unbatch(self, answers: tuple[np.ndarray, str]) -> list[tuple[np.ndarray, str]]:
        probabilities, version = answers
        return [(row, version) for row in probabilities]

    def encode_response(self, answer: tuple[np.ndarray, str]) -> dict[str, Any]:
        probabilities, version = answer
        best = int(probabilities.argmax())
        return {
            "prediction": best,
            "label": self.classes[best],
            "confidence": float(probabilities[best]),
            "probabilities": probabilities.tolist(),
            "model_version": version,
        }


def freeze_imported_objects() -> None:
    """Leave the objects that exist now (mostly those of the imported libraries: torch, onnxruntime, FastAPI,
    about 480,000) out of this process's future garbage collections.

    Under load, the objects of requests in flight survive into the oldest generation, so Python runs a full
    collection every few seconds; each went through all those objects, 250-300 ms during which the process
    answered nothing (every request in flight waited: p99 at 64 connections 350-470 ms, p50 55-75 ms).
    """
    gc.collect()
    gc.freeze()
