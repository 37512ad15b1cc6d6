"""What ``serve`` offers those who run it: ``/metrics`` (Prometheus), ``/livez`` and ``/readyz``.

The metrics are ``prometheus_client``'s, in its multiprocess mode: the server is several processes (the HTTP
processes, forked, and the inference workers, spawned), each of which writes its values to memory-mapped files
in one folder (``PROMETHEUS_MULTIPROC_DIR``, made by :func:`metrics_folder` in the server's process before any
other starts), and ``/metrics`` sums them. LitServe 0.2.19's own support is a ``Logger`` fed by
``LitAPI.log`` through a queue of its ``multiprocessing.Manager`` (a round trip to another process per value)
to one logger process, which would then have to serve the metrics itself; it sees neither the HTTP processes'
answers (status, latency) nor the requests refused before LitServe's route. prometheus_client chooses how
metrics keep their values when it is imported (by ``PROMETHEUS_MULTIPROC_DIR``); :func:`metrics_folder` sets
its choice (``values.ValueClass``, its documented hook) in case it was imported before.

- ``mnist_requests_total{path, status, reason}``: every answer of the HTTP processes; ``reason`` is ``ok`` for
  a 2xx, else the kind of refusal (:data:`REASONS`; the handlers of 400 and 503 name theirs with
  :func:`note_reason`); ``path`` is one of the server's routes, or ``other``.
- ``mnist_predict_seconds``: a histogram of the time ``POST /predict`` took in an HTTP process, from its first
  byte read to its answer.
- ``mnist_batch_size``: a histogram of the number of requests in each forward pass of the workers.
- ``mnist_model_info{version}``: 1 for each model version a worker answers with, 0 for one replaced.
- ``mnist_model_loads_total{result}``: model files loaded (``loaded``) and refused (``refused``) by workers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from typing import Any

MULTIPROCESS_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
REASON_KEY = (
    "mnist_lightning.refusal"  # where a handler notes the kind of its refusal, in the request's scope
)
REASONS = {  # the kind of refusal of each status whose handlers do not name theirs
    400: "bad_request",
    401: "no_api_key",
    403: "cross_origin",
    404: "not_found",
    405: "method_not_allowed",
    408: "body_too_slow",
    413: "body_too_large",
    500: "server_error",
    503: "busy",
    504: "timeout",
}
CLIENT_CLOSED = 499  # nginx's status for a request whose client left before its answer started
LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)


@contextlib.contextmanager
def metrics_folder() -> Iterator[str]:
    """A temporary folder for the metrics of every process of the server, named by
    ``PROMETHEUS_MULTIPROC_DIR`` while the context lasts (the processes started meanwhile inherit it);
    removed at the end."""
    folder = tempfile.mkdtemp(prefix="mnist-serve-metrics-")
    previous = os.environ.get(MULTIPROCESS_VARIABLE)
    os.environ[MULTIPROCESS_VARIABLE] = folder
    from prometheus_client import values

    single_process, values.ValueClass = values.ValueClass, values.MultiProcessValue()
    try:
        yield folder
    finally:
        values.ValueClass = single_process
        if previous is None:
            os.environ.pop(MULTIPROCESS_VARIABLE, None)
        else:
            os.environ[MULTIPROCESS_VARIABLE] = previous
        shutil.rmtree(folder, ignore_errors=True)


def note_reason(scope: dict, reason: str) -> None:
    """Name the kind of refusal (e.g. ``not_an_image``) of the request of ``scope``, for the metrics."""
    noted = scope.get(REASON_KEY)
    if noted is not None:
        noted.append(reason)


def reason_of(status: int, noted: list[str]) -> str:
    """The ``reason`` label of an answer: ``ok`` for a 2xx or 3xx, else the kind a handler noted, else the
    kind of its status."""
    if status < 400:
        return "ok"
    return noted[-1] if noted else REASONS.get(status, "other")


class RequestMetrics:
    """ASGI middleware: counts every answer by path, status and reason, and times ``POST /predict``.

    Pure ASGI rather than Starlette's ``BaseHTTPMiddleware``, which runs each request's app in a task of its
    own and copies its answer through a stream: a cost per request that a server answering thousands a second
    on two cores feels. The metrics are made in each process at its first request (after the fork)."""

    def __init__(self, app: Any, paths: frozenset[str]) -> None:
        self.app, self.paths = app, paths
        self.requests: Any = None
        self.predict_seconds: Any = None
        self.counters: dict[tuple[str, int, str], Any] = {}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        noted: list[str] = []
        scope[REASON_KEY] = noted
        status = CLIENT_CLOSED

        async def send_noting_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            path = scope["path"] if scope["path"] in self.paths else "other"
            if status == CLIENT_CLOSED:
                noted.append("client_closed")
            self.count(path, status, reason_of(status, noted))
            if path == "/predict" and scope["method"] == "POST":
                self.predict_seconds.observe(time.perf_counter() - started)

    def count(self, path: str, status: int, reason: str) -> None:
        if self.requests is None:
            from prometheus_client import Counter, Histogram

            self.requests = Counter(
                "mnist_requests", "Answers of the HTTP processes", ["path", "status", "reason"], registry=None
            )
            self.predict_seconds = Histogram(
                "mnist_predict_seconds",
                "Time to answer POST /predict",
                buckets=LATENCY_BUCKETS,
                registry=None,
            )
        key = (path, status, reason)
        counter = self.counters.get(key)
        if counter is None:
            counter = self.counters[key] = self.requests.labels(path, str(status), reason)
        counter.inc()


class WorkerMetrics:
    """The metrics of an inference worker: the size of each batch, the model versions it answers with, the
    model files it loaded or refused.

    Like :class:`RequestMetrics`' they are in no registry: ``/metrics`` reads every process's files."""

    def __init__(self, max_batch_size: int) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        buckets = [size for size in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if size < max_batch_size]
        self.batch_sizes = Histogram(
            "mnist_batch_size", "Requests per forward pass", buckets=[*buckets, max_batch_size], registry=None
        )
        self.model_info = Gauge(
            "mnist_model_info", "1 for a model version a worker answers with", ["version"],
            multiprocess_mode="max", registry=None,
        )  # fmt: skip
        self.model_loads = Counter(
            "mnist_model_loads", "Model files loaded or refused", ["result"], registry=None
        )

    def observe_batch(self, size: int) -> None:
        self.batch_sizes.observe(size)

    def serving(self, version: str, previous: str | None = None) -> None:
        """The worker answers with ``version`` from now on, instead of ``previous``."""
        self.model_loads.labels("loaded").inc()
        if previous is not None and previous != version:
            self.model_info.labels(previous).set(0)
        self.model_info.labels(version).set(1)

    def refused(self) -> None:
        self.model_loads.labels("refused").inc()


def metrics_text() -> tuple[bytes, str]:
    """The metrics of every process of the server (the files in ``PROMETHEUS_MULTIPROC_DIR``) in Prometheus's
    text format, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST
