"""The decoder processes of ``serve`` (``tools/serve/preparing.py``): work past its time budget is answered
with an error and dropped (its process killed) while other requests are answered; a full pool answers 503;
a decoder whose memory grew is replaced. The preparations are ``helpers.serving.pid_or_refusal``: ``"stuck"``
never returns, so nothing here depends on how fast a machine decodes."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from mnist_lightning.tools.serve.preparing import ImagePreparer, Refused

from helpers.decoding import pid_or_refusal


def pid_of(prepared: bytes) -> int:
    return int.from_bytes(prepared, "little")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def until(condition, seconds: float = 30.0) -> None:
    """Wait for ``condition()`` (a decoder being replaced in a thread), failing after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true"
        await asyncio.sleep(0.02)


def run_with(preparer: ImagePreparer, scenario) -> None:
    async def main() -> None:
        preparer.start()
        try:
            await scenario(preparer)
        finally:
            preparer.stop()

    asyncio.run(main())


def test_work_past_the_budget_is_refused_and_killed_while_other_requests_are_answered():
    async def scenario(preparer: ImagePreparer) -> None:
        decoders = {decoder.process.pid for decoder in preparer.idle}
        started = time.monotonic()
        stuck = asyncio.ensure_future(preparer.prepare("stuck"))
        await until(lambda: len(preparer.idle) == 1)  # the stuck request holds one decoder
        (free,) = {decoder.process.pid for decoder in preparer.idle}
        (stuck_pid,) = decoders - {free}
        for _ in range(5):  # answered while the stuck request is still being decoded
            assert pid_of(await preparer.prepare("quick")) == free
        assert not stuck.done()
        with pytest.raises(Refused) as refused:
            await stuck
        assert time.monotonic() - started < 10  # at its 1 s budget (and a margin), not when it is done
        assert refused.value.status == 400
        assert "took longer than the 1 s allowed to decode and prepare it" in refused.value.detail
        await until(lambda: len(preparer.idle) == 2)  # replaced by a new one
        assert not alive(stuck_pid)  # killed, and reaped
        replacement = {decoder.process.pid for decoder in preparer.idle} - {free}
        assert replacement and replacement != {stuck_pid}
        assert pid_of(await preparer.prepare("quick")) in {free, *replacement}

    run_with(ImagePreparer(size=2, queue=0, budget_s=1.0, prepare=pid_or_refusal), scenario)


def test_a_full_pool_answers_503_with_retry_after_at_once():
    async def scenario(preparer: ImagePreparer) -> None:
        held = await preparer.take_decoder()  # as a request being prepared holds it
        started = time.monotonic()
        with pytest.raises(Refused) as refused:
            await preparer.prepare("quick")
        assert time.monotonic() - started < 2.0  # at once, not after the 3 s budget
        assert (refused.value.status, refused.value.retry_after) == (503, 1)
        assert "the server is busy: all its 1 image decoders are in use" in refused.value.detail
        preparer.give_back(held)
        assert pid_of(await preparer.prepare("quick")) == held.process.pid

    run_with(ImagePreparer(size=1, queue=0, budget_s=3.0, prepare=pid_or_refusal), scenario)


def test_a_request_that_waits_the_budget_for_a_decoder_gets_503_and_one_in_time_is_answered():
    async def scenario(preparer: ImagePreparer) -> None:
        held = await preparer.take_decoder()
        with pytest.raises(Refused) as refused:
            await preparer.prepare("quick")  # waits for the held decoder, which is not given back in 1 s
        assert (refused.value.status, refused.value.retry_after) == (503, 1)
        assert "no image decoder was free for 1 s" in refused.value.detail
        waiting = asyncio.ensure_future(preparer.prepare("quick"))
        await until(lambda: len(preparer.waiting) == 1)
        preparer.give_back(held)
        assert pid_of(await waiting) == held.process.pid
        assert not preparer.waiting

    run_with(ImagePreparer(size=1, queue=4, budget_s=1.0, prepare=pid_or_refusal), scenario)


def test_a_bad_image_is_a_400_and_a_decoder_that_grew_is_replaced():
    async def scenario(preparer: ImagePreparer) -> None:
        with pytest.raises(Refused) as refused:
            await preparer.prepare("bad")
        assert (refused.value.status, refused.value.detail) == (400, "image: is not what this test sends")
        first = pid_of(await preparer.prepare("quick"))
        assert os.getpriority(os.PRIO_PROCESS, first) == os.getpriority(os.PRIO_PROCESS, 0) + 10  # nice 10
        assert pid_of(await preparer.prepare("hoard")) == first  # answered, then replaced: 300 MB more
        await until(lambda: len(preparer.idle) == 1)
        assert pid_of(await preparer.prepare("quick")) != first
        assert not alive(first)

    run_with(ImagePreparer(size=1, queue=0, budget_s=30.0, prepare=pid_or_refusal), scenario)
