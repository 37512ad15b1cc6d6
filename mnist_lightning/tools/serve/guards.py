"""What ``serve`` refuses before any work is done for a request: requests from other sites' pages, clients
that send their request too slowly, and (``--api_key``) requests without the key.

- :class:`SameOriginOnly`: a browser names the page that makes a request in its ``Origin`` header; a request
  whose ``Origin`` is not this server's own (the ``Host`` it was sent to) is answered 403. A page elsewhere
  could otherwise make the browser of anyone who visits it send this server work: a cross-origin ``POST``
  with a form's Content-Type needs no CORS preflight, and the server reads any body as JSON. Programs such
  as curl send no ``Origin`` and are not concerned; nor is the drawing page, which is served from here.
- :class:`BodyDeadline`: the body of a request must arrive within ``--read_timeout`` seconds of its headers,
  else 408 and the connection is closed. uvicorn has no such limit: a client sending a byte a second holds a
  connection, and its part of the server, for as long as it likes.
- :func:`header_deadline_protocol`: the same for the headers, from the request's first byte (or from the
  connection's start), for uvicorn's ``httptools`` protocol, which has no header timeout either.
- :class:`DrainBeforeRefusing`: a refusal sent before the request's body has all arrived (413 for a body over
  the limit, 401, 403) waits until the rest of the body is read and thrown away, up to
  ``DRAIN_LIMIT_BYTES`` and ``DRAIN_LIMIT_SECONDS``. uvicorn stops reading a body nobody asks for, and a
  connection closed with unread bytes is reset by the kernel (a TCP RST), so a client that sent
  ``Connection: close`` (Python's urllib) would see "connection reset" instead of the answer (nginx calls
  this "lingering close").
- :class:`ApiKeyCheck`: the ``X-API-Key`` header of ``POST /predict`` must be the key. LitServe's own check
  (its ``LIT_SERVER_API_KEY`` variable) compares the key with ``!=`` and is read when LitServe is imported;
  this one is given the key and compares in constant time.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Header, HTTPException
from fastapi.responses import JSONResponse
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_PORTS = {"http": 80, "https": 443}
DRAIN_LIMIT_BYTES = 64_000_000
DRAIN_LIMIT_SECONDS = 5.0


def same_origin(origin: str, host: str) -> bool:
    """Whether the page at ``origin`` (``scheme://name[:port]``) is served by the host the request was sent to
    (its ``Host`` header, ``name[:port]``). The scheme is not compared: behind a reverse proxy that ends TLS
    the page is ``https://`` while the proxy talks ``http`` to this server (it must pass ``Host`` on)."""
    try:
        page, target = urlsplit(origin), urlsplit(f"//{host}")
        if page.scheme not in DEFAULT_PORTS or not page.hostname or not target.hostname:
            return False
        default = DEFAULT_PORTS[page.scheme]
        return (page.hostname, page.port or default) == (target.hostname, target.port or default)
    except ValueError:  # a port that is not a number
        return False


class SameOriginOnly:
    """ASGI middleware: 403 for a request whose ``Origin`` header names another site (see the module)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = scope["headers"]
            host = next((value for name, value in headers if name == b"host"), b"").decode("latin-1")
            for name, value in headers:
                origin = value.decode("latin-1")
                if name == b"origin" and not same_origin(origin, host):
                    detail = (
                        f"cross-origin request refused: this server answers the pages it serves itself, not "
                        f"one from {origin}; call it from its own page, or from a program (which sends no "
                        "Origin header)"
                    )
                    await JSONResponse({"detail": detail}, status_code=403)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class BodyDeadline:
    """ASGI middleware: a request's body must arrive within ``seconds`` of its headers, else 408 (the
    connection is closed)."""

    def __init__(self, app: Any, seconds: float) -> None:
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = asyncio.get_running_loop().time() + self.seconds

        async def receive_in_time() -> dict:
            try:
                return await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                raise HTTPException(
                    408,
                    f"the request body did not arrive within {self.seconds:g} s (the server's "
                    "--read_timeout)",
                    headers={"Connection": "close"},
                ) from None

        await self.app(scope, receive_in_time, send)


class DrainBeforeRefusing:
    """ASGI middleware: an answer started before the request's body was all read waits until the rest has
    been read and thrown away (see the module), except a 408, whose client is too slow to wait for."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_read = False

        async def receive_noting_the_end() -> dict:
            nonlocal body_read
            message = await receive()
            body_read = body_read or not message.get("more_body", False)
            return message

        async def send_after_the_body(message: dict) -> None:
            if message["type"] == "http.response.start" and not body_read and message["status"] != 408:
                await drain(receive)
            await send(message)

        await self.app(scope, receive_noting_the_end, send_after_the_body)


async def drain(receive: Any) -> None:
    """Read and drop what is left of a request's body, up to ``DRAIN_LIMIT_BYTES`` and
    ``DRAIN_LIMIT_SECONDS`` (past them the connection is closed with the rest unread)."""
    loop = asyncio.get_running_loop()
    deadline, dropped = loop.time() + DRAIN_LIMIT_SECONDS, 0
    with contextlib.suppress(TimeoutError):
        while dropped <= DRAIN_LIMIT_BYTES:
            message = await asyncio.wait_for(receive(), deadline - loop.time())
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                return


def header_deadline_protocol(seconds: float) -> type:
    """uvicorn's ``httptools`` protocol, which closes a connection whose request headers have not all arrived
    ``seconds`` after the connection opened or the request's first byte came (uvicorn has no such limit:
    its keep-alive timeout ends at the first byte of the next request)."""

    class HeaderDeadline(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.header_deadline = self.loop.call_later(seconds, self.headers_too_slow)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self.header_deadline is None:
                self.header_deadline = self.loop.call_later(seconds, self.headers_too_slow)

        def on_headers_complete(self) -> None:
            self.cancel_header_deadline()
            super().on_headers_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self.cancel_header_deadline()
            super().connection_lost(exc)

        def cancel_header_deadline(self) -> None:
            if self.header_deadline is not None:
                self.header_deadline.cancel()
                self.header_deadline = None

        def headers_too_slow(self) -> None:
            self.header_deadline = None
            self.transport.close()

    return HeaderDeadline


class ApiKeyCheck:
    """A FastAPI dependency (LitServe's ``LitAPI.authorize``): 401 unless the ``X-API-Key`` header is ``key``;
    no check when ``key`` is None. Asynchronous, so it runs in the event loop rather than in a thread; an
    object rather than a closure, as LitServe pickles the LitAPI for its workers."""

    def __init__(self, key: str | None) -> None:
        self.expected = key.encode() if key else None

    async def __call__(self, x_api_key: Annotated[str | None, Header()] = None) -> None:
        if self.expected is None:
            return
        if x_api_key is None or not secrets.compare_digest(x_api_key.encode(), self.expected):
            raise HTTPException(
                401,
                "this server needs its API key in the X-API-Key header (the drawing page: open it as "
                "http://HOST:PORT/#key=THE_KEY)",
            )
