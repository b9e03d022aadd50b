"""Behaviour specific to the in-memory transport: bounded mailboxes and backpressure."""

from __future__ import annotations

import asyncio

from bus.envelope import DataPart, Envelope, Kind
from bus.memory import InMemoryBus


def event(n: int) -> Envelope:
    return Envelope(sender="tester", recipient="sink", kind=Kind.EVENT, content=[DataPart(value=n)])


async def test_full_mailbox_makes_publishers_wait() -> None:
    bus = InMemoryBus()
    await bus.start()
    gate = asyncio.Event()
    handled: list[int] = []
    entered = asyncio.Event()

    async def sink(envelope: Envelope) -> None:
        entered.set()
        await gate.wait()
        handled.append(envelope.data()[0])

    await bus.subscribe("sink", sink, concurrency=1, mailbox=2)
    await bus.publish(event(0))
    await asyncio.wait_for(entered.wait(), 5)
    await bus.publish(event(1))
    await bus.publish(event(2))
    blocked = asyncio.create_task(bus.publish(event(3)))
    for _ in range(50):
        await asyncio.sleep(0)
    assert not blocked.done(), "publisher must wait while the mailbox is full"
    assert bus.stats().queue_depth["sink"] == 3
    gate.set()
    await asyncio.wait_for(blocked, 5)
    await bus.close(drain_timeout=5)
    assert handled == [0, 1, 2, 3]


async def test_stats_count_traffic() -> None:
    bus = InMemoryBus()
    await bus.start()
    done = asyncio.Event()

    async def sink(envelope: Envelope) -> None:
        if envelope.data()[0] == 9:
            done.set()

    await bus.subscribe("sink", sink)
    for n in range(10):
        await bus.publish(event(n))
    await asyncio.wait_for(done.wait(), 5)
    await bus.close()
    stats = bus.stats()
    assert stats.published == 10
    assert stats.delivered == 10
