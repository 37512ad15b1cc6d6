"""``python -m mnist_lightning serve``: the classifier over HTTP with LitServe, and a page to draw digits on.

- ``POST /predict`` with ``{"image": "<base64 PNG or JPEG, a data URL prefix is fine>"}`` answers
  ``{"prediction": 7, "label": "7", "confidence": 0.98, "probabilities": [...]}``. The image is prepared as
  ``predict`` prepares image files (grayscale, auto-invert, fit, centre: ``mnist_lightning.data.digits``).
- ``GET /`` is the drawing page (``static/draw.html``), ``GET /favicon.ico`` its icon; ``GET /health`` and
  ``GET /info`` (the class names) are LitServe's; ``GET /metrics`` (Prometheus), ``/livez`` and ``/readyz``
  are for those who run it (``operations.py``). Every answer names the model's version; ``--model_dir`` serves
  the newest file of a folder and swaps in a newer one without a restart (``model_versions.py``).
- The body is read as JSON whatever its ``Content-Type`` (``curl -d`` sends a form's).
- A bad request gets a 4xx with ``{"detail": "what was wrong"}``: 400 for a body that is not JSON, has no
  ``image``, or whose image is not base64, not an image, blank, or took longer than ``--decode_timeout`` to
  decode; 413 for a body over ``--max_request_mb``; 401 without the ``--api_key``; 403 for a request from
  another site's page; 408 for a body slower than ``--read_timeout``; 503 (``Retry-After``) when every image
  decoder is busy and ``--decode_queue`` requests already wait (``guards.py``, ``preparing.py``).

LitServe answers HTTP in ``--api_servers`` processes; each has ``--decoders`` processes of its own that
decode and prepare the images (``preparing.py``), so that its event loop only moves bytes. The network runs
in ``--workers`` worker processes (``--threads`` each), which batch the requests queued for them
(``--max_batch_size``, ``--batch_timeout``); requests and answers travel between them through pipes
(``--pipes``; ``transport.py``). Ctrl-C or SIGTERM stops the server and its processes.
"""

# No ``from __future__ import annotations``: FastAPI reads the type of the endpoint's ``request`` to validate
# the body as a DigitRequest, and a string annotation of a local function would not be resolved.
import argparse
import contextlib
import errno
import multiprocessing
import os
import signal
import socket
import sys
from importlib.resources import files

import litserve as ls
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.middleware.gzip import GZipMiddleware

from mnist_lightning import compat
from mnist_lightning.checkpointing.trusted_classes import add_trust_option
from mnist_lightning.cli.console import CommandParser
from mnist_lightning.cli.quiet import serving
from mnist_lightning.errors import UserError
from mnist_lightning.tools.serve.guards import (
    BodyDeadline,
    DrainBeforeRefusing,
    SameOriginOnly,
    header_deadline_protocol,
)
from mnist_lightning.tools.serve.inference import DigitClassifierAPI, ModelSource, freeze_imported_objects
from mnist_lightning.tools.serve.model_versions import first_model, forward_reloads
from mnist_lightning.tools.serve.operations import RequestMetrics, metrics_folder, metrics_text, note_reason
from mnist_lightning.tools.serve.preparing import ImagePreparer, Refused
from mnist_lightning.tools.serve.requests import (
    DigitRequest,
    JsonBody,
    body_too_large_response,
    validation_error_response,
)
from mnist_lightning.tools.serve.transport import PipeTransport

FAVICON = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 32 32"><rect width="32" height="32" rx="6" '
    'fill="#4a7bd0"/><path d="M9 8h14l-8 17" fill="none" stroke="#fff" stroke-width="4" '
    'stroke-linecap="round" stroke-linejoin="round"/></svg>'
)


def draw_page(request: Request) -> HTMLResponse:
    return HTMLResponse(
        files("mnist_lightning.tools.serve").joinpath("static/draw.html").read_text(encoding="utf-8")
    )


def favicon(request: Request) -> Response:
    """The page's icon, a white 7 on blue (browsers ask for /favicon.ico; an SVG there is fine)."""
    return Response(FAVICON, media_type="image/svg+xml")


