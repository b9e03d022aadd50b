"""Behaviour specific to the in-memory transport: bounded mailboxes and backpressure."""

from __future__ import annotations

import asyncio

from bus.base import DeadlineExceeded
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


async def test_a_publisher_that_stops_waiting_for_room_passes_its_turn_on() -> None:
    """Two publishers wait on a full mailbox; the first is cancelled; room goes to the second, nothing is lost."""
    bus = InMemoryBus()
    await bus.start()
    gate = asyncio.Event()
    handled: list[int] = []
    entered = asyncio.Event()

    async def sink(envelope: Envelope) -> None:
        entered.set()
        await gate.wait()
        handled.append(envelope.data()[0])

    await bus.subscribe("sink", sink, concurrency=1, mailbox=1)
    await bus.publish(event(0))
    await asyncio.wait_for(entered.wait(), 5)
    await bus.publish(event(1))
    first = asyncio.create_task(bus.publish(event(2)))
    second = asyncio.create_task(bus.publish(event(3)))
    for _ in range(50):
        await asyncio.sleep(0)
    assert not first.done() and not second.done(), "both wait while the mailbox is full"
    first.cancel()
    gate.set()
    await asyncio.wait_for(second, 5)
    await bus.close(drain_timeout=5)
    assert first.cancelled()
    assert handled == [0, 1, 3]


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


async def test_deadlines_share_one_sweeper_and_never_fire_early() -> None:
    """Requests registered out of deadline order each fail at (never before) their own deadline."""
    bus = InMemoryBus()
    await bus.start()
    release = asyncio.Event()
    arrived = 0
    all_arrived = asyncio.Event()

    async def slow(envelope: Envelope) -> Envelope:
        nonlocal arrived
        arrived += 1
        if arrived == 3:
            all_arrived.set()
        await release.wait()
        return envelope.reply(DataPart(value="late"))

    await bus.subscribe("slow", slow)
    loop = asyncio.get_running_loop()

    async def ask(timeout: float) -> float:
        start = loop.time()
        request = Envelope(sender="tester", recipient="slow", kind=Kind.REQUEST, content=[DataPart(value=timeout)])
        try:
            await bus.request(request, timeout=timeout)
        except DeadlineExceeded:
            return loop.time() - start
        raise AssertionError("a reply arrived before the deadline")

    waited = await asyncio.gather(ask(0.3), ask(0.05), ask(0.15))
    for elapsed, timeout in zip(waited, (0.3, 0.05, 0.15), strict=True):
        assert elapsed >= timeout - 0.002, (elapsed, timeout)
    await asyncio.wait_for(all_arrived.wait(), 5)
    release.set()
    for _ in range(200):
        if bus.stats().late_replies_dropped == 3:
            break
        await asyncio.sleep(0)
    assert bus.stats().late_replies_dropped == 3
    await bus.close()


async def test_answered_requests_do_not_pile_up_in_the_deadline_heap() -> None:
    bus = InMemoryBus()
    await bus.start()

    async def echo(envelope: Envelope) -> Envelope:
        return envelope.reply(DataPart(value=envelope.data()[0]))

    await bus.subscribe("echo", echo)
    for n in range(5000):
        request = Envelope(sender="tester", recipient="echo", kind=Kind.REQUEST, content=[DataPart(value=n)])
        assert (await bus.request(request, timeout=60)).data() == [n]
    assert not bus._pending
    assert len(bus._deadlines) <= 1025, "finished requests are compacted out of the heap"
    await bus.close()
    assert not bus._deadlines and bus._sweeper is None


async def test_has_listeners_counts_subscriptions_not_wiretaps() -> None:
    bus = InMemoryBus()
    await bus.start()
    try:

        async def nothing(envelope: Envelope) -> None:
            return None

        await bus.wiretap(nothing)
        assert not bus.has_listeners("stream.c1")
        exact = await bus.subscribe("stream.c1", nothing)
        assert bus.has_listeners("stream.c1") and not bus.has_listeners("stream.c2")
        await exact.cancel()
        assert not bus.has_listeners("stream.c1")
        await bus.subscribe("stream.*", nothing)
        assert bus.has_listeners("stream.c2")
    finally:
        await bus.close()
