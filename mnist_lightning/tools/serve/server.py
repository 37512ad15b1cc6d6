"""``python -m mnist_lightning serve``: the classifier over HTTP with LitServe, and a page to draw digits on.

- ``POST /predict`` with ``{"image": "<base64 PNG or JPEG, a data URL prefix is fine>"}`` answers
  ``{"prediction": 7, "label": "7", "confidence": 0.98, "probabilities": [...]}``. The image is prepared as
  ``predict`` prepares image files (grayscale, auto-invert, fit, centre: ``mnist_lightning.data.images``).
- ``GET /`` is the drawing page (``static/draw.html``), ``GET /favicon.ico`` its icon; ``GET /health`` and
  ``GET /info`` (the class names) are LitServe's.
- The body is read as JSON whatever its ``Content-Type`` (``curl -d`` sends a form's).
- A bad request gets a 4xx with ``{"detail": "what was wrong"}``: 400 for a body that is not JSON, has no
  ``image``, or whose image is not base64, not an image, or blank; 413 for a body over ``--max_request_mb``.

LitServe answers HTTP in ``--api_servers`` processes, which decode and prepare each image, and runs the
network in ``--workers`` worker processes (``--threads`` each), which batch the requests queued for them
(``--max_batch_size``, ``--batch_timeout``); requests and answers travel between them through pipes
(``--pipes``; ``transport.py``). Ctrl-C or SIGTERM stops the server and its processes.
"""

# No ``from __future__ import annotations``: LitServer reads the type of decode_request's ``request`` to let
# FastAPI validate the body as a DigitRequest, and a string annotation would not be resolved.
import argparse
import errno
import gc
import json
import multiprocessing
import os
import signal
import socket
import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from queue import Empty
from typing import Any

import litserve as ls
import numpy as np
import torch
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from litserve.loops import BatchedLoop
from starlette.middleware.gzip import GZipMiddleware

from mnist_lightning import compat
from mnist_lightning.cli.console import CommandParser
from mnist_lightning.data.images import FIELD
from mnist_lightning.errors import UserError
from mnist_lightning.tools.export import (
    Predictor,
    add_trust_option,
    load_exported,
    load_probability_model,
)
from mnist_lightning.tools.serve.requests import (
    DigitRequest,
    JsonBody,
    body_too_large_response,
    validation_error_response,
)
from mnist_lightning.tools.serve.transport import PipeTransport

HOSTS = ("127.0.0.1", "0.0.0.0", "::")  # the addresses LitServer.run accepts
FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" '
    'fill="#4a7bd0"/><path d="M9 8h14l-8 17" fill="none" stroke="#fff" stroke-width="4" '
    'stroke-linecap="round" stroke-linejoin="round"/></svg>'
)