def build_server(
    api: DigitClassifierAPI,
    max_request_bytes: int,
    preparer: ImagePreparer,
    workers: int = 1,
    pipes: bool = True,
    read_timeout: float = 10.0,
    docs: bool = False,
) -> ls.LitServer:
    """A LitServer for ``api`` with ``workers`` inference workers: a body over ``max_request_bytes`` gets a
    413, a bad one a 400, GET / the page; the body of POST /predict is JSON whatever its Content-Type, and its
    image is prepared by ``preparer``; ``pipes``: requests and answers through pipes (a
    ``multiprocessing.Queue``, a :class:`PipeTransport`) rather than LitServe's Manager queues; a request from
    another site's page gets a 403, a body slower than ``read_timeout`` seconds a 408; ``docs``: FastAPI's
    ``/docs`` (Swagger UI, which the browser loads from a CDN) and ``/openapi.json``, off by default.

    LitServer answers ``GET /`` with "litserve running" itself; that route is replaced by the page.
    """
    server = ls.LitServer(
        api,
        accelerator="cpu",
        workers_per_device=workers,
        max_payload_size=max_request_bytes,
        model_metadata={"classes": api.classes},
        disable_openapi_url=not docs,
    )
    server.app.router.routes[:] = [
        route for route in server.app.router.routes if getattr(route, "path", "") != "/"
    ]
    server.app.add_api_route(
        "/", draw_page, methods=["GET"], response_class=HTMLResponse, include_in_schema=False
    )
    server.app.add_api_route("/favicon.ico", favicon, methods=["GET"], include_in_schema=False)
    add_operations_routes(server, api)
    prepare_off_the_event_loop(server, preparer)
    if pipes:
        compat.replace_litserve_queues(server, multiprocessing.get_context("spawn").Queue, PipeTransport)
    # LitServe compresses answers over 1,000 bytes: an answer of /predict is about 300, and wrapping each in
    # GZipMiddleware's responder cost an HTTP process time under load for nothing (benchmarks/NOTES.md)
    server.app.user_middleware = [
        middleware for middleware in server.app.user_middleware if middleware.cls is not GZipMiddleware
    ]
    server.app.add_middleware(JsonBody)
    server.app.add_middleware(BodyDeadline, seconds=read_timeout)
    server.app.add_middleware(SameOriginOnly)  # a refused request costs nothing more
    server.app.add_middleware(DrainBeforeRefusing)
    paths = frozenset(getattr(route, "path", "") for route in server.app.router.routes)
    server.app.add_middleware(RequestMetrics, paths=paths)  # the outermost: it counts every answer
    server.app.add_exception_handler(RequestValidationError, validation_error_response)
    server.app.add_exception_handler(413, body_too_large_response(max_request_bytes))
    server.app.add_exception_handler(Refused, refused_response)
    return server


def metrics(request: Request) -> Response:
    body, content_type = metrics_text()
    return Response(body, media_type=content_type)


