"""The pipes ``serve`` passes its answers through: from a spawned process (as LitServe's workers are) to the
event loop of the process that reads them."""

from __future__ import annotations

import asyncio
import multiprocessing

from mnist_lightning.tools.serve.transport import PipeTransport


def send_answers(transport: PipeTransport, consumer_id: int, count: int) -> None:
    for number in range(count):
        transport.send((f"uid{number}", {"answer": number}), consumer_id=consumer_id)


def test_answers_from_another_process_arrive_in_order_at_their_consumer_only():
    transport = PipeTransport(consumers=2)
    sender = multiprocessing.get_context("spawn").Process(target=send_answers, args=(transport, 1, 200))
    sender.start()

    async def receive() -> tuple[list, object]:
        answers = [await transport.areceive(consumer_id=1, timeout=60) for _ in range(200)]
        return answers, await transport.areceive(consumer_id=1, timeout=0.2)

    answers, nothing_more = asyncio.run(receive())
    sender.join(timeout=60)
    assert answers == [(f"uid{number}", {"answer": number}) for number in range(200)]
    assert nothing_more is None  # after the timeout
    assert not transport._readers[0].poll()  # consumer 0 got nothing
