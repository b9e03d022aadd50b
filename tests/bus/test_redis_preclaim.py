"""Claims made at publish time (``lua.PUBLISH``) keep "effects once" while saving the consumer a round trip.

A fresh entry marked by the publish script is handled without the ``CLAIM`` script;
a second copy of the same envelope id, published while the first is in flight or
after it is done, or arriving on a second stream of the same group, must still be
dropped, and a copy nobody claimed at publish time must still go through ``CLAIM``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from redis.asyncio import Redis

from bus.envelope import DataPart, Envelope, Kind, ProsePart
from bus.redis.settings import SEP
from tests.bus.conftest import MakeBus

pytestmark = pytest.mark.redis

WAIT = 10.0


def event(topic: str, value: object) -> Envelope:
    return Envelope(sender="tester", recipient=topic, kind=Kind.EVENT, content=[DataPart(value=value)])


async def eventually(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def test_publish_claims_a_fresh_entry_for_every_group_of_its_stream(make_bus: MakeBus, raw: Redis) -> None:
    bus = await make_bus()
    release = asyncio.Event()
    seen: list[str] = []

    async def slow(envelope: Envelope) -> None:
        seen.append(envelope.id)
        await release.wait()

    await bus.subscribe("ledger", slow)
    await bus.subscribe("ledger", slow, group="audit")
    first = event("ledger", 1)
    await bus.publish(first)
    stream = bus.keys.address_stream("ledger")
    [(entry_id, fields)] = await raw.xrange(stream)
    assert fields[b"c"] == first.id.encode()
    for group in ("ledger", "audit"):
        claim = await raw.get(bus.keys.dedup(group, first.id))
        assert claim is not None and claim.startswith(f"run{SEP}{stream}/{entry_id.decode()}{SEP}".encode())
    await eventually(lambda: len(seen) == 2)
    release.set()


async def test_same_envelope_published_twice_is_handled_once_per_group(make_bus: MakeBus, raw: Redis) -> None:
    bus = await make_bus()
    release = asyncio.Event()
    seen: list[str] = []

    async def slow(envelope: Envelope) -> None:
        seen.append(envelope.id)
        await release.wait()

    await bus.subscribe("ledger", slow)
    twice = event("ledger", {"amount": 10})
    await bus.publish(twice)
    await eventually(lambda: seen == [twice.id])
    await bus.publish(twice)  # a retry while the first copy is in flight
    await eventually(lambda: bus.transport.duplicates_dropped == 1)
    release.set()
    await bus.publish(event("ledger", {"amount": 20}))
    await eventually(lambda: len(seen) == 2)
    stream = bus.keys.address_stream("ledger")
    await eventually_pending(raw, stream, "ledger", 0)
    await bus.publish(twice)  # a retry after it was done
    await eventually(lambda: bus.transport.duplicates_dropped == 2)
    assert seen.count(twice.id) == 1
    marks = [fields.get(b"c") for _, fields in await raw.xrange(stream)]
    assert marks.count(twice.id.encode()) == 1, "only the first copy may skip the CLAIM script"


async def test_a_group_on_an_address_and_a_pattern_gets_one_copy(make_bus: MakeBus) -> None:
    bus = await make_bus()
    seen: list[str] = []

    async def record(envelope: Envelope) -> None:
        seen.append(envelope.id)

    await bus.subscribe("orders.new", record, group="billing")
    await bus.subscribe("orders.*", record, group="billing")
    events = [event("orders.new", 1), event("orders.new", 2)]
    for each in events:
        await bus.publish(each)
    await eventually(lambda: len(seen) == 2 and bus.transport.duplicates_dropped == 2)
    assert sorted(seen) == sorted(e.id for e in events)


async def test_a_forged_or_foreign_mark_goes_through_the_claim(make_bus: MakeBus, raw: Redis) -> None:
    bus = await make_bus()
    seen: list[str] = []

    async def record(envelope: Envelope) -> Envelope:
        seen.append(envelope.id)
        return envelope.reply(ProsePart(text="ok"))

    await bus.subscribe("ledger", record)
    copy = event("ledger", 1)
    stream = bus.keys.address_stream("ledger")
    await raw.xadd(stream, {"e": copy.model_dump_json(), "c": "not-this-envelope"})
    await raw.xadd(stream, {"e": copy.model_dump_json()})
    await bus.publish(event("ledger", 2))
    await eventually(lambda: len(seen) == 2 and bus.transport.duplicates_dropped == 1)
    assert seen.count(copy.id) == 1


async def eventually_pending(raw: Redis, stream: str, group: str, count: int) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + WAIT
    while (await raw.xpending(stream, group))["pending"] != count:
        if loop.time() > end:
            raise AssertionError(f"{stream} did not reach {count} pending entries")
        await asyncio.sleep(0.01)