@dataclass(frozen=True)
class ModelSource:
    """What to serve: a checkpoint (``--ckpt_path``) or a file written by ``export`` (``--model``)."""

    path: str
    exported: bool
    trusted_modules: tuple[
        str, ...
    ] = ()  # --trust: modules of the user's whose classes a checkpoint may name

    def load_predictor(self, threads: int | None = None) -> Predictor:
        """float32 images (N, 1, 28, 28) in [0, 1] -> class probabilities (N, C), computed with ``threads``
        intra-op threads (the runtime's default, one per core, when None). One thread suits the small
        batches of a server: more spin or wait for work, on cores the HTTP processes need."""
        if self.exported:
            return load_exported(self.path, threads)[0]
        if threads is not None:
            torch.set_num_threads(threads)
        model, _ = load_probability_model(self.path, self.trusted_modules)

        def predict(images: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(images)).numpy()

        return predict

    def class_names(self) -> list[str]:
        """The class names; loading the model for them reports a bad file as a UserError before any server
        process starts."""
        if not self.exported:
            return list(load_probability_model(self.path, self.trusted_modules)[1].classes)
        if not Path(self.path).is_file():
            raise UserError(f"--model '{self.path}' does not exist; write one with 'export'.")
        try:
            metadata = load_exported(self.path)[1]
        except UserError:
            raise
        except Exception as err:  # onnxruntime and torch.export raise their own types for a bad file
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            raise UserError(f"--model '{self.path}' cannot be loaded ({reason}).") from None
        if "classes" not in metadata:
            raise UserError(
                f"--model '{self.path}' has no class names in its metadata; write it with 'export'."
            )
        return json.loads(metadata["classes"])


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

    Requests arrive as prepared digits (see :class:`DigitRequest`); LitServe stacks up to ``max_batch_size``
    of them into one forward pass.
    """

    def __init__(
        self,
        source: ModelSource,
        classes: list[str],
        max_batch_size: int,
        batch_timeout: float,
        threads: int | None = 1,
    ) -> None:
        super().__init__(
            max_batch_size=max_batch_size,
            batch_timeout=batch_timeout,
            api_path="/predict",
            loop=FirstRequestLoop(),
        )
        self.source, self.classes, self.threads = source, classes, threads
        if os.environ.get("LIT_SERVER_API_KEY"):
            self.authorize = None  # LitServe's own check of the X-API-Key header applies instead

    async def authorize(self) -> None:
        """No authentication. LitServe runs a LitAPI's ``authorize`` as a FastAPI dependency of each route;
        without one it uses a plain function, which FastAPI runs in a thread of its pool, a thread switch
        per request. Asynchronous, this one runs in the event loop."""

    def setup(self, device: str) -> None:
        # This worker process ends when the server shuts down; Ctrl-C in a terminal reaches every process of
        # the server, and here it would interrupt LitServe's loop with a traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.predict_probabilities = self.source.load_predictor(self.threads)
        freeze_imported_objects()

    def decode_request(self, request: DigitRequest) -> np.ndarray:
        return np.frombuffer(request.image, dtype=np.uint8).reshape(FIELD, FIELD)

    def batch(self, digits: list[np.ndarray]) -> np.ndarray:
        return (np.stack(digits)[:, None] / np.float32(255)).astype(np.float32)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.predict_probabilities(images)

    def unbatch(self, probabilities: np.ndarray) -> list[np.ndarray]:
        return list(probabilities)

    def encode_response(self, probabilities: np.ndarray) -> dict[str, Any]:
        best = int(probabilities.argmax())
        return {
            "prediction": best,
            "label": self.classes[best],
            "confidence": float(probabilities[best]),
            "probabilities": probabilities.tolist(),
        }


def draw_page(request: Request) -> HTMLResponse:
    return HTMLResponse(
        files("mnist_lightning.tools.serve").joinpath("static/draw.html").read_text(encoding="utf-8")
    )


def favicon(request: Request) -> Response:
    """The page's icon, a white 7 on blue (browsers ask for /favicon.ico; an SVG there is fine)."""
    return Response(FAVICON, media_type="image/svg+xml")


def build_server(
    api: DigitClassifierAPI, max_request_bytes: int, workers: int = 1, pipes: bool = True
) -> ls.LitServer:
    """A LitServer for ``api`` with ``workers`` inference workers: a body over ``max_request_bytes`` gets a
    413, a bad one a 400, GET / the page; the body of POST /predict is JSON whatever its Content-Type;
    ``pipes``: requests and answers through pipes (a ``multiprocessing.Queue``, a :class:`PipeTransport`)
    rather than LitServe's Manager queues.

    LitServer answers ``GET /`` with "litserve running" itself; that route is replaced by the page.
    """
    server = ls.LitServer(
        api,
        accelerator="cpu",
        workers_per_device=workers,
        max_payload_size=max_request_bytes,
        model_metadata={"classes": api.classes},
    )
    server.app.router.routes[:] = [
        route for route in server.app.router.routes if getattr(route, "path", "") != "/"
    ]
    server.app.add_api_route(
        "/", draw_page, methods=["GET"], response_class=HTMLResponse, include_in_schema=False
    )
    server.app.add_api_route("/favicon.ico", favicon, methods=["GET"], include_in_schema=False)
    if pipes:
        compat.replace_litserve_queues(server, multiprocessing.get_context("spawn").Queue, PipeTransport)
    # LitServe compresses answers over 1,000 bytes: an answer of /predict is about 300, and wrapping each in
    # GZipMiddleware's responder cost an HTTP process time under load for nothing (benchmarks/NOTES.md)
    server.app.user_middleware = [
        middleware for middleware in server.app.user_middleware if middleware.cls is not GZipMiddleware
    ]
    server.app.add_middleware(JsonBody)
    server.app.add_exception_handler(RequestValidationError, validation_error_response)
    server.app.add_exception_handler(413, body_too_large_response(max_request_bytes))
    return server


def freeze_imported_objects() -> None:
    """Leave the objects that exist now (mostly those of the imported libraries: torch, onnxruntime, FastAPI,
    about 480,000) out of this process's future garbage collections.

    Under load, the objects of requests in flight survive into the oldest generation, so Python runs a full
    collection every few seconds; each went through all those objects, a pause during which the process
    answered nothing and every request in flight waited (measured in benchmarks/NOTES.md, Serving).
    """
    gc.collect()
    gc.freeze()


