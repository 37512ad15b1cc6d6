"""How ``serve``'s answers travel from the inference workers back to the HTTP processes: a pipe per HTTP
process, read by its event loop.

LitServe (0.2.19) moves answers through a ``MessageTransport``: by default queues of a
``multiprocessing.Manager`` (a round trip to the Manager's process for each ``put`` and ``get``, and a thread
hand-off per answer in the HTTP process), or with ``fast_queue`` a ZeroMQ broker. 0.2.19 never enables the
latter (a misspelt keyword, LitServe issue #751), and enabled it loses answers: it swaps the broker's two
addresses (pull request #752), and a worker's first message, a ``__ping__`` that is no pickle, ends the answer
loop of HTTP process 0 when it arrives. :class:`PipeTransport` implements the same interface with one
``multiprocessing`` pipe per HTTP process: a worker writes an answer to its HTTP process's pipe, and that
process's event loop reads the pipe when it is readable, without a thread. ``compat.replace_litserve_queues``
puts it in place.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections import deque
from typing import Any

from litserve.transport.base import MessageTransport


class PipeTransport(MessageTransport):
    """LitServe's answer transport over pipes: ``send`` in a worker, ``areceive`` in an HTTP process.

    Made in the server's process before its other processes start: the HTTP processes are forked (they
    inherit it) and the workers are spawned with it as an argument (pipes and locks pickle for that).
    """

    def __init__(self, consumers: int) -> None:
        context = multiprocessing.get_context("spawn")
        pipes = [context.Pipe(duplex=False) for _ in range(consumers)]
        self._readers = [reader for reader, _ in pipes]
        self._writers = [writer for _, writer in pipes]
        self._locks = [context.Lock() for _ in range(consumers)]  # workers share a consumer's pipe
        self._received: deque = deque()
        self._arrived: asyncio.Event | None = None

    def __getstate__(self) -> dict:
        return {"_readers": self._readers, "_writers": self._writers, "_locks": self._locks}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _received=deque(), _arrived=None)

    def send(self, item: Any, consumer_id: int) -> None:
        with self._locks[consumer_id]:
            self._writers[consumer_id].send(item)

    async def areceive(self, consumer_id: int | None = None, timeout: float | None = None) -> Any:
        """The next answer for HTTP process ``consumer_id``; None after ``timeout`` seconds without one."""
        if self._arrived is None:
            self._arrived = asyncio.Event()
            reader = self._readers[consumer_id or 0]
            asyncio.get_running_loop().add_reader(reader.fileno(), self._read_all, reader)
        while not self._received:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout)
            except asyncio.TimeoutError:
                return None
        return self._received.popleft()

    def _read_all(self, reader: Any) -> None:
        while reader.poll():
            self._received.append(reader.recv())
        self._arrived.set()

    def close(self, **kwargs: Any) -> None:
        """Nothing to do: the pipes close with the processes."""