def alive(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def add_operations_routes(server: ls.LitServer, api: DigitClassifierAPI) -> None:
    """``GET /metrics`` (with the ``--api_key``, as ``/health``: it tells the traffic and the model), and
    without a key, for probes: ``GET /livez``, 200 while the HTTP process answers, and ``GET /readyz``,
    LitServe's own ``/health``, 200 once every worker's ``setup`` has returned (the model loaded and a
    warm-up batch answered: ``inference.DigitClassifierAPI.setup``), 503 before."""
    (health,) = [route for route in server.app.router.routes if getattr(route, "path", "") == "/health"]
    server.app.add_api_route(
        "/metrics", metrics, methods=["GET"], dependencies=[Depends(api.authorize)], include_in_schema=False
    )
    server.app.add_api_route("/livez", alive, methods=["GET"], include_in_schema=False)
    server.app.add_api_route("/readyz", health.endpoint, methods=["GET"], include_in_schema=False)


def prepare_off_the_event_loop(server: ls.LitServer, preparer: ImagePreparer) -> None:
    """``POST /predict`` prepares its image with ``preparer`` (its processes start and stop with each HTTP
    process), then hands the prepared digit to LitServe's own endpoint, which queues it for the workers.

    LitServe's route would have FastAPI validate the body as the type of ``decode_request``'s argument in the
    event loop, where decoding an image stalls every request of the process; LitServe has no hook between
    reading a request and queueing it, so its endpoint (``APIRoute.endpoint``) is called from this one.
    """
    routes = server.app.router.routes
    (litserve_route,) = [route for route in routes if getattr(route, "path", "") == "/predict"]
    queue_for_workers = litserve_route.endpoint

    async def predict(request: DigitRequest):
        return await queue_for_workers(await preparer.prepare(request.image))

    routes.remove(litserve_route)
    server.app.add_api_route(
        "/predict", predict, methods=["POST"], dependencies=litserve_route.dependencies, response_model=None
    )
    serve_requests = server.app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # ignored before the decoders' fork server starts, which inherits it: SIGHUP is for the workers
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        preparer.start()
        try:
            async with serve_requests(app) as state:
                yield state
        finally:
            preparer.stop()

    server.app.router.lifespan_context = lifespan


def refused_response(request: Request, refused: Refused) -> JSONResponse:
    note_reason(request.scope, refused.reason)
    headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after else None
    return JSONResponse(status_code=refused.status, content={"detail": refused.detail}, headers=headers)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (SO_REUSEADDR, as uvicorn binds), for the server to listen on: the
    first of the addresses ``host`` resolves to that this machine can bind (any name or address it has:
    ``localhost``, its host name, one of its addresses, ``0.0.0.0``, ``::``). A UserError saying what to do
    when there is none, before anything is started or printed.

    LitServer.run accepts only 0.0.0.0, 127.0.0.1 and ::; it is given this socket (uvicorn's ``fd``)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise UserError(
            f"--host '{host}' is not an address, nor a name this machine resolves ({err.strerror}); choose "
            "another --host (127.0.0.1: this machine only; 0.0.0.0: every address it has)."
        ) from None
    for family, kind, protocol, _, address in addresses:
        candidate = socket.socket(family, kind, protocol)
        try:
            candidate.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            candidate.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it
            candidate.bind(address)
            return candidate
        except OSError as err:
            candidate.close()
            failure = err
    reason = failure.strerror or str(failure)
    if failure.errno == errno.EADDRINUSE:
        advice = f"another program listens on port {port}: stop it, or choose another --port"
    elif failure.errno == errno.EACCES:
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


def options_parser() -> CommandParser:
    """The options of ``serve``."""
    parser = CommandParser(
        "serve",
        description="Serve the classifier over HTTP (LitServe): POST /predict, and a page to draw on at /.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--ckpt_path", help="checkpoint written by 'fit' (best, last: the newest run's in lightning_logs/)"
    )
    source.add_argument("--model", help="a file written by 'export' (.onnx or .pt2)")
    source.add_argument(
        "--model_dir",
        help="a folder of files written by 'export': serves the newest; swaps in a newer one (or on SIGHUP)",
    )
    add_trust_option(parser)
    parser.add_argument(
        "--model_poll", type=float, default=1.0,
        help="seconds between two looks at --model_dir for a newer file (0: only on SIGHUP)",
    )  # fmt: skip
    parser.add_argument(
        "--host", default="127.0.0.1",
        help="address or name to listen on (127.0.0.1: this machine only; 0.0.0.0: every address it has)",
    )  # fmt: skip
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
        "--decoders", type=int, default=2, help="image decoding processes of each HTTP process (>= 1)"
    )
    parser.add_argument(
        "--decode_queue", type=int, default=64,
        help="requests of an HTTP process that may wait for a decoder; more get 503 (>= 0)",
    )  # fmt: skip
    parser.add_argument(
        "--decode_timeout", type=float, default=2.0,
        help="seconds to decode and prepare an image, and to wait for a decoder; longer: an error (> 0)",
    )  # fmt: skip
    parser.add_argument(
        "--read_timeout", type=float, default=10.0,
        help="seconds for a request's headers, and for its body, to arrive; slower clients are cut off (> 0)",
    )  # fmt: skip
    parser.add_argument(
        "--api_key", default=os.environ.get("LIT_SERVER_API_KEY") or None,
        help="the key POST /predict needs in its X-API-Key header (default: $LIT_SERVER_API_KEY; none)",
    )  # fmt: skip
    parser.add_argument(
        "--docs", action="store_true", help="serve /docs (Swagger UI, loaded from a CDN) and /openapi.json"
    )
    parser.add_argument(
        "--log_level", default="warning", choices=("debug", "info", "warning", "error"), help="server logs"
    )
    return parser


