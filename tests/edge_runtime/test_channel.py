"""The worker-to-loop channel: every item arrives in order; fast tokens share wake-ups, the first and last
item and anything after a pause go at once."""

from __future__ import annotations

import asyncio
import threading
import time

from edge_runtime.channel import END, STREAM_INTERVAL_S, RequestChannel
from edge_runtime.types import FinishReason, GenerationRequest, TokenEvent, Usage


def _event(i: int, last: bool = False) -> TokenEvent:
    if last:
        return TokenEvent(str(i), i, -0.1, FinishReason.LENGTH, Usage(1, i + 1))
    return TokenEvent(str(i), i, -0.1)


def _collect(produce) -> tuple[list[TokenEvent], list[float], int]:
    """Run ``produce(channel)`` on a thread; return the events, when each arrived, and the loop's wake-ups."""

    async def main():
        channel = RequestChannel(GenerationRequest(prompt="x"), asyncio.get_running_loop())
        wakes = 0
        original = channel.loop.call_soon_threadsafe

        def counting(*args):
            nonlocal wakes
            wakes += 1
            return original(*args)

        channel.loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        worker = threading.Thread(target=produce, args=(channel,))
        worker.start()
        events, arrivals = [], []
        async for event in channel.stream(lambda c: asyncio.sleep(0)):
            events.append(event)
            arrivals.append(time.monotonic())
        worker.join()
        return events, arrivals, wakes

    return asyncio.run(main())


def test_fast_tokens_arrive_in_order_with_fewer_wakeups_than_tokens():
    def produce(channel):
        for i in range(200):
            channel.send(_event(i, last=i == 199))
            time.sleep(0.0005)  # 2000 tokens/s
        channel.send(END)

    events, _, wakes = _collect(produce)
    assert [e.token_id for e in events] == list(range(200))
    assert events[-1].finish_reason is FinishReason.LENGTH
    assert wakes < 60  # about one per STREAM_INTERVAL_S over ~0.1 s, plus first and last


def test_slow_tokens_are_each_delivered_at_once():
    sent: list[float] = []

    def produce(channel):
        for i in range(5):
            time.sleep(2 * STREAM_INTERVAL_S)
            sent.append(time.monotonic())
            channel.send(_event(i, last=i == 4))
        channel.send(END)

    events, arrivals, _ = _collect(produce)
    assert len(events) == 5
    assert max(a - s for a, s in zip(arrivals, sent, strict=True)) < STREAM_INTERVAL_S


def test_errors_pass_through_in_order():
    def produce(channel):
        channel.send(_event(0))
        channel.send(RuntimeError("boom"))
        channel.send(END)

    async def main():
        channel = RequestChannel(GenerationRequest(prompt="x"), asyncio.get_running_loop())
        threading.Thread(target=produce, args=(channel,)).start()
        seen = []
        try:
            async for event in channel.stream(lambda c: c.wait_until_end()):
                seen.append(event)
        except RuntimeError as exc:
            return seen, str(exc)

    seen, message = asyncio.run(main())
    assert [e.token_id for e in seen] == [0] and message == "boom"
