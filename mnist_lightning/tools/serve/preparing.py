"""Where ``POST /predict`` decodes and prepares its images: a few processes beside each HTTP process, never
its event loop, each within a time budget.

Decoding runs in processes rather than threads because work past its budget must be dropped, and only a
process can be stopped: a thread decoding a bomb (Pillow's decoders release the GIL, so threads would run in
parallel) cannot be interrupted, and would go on using a core and a gigabyte after its request was answered.
A process past its budget is killed (SIGKILL) and replaced; all its memory goes with it. The processes are
forked by a fork server (``multiprocessing``'s ``forkserver``, one per HTTP process, with the image libraries
imported once): a replacement starts in milliseconds, without the HTTP process's sockets, threads or event
loop. A process whose memory grew by more than ``REPLACE_AFTER_MB`` in a request is replaced too, so that
the memory of a large image is given back rather than kept by the allocator.

The decoders run at a lower priority (``nice`` 10) than the HTTP and inference processes, so that images
being decoded never delay the answers of images already prepared.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Callable
from typing import Any

from mnist_lightning.tools.serve.image_text import prepared_digit

REPLACE_AFTER_MB = 100  # a decoder whose memory grew more than this in one request is replaced
NICENESS = 10
# what the fork server imports for its children, besides the module of the image preparation: the image
# formats Pillow reads first (it imports them at the first image it opens; imported here, each decoder starts
# ready)
PRELOAD = [f"PIL.{name}ImagePlugin" for name in ("Bmp", "Gif", "Jpeg", "Ppm", "Png")]


class Refused(Exception):
    """A request that is not prepared: ``status`` and ``detail`` are its answer; ``retry_after`` seconds when
    the client should try again later; ``reason``: the kind of refusal, for the metrics."""

    def __init__(self, status: int, detail: str, retry_after: int | None = None, reason: str = "") -> None:
        super().__init__(detail)
        self.status, self.detail, self.retry_after = status, detail, retry_after
        self.reason = reason or ("busy" if status == 503 else "bad_image")


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def decode_loop(connection: Any, prepare: Callable[[Any], bytes]) -> None:
    """A decoder process: ``prepare`` each value received, send back ``(kind, result, grown)``: ``("digit",
    784 bytes)`` or ``("refused", (reason, why))`` (``reason``: the ValueError's, if it has one); ``grown``:
    whether its memory grew past ``REPLACE_AFTER_MB``.

    An exception's traceback holds the frames of the functions it left, and with them the arrays of a decoded
    image; only its message is kept, and the exception is gone before the next request."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group; the HTTP process ends it
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # SIGHUP asks the workers for a new model, not this to end
    os.nice(NICENESS)
    baseline = resident_mb()
    while True:
        try:
            value = connection.recv()
        except EOFError:  # the HTTP process ended
            return
        try:
            reply: tuple[str, Any] = ("digit", prepare(value))
        except ValueError as err:
            reply = ("refused", (getattr(err, "reason", "bad_image"), f"image: {err}"))
        except MemoryError:
            reply = ("refused", ("too_large", "image: needs more memory to decode than the server has"))
        del value
        connection.send((*reply, resident_mb() - baseline > REPLACE_AFTER_MB))


class Decoder:
    """One decoder process and the pipe to it."""

    def __init__(self, context: Any, prepare: Callable[[Any], bytes]) -> None:
        self.connection, child_end = context.Pipe()
        self.process = context.Process(target=decode_loop, args=(child_end, prepare), daemon=True)
        self.process.start()
        child_end.close()

    async def prepare(self, value: Any, budget_s: float) -> tuple[str, Any, bool]:
        """Send ``value``; its reply, or TimeoutError after ``budget_s`` seconds, or EOFError when the process
        died."""
        loop = asyncio.get_running_loop()
        replied = loop.create_future()
        descriptor = self.connection.fileno()
        loop.add_reader(descriptor, lambda: replied.done() or replied.set_result(None))
        try:
            self.connection.send(value)
            await asyncio.wait_for(replied, budget_s)
            return self.connection.recv()
        finally:
            loop.remove_reader(descriptor)

    def stop(self) -> None:
        """Kill the process at once (its work is dropped) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join()
        self.connection.close()


class ImagePreparer:
    """The images of an HTTP process's requests prepared by ``size`` decoder processes: at most ``queue``
    requests wait for one, at most ``budget_s`` seconds, and then each has ``budget_s`` seconds to decode.
    ``prepare``: a module-level function (the decoders import it by name), request value -> 784 bytes or
    ValueError."""

    def __init__(
        self, size: int, queue: int, budget_s: float, prepare: Callable[[Any], bytes] = prepared_digit
    ) -> None:
        self.size, self.queue, self.budget_s, self.preparation = size, queue, budget_s, prepare
        self.idle: deque[Decoder] = deque()  # those not busy; busy ones are held by their request
        self.waiting: deque[asyncio.Future] = deque()
        self.context: Any = None

    def start(self) -> None:
        """Start the decoders (in the HTTP process, once its event loop runs)."""
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload([self.preparation.__module__, *PRELOAD])
        self.idle.extend(Decoder(self.context, self.preparation) for _ in range(self.size))

    def stop(self) -> None:
        while self.idle:
            self.idle.popleft().stop()

    async def prepare(self, value: Any) -> bytes:
        """The image of a request (its JSON ``image`` value) as a prepared MNIST digit, 784 bytes.

        Refused when it is not an image of a digit (400), when decoding and preparing it takes longer than the
        budget (400: its decoder is killed), when every decoder is busy and ``queue`` requests already wait
        (503), or when it waited the budget for a decoder (503)."""
        decoder = await self.take_decoder()
        try:
            kind, result, grown = await decoder.prepare(value, self.budget_s)
        except TimeoutError:
            self.replace(decoder)
            raise Refused(
                400,
                f"image: took longer than the {self.budget_s:g} s allowed to decode and prepare it (the "
                "server's --decode_timeout); send a smaller image",
                reason="decode_timeout",
            ) from None
        except (EOFError, OSError):  # the decoder died: killed for its memory, or crashed on these bytes
            self.replace(decoder)
            raise Refused(
                400, "image: its decoder failed on it; it is not a readable image", reason="decoder_failed"
            ) from None
        except BaseException:  # the request was cancelled (its client left): the decoder's work is dropped
            self.replace(decoder)
            raise
        if grown:
            self.replace(decoder)
        else:
            self.give_back(decoder)
        if kind == "refused":
            reason, detail = result
            raise Refused(400, detail, reason=reason)
        return result

    async def take_decoder(self) -> Decoder:
        """An idle decoder, or the next one given back within the budget."""
        if self.idle:
            return self.idle.popleft()
        if len(self.waiting) >= self.queue:
            raise Refused(
                503, f"the server is busy: all its {self.size} image decoders are in use", retry_after=1
            )
        turn = asyncio.get_running_loop().create_future()
        self.waiting.append(turn)
        try:
            return await asyncio.wait_for(turn, self.budget_s)
        except TimeoutError:
            raise Refused(
                503, f"the server is busy: no image decoder was free for {self.budget_s:g} s", retry_after=1
            ) from None
        except BaseException:  # cancelled: a decoder given to it meanwhile goes to the next request
            if turn.done() and not turn.cancelled():
                self.give_back(turn.result())
            raise
        finally:
            if turn in self.waiting:
                self.waiting.remove(turn)

    def give_back(self, decoder: Decoder) -> None:
        """The decoder goes to the first request still waiting, or back to the idle ones."""
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_result(decoder)
                return
        self.idle.append(decoder)

    def replace(self, decoder: Decoder) -> None:
        """Kill ``decoder`` and start another, in a thread (a fork takes milliseconds; the answer that
        replaced it need not wait for them)."""
        renewal = asyncio.get_running_loop().run_in_executor(None, self.renew, decoder)
        renewal.add_done_callback(lambda done: self.give_back(done.result()))

    def renew(self, decoder: Decoder) -> Decoder:
        decoder.stop()
        return Decoder(self.context, self.preparation)