def check_can_listen(host: str, port: int) -> None:
    """Bind ``host:port`` as uvicorn will (SO_REUSEADDR) and let it go; a UserError saying what to do when
    that fails, before anything is started or printed (uvicorn would log the error and exit with status 3)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as err:
        reason = err.strerror or str(err)
        if err.errno == errno.EADDRINUSE:
            advice = f"another program listens on port {port}: stop it, or choose another --port"
        elif err.errno == errno.EACCES:
            advice = "this user may not listen there: choose another --port"
        else:
            advice = "this machine has no such address: choose another --host (127.0.0.1: this machine only)"
        raise UserError(f"cannot listen on {host} port {port} ({reason}); {advice}.") from None


def stop_on_signals() -> None:
    """Ctrl-C (SIGINT) and SIGTERM stop the server by the shutdown LitServer.run does on KeyboardInterrupt.

    LitServer forks its HTTP server processes from this one, so they inherit these handlers; uvicorn there
    re-raises the signal it stopped on once it is done, and the handler then takes the default action (the
    process ends quietly) instead of raising a KeyboardInterrupt that multiprocessing would print.
    """
    server_pid = os.getpid()

    def stop(signum, frame):
        if os.getpid() == server_pid:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop)


def main(args: list[str]) -> None:
    """``python -m mnist_lightning serve --ckpt_path CKPT | --model FILE.onnx [--host H] [--port P]``."""
    parser = CommandParser(
        "serve",
        description="Serve the classifier over HTTP (LitServe): POST /predict, and a page to draw on at /.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt_path", help="checkpoint written by 'fit'")
    source.add_argument("--model", help="a file written by 'export' (.onnx or .pt2)")
    add_trust_option(parser)
    parser.add_argument("--host", default="127.0.0.1", choices=HOSTS, help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (1024-65535)")
    parser.add_argument(
        "--max_batch_size", type=int, default=32, help="most requests per forward pass (>= 2)"
    )
    parser.add_argument(
        "--batch_timeout", type=float, default=0.0,
        help="seconds a batch waits for more requests after its first (0: takes those already queued)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, help="inference worker processes (>= 1)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of each worker (>= 1)")
    parser.add_argument("--api_servers", type=int, default=2, help="HTTP server processes (>= 1)")
    parser.add_argument(
        "--pipes", action=argparse.BooleanOptionalAction, default=True,
        help="requests to the workers and answers back through pipes (--no-pipes: LitServe's Manager queues)",
    )  # fmt: skip
    parser.add_argument("--max_request_mb", type=float, default=4.0, help="largest accepted request body, MB")
    parser.add_argument(
        "--log_level", default="warning", choices=("debug", "info", "warning", "error"), help="server logs"
    )
    options = parser.parse_args(args)
    if not 1024 <= options.port <= 65535:
        parser.error(f"--port must be between 1024 and 65535, got {options.port}")
    if options.max_batch_size < 2:
        parser.error(f"--max_batch_size must be at least 2, got {options.max_batch_size}")
    if not options.batch_timeout >= 0:
        parser.error(f"--batch_timeout must be 0 seconds or more, got {options.batch_timeout}")
    for name in ("workers", "threads", "api_servers"):
        if getattr(options, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(options, name)}")
    if not options.max_request_mb > 0:
        parser.error(f"--max_request_mb must be greater than 0, got {options.max_request_mb}")

    model_source = ModelSource(
        options.model or options.ckpt_path,
        exported=options.model is not None,
        trusted_modules=tuple(options.trust),
    )
    classes = model_source.class_names()
    api = DigitClassifierAPI(
        model_source, classes, options.max_batch_size, options.batch_timeout, options.threads
    )
    server = build_server(
        api, int(options.max_request_mb * 1_000_000), workers=options.workers, pipes=options.pipes
    )
    check_can_listen(options.host, options.port)
    stop_on_signals()
    freeze_imported_objects()  # the HTTP processes are forked from this one after this
    print(
        f"Serving {model_source.path} at http://{options.host}:{options.port}/ (Ctrl-C stops it)", flush=True
    )
    server.run(
        host=options.host,
        port=options.port,
        num_api_servers=options.api_servers,
        log_level=options.log_level,
        generate_client_file=False,
    )
    print("Server stopped.", file=sys.stderr, flush=True)
