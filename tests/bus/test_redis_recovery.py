"""RedisBus when things go wrong for a caller: a dead consumer's work behind a backlog, a request that
is dead-lettered, a request that meets a full stream.

Crashes are ``RedisBus.abort()`` (nothing acknowledged, nothing unregistered: what ``kill -9``
leaves); tests/deployment/test_crash.py does the same with real processes.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from bus.base import DeadlineExceeded
from bus.envelope import DataPart, Envelope, Kind, ProsePart
from bus.redis import BusBackpressure
from tests.bus.conftest import MakeBus
from tests.bus.test_redis_bus import WAIT, eventually, eventually_async, req

pytestmark = pytest.mark.redis


async def test_a_dead_consumers_requests_go_before_the_backlog_of_a_busy_survivor(make_bus: MakeBus) -> None:
    """The survivor never has a free handler slot when its reclaimer looks: the dead consumer's requests
    still take the next free slots, ahead of the new work waiting in the stream."""
    client = await make_bus()
    victim = await make_bus()
    held = 0
    both_held = asyncio.Event()

    async def hangs(envelope: Envelope) -> Envelope:
        nonlocal held
        held += 1
        if held == 2:
            both_held.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    await victim.subscribe("worker", hangs, concurrency=2)
    orphans = [asyncio.create_task(client.request(req("worker", f"orphan {i}"), timeout=WAIT)) for i in range(2)]
    await asyncio.wait_for(both_held.wait(), WAIT)

    order: list[str] = []
    gate = asyncio.Event()

    async def survivor(envelope: Envelope) -> Envelope:
        order.append(envelope.text())
        await gate.wait()
        return envelope.reply(ProsePart(text=f"done {envelope.text()}"))

    live = await make_bus()
    await live.subscribe("worker", survivor, concurrency=1)
    backlog = [asyncio.create_task(client.request(req("worker", f"new {i}"), timeout=WAIT)) for i in range(4)]
    await eventually(lambda: order == ["new 0"])  # the victim has no free slot: it reads nothing more
    await victim.abort()
    await eventually(lambda: live.transport.overdue_waits >= 1)
    gate.set()
    answers = await asyncio.gather(*orphans, *backlog)
    assert all(a.kind is Kind.REPLY for a in answers), answers
    assert order == ["new 0", "orphan 0", "orphan 1", "new 1", "new 2", "new 3"]
    assert live.transport.reclaimed == 2


async def test_a_dead_lettered_request_answers_its_caller_at_once(make_bus: MakeBus) -> None:
    client = await make_bus(max_deliveries=2)
    crashed = asyncio.Event()

    async def crashes_its_process(envelope: Envelope) -> Envelope:
        crashed.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    request = req("fragile", "poison")
    for attempt in range(2):
        crashed.clear()
        victim = await make_bus(max_deliveries=2)
        await victim.subscribe("fragile", crashes_its_process)
        if attempt == 0:
            pending = asyncio.create_task(client.request(request, timeout=600))
        await asyncio.wait_for(crashed.wait(), WAIT)
        await victim.abort()

    live = await make_bus(max_deliveries=2)
    calls: list[Envelope] = []

    async def record(envelope: Envelope) -> Envelope:
        calls.append(envelope)
        return envelope.reply(ProsePart(text="never"))

    await live.subscribe("fragile", record)
    answer = await asyncio.wait_for(pending, WAIT)
    assert answer.kind is Kind.ERROR and answer.error is not None
    assert answer.error.code == "dead_lettered"
    assert "'fragile'" in answer.error.message and "delivered 2 times" in answer.error.message
    assert not answer.error.retryable
    assert answer.correlation_id == request.id and answer.recipient == "tester" and answer.sender == "bus"
    assert calls == []
    [letter] = await live.dead_letters()
    assert request.id in letter.payload


async def test_an_event_or_a_tap_copy_that_is_dead_lettered_answers_nobody(make_bus: MakeBus) -> None:
    """Only a request has a caller: an event that keeps killing its consumer is dead-lettered silently."""
    publisher = await make_bus(max_deliveries=1)
    crashed = asyncio.Event()

    async def crashes_its_process(envelope: Envelope) -> None:
        crashed.set()
        await asyncio.Event().wait()

    victim = await make_bus(max_deliveries=1)
    await victim.subscribe("fragile", crashes_its_process)
    await publisher.publish(
        Envelope(sender="tester", recipient="fragile", kind=Kind.EVENT, content=[DataPart(value=1)])
    )
    await asyncio.wait_for(crashed.wait(), WAIT)
    await victim.abort()
    live = await make_bus(max_deliveries=1)
    await live.subscribe("fragile", crashes_its_process)
    await eventually(lambda: live.transport.dead_lettered == 1)
    assert live.stats().published == 0


async def test_a_request_blocked_by_a_full_stream_raises_backpressure(make_bus: MakeBus, raw: Redis) -> None:
    bus = await make_bus(max_len=2, janitor_interval=60)
    release = asyncio.Event()
    seen: list[str] = []

    async def slow(envelope: Envelope) -> Envelope:
        await release.wait()
        seen.append(envelope.text())
        return envelope.reply(ProsePart(text="ok"))

    await bus.subscribe("queue", slow, concurrency=1)
    first = [asyncio.create_task(bus.request(req("queue", str(i)), timeout=WAIT)) for i in range(2)]
    stream = bus.keys.address_stream("queue")

    await eventually_async(lambda: _length_is(raw, stream, 2))
    blocked = req("queue", "blocked")
    with pytest.raises(BusBackpressure, match=stream):
        await bus.request(blocked, timeout=0.5)
    assert bus.transport.backpressure_waits >= 1
    release.set()
    answers = await asyncio.gather(*first)
    assert [a.text() for a in answers] == ["ok", "ok"]
    assert sorted(seen) == ["0", "1"], "the refused request was never written"


async def test_a_request_that_got_through_but_had_no_answer_still_times_out(make_bus: MakeBus) -> None:
    bus = await make_bus()
    release = asyncio.Event()

    async def slow(envelope: Envelope) -> Envelope:
        await release.wait()
        return envelope.reply(ProsePart(text="late"))

    await bus.subscribe("sluggish", slow)
    with pytest.raises(DeadlineExceeded):
        await bus.request(req("sluggish"), timeout=0.3)
    release.set()


async def _length_is(raw: Redis, stream: str, length: int) -> bool:
    return await raw.xlen(stream) == length