def main(args: list[str]) -> None:
    """``python -m mnist_lightning serve --ckpt_path CKPT | --model FILE.onnx [--host H] [--port P]``."""
    parser = options_parser()
    options = parser.parse_args(args)
    if not 1024 <= options.port <= 65535:
        parser.error(f"--port must be between 1024 and 65535, got {options.port}")
    if options.max_batch_size < 2:
        parser.error(f"--max_batch_size must be at least 2, got {options.max_batch_size}")
    if not options.batch_timeout >= 0:
        parser.error(f"--batch_timeout must be 0 seconds or more, got {options.batch_timeout}")
    for name in ("workers", "threads", "api_servers", "decoders"):
        if getattr(options, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(options, name)}")
    if options.decode_queue < 0:
        parser.error(f"--decode_queue must be 0 or more, got {options.decode_queue}")
    if not options.model_poll >= 0:
        parser.error(f"--model_poll must be 0 seconds or more, got {options.model_poll}")
    for name in ("max_request_mb", "decode_timeout", "read_timeout"):
        if not getattr(options, name) > 0:
            parser.error(f"--{name} must be greater than 0, got {getattr(options, name)}")

    trusted = tuple(options.trust)
    if options.ckpt_path in ("best", "last"):  # torch: only to serve a checkpoint
        from mnist_lightning.checkpointing.checkpoints import newest_runs_checkpoint

        keyword, options.ckpt_path = options.ckpt_path, newest_runs_checkpoint(options.ckpt_path)
        print(f"--ckpt_path {keyword}: {options.ckpt_path}", flush=True)
    if options.model_dir is not None:  # the file's class names read as it is chosen, not read again
        path, classes, folder = first_model(
            options.model_dir,
            lambda path: ModelSource(path, exported=True, trusted_modules=trusted).class_names(),
            options.model_poll,
        )
        model_source = ModelSource(path, exported=True, trusted_modules=trusted)
    else:
        model_source = ModelSource(
            options.model or options.ckpt_path, exported=options.ckpt_path is None, trusted_modules=trusted
        )
        classes, folder = model_source.class_names(), None
    api = DigitClassifierAPI(
        model_source, classes, options.max_batch_size, options.batch_timeout, options.threads,
        options.api_key, folder=folder,
    )  # fmt: skip
    preparer = ImagePreparer(options.decoders, options.decode_queue, options.decode_timeout)
    server = build_server(
        api, int(options.max_request_mb * 1_000_000), preparer, workers=options.workers, pipes=options.pipes,
        read_timeout=options.read_timeout, docs=options.docs,
    )  # fmt: skip
    listening = listening_socket(options.host, options.port)
    stop_on_signals()
    forward_reloads(server)
    freeze_imported_objects()  # the HTTP processes are forked from this one after this
    where = f"[{options.host}]" if ":" in options.host else options.host
    served = f"{model_source.path} (the newest model in {options.model_dir})" if folder else model_source.path
    print(f"Serving {served} at http://{where}:{options.port}/ (Ctrl-C stops it)", flush=True)
    with listening, metrics_folder(), serving():
        server.run(
            host="127.0.0.1",  # what LitServer.run checks; uvicorn listens on the socket bound above
            port=options.port,
            num_api_servers=options.api_servers,
            log_level=options.log_level,
            generate_client_file=False,
            fd=listening.fileno(),
            http=header_deadline_protocol(options.read_timeout),
            timeout_keep_alive=5,
        )
    print("Server stopped.", file=sys.stderr, flush=True)
