"""RedisBus beyond the shared contract: duplicates, crashed consumers, poison, invalid entries,
trimming and backpressure, late replies, cross-instance routing, wiretap groups.

Every test has its own key prefix on the shared test database and deletes its keys.
Synchronisation is by events and conditions, never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from bus.base import BusClosed, DeadlineExceeded
from bus.envelope import DataPart, Envelope, Kind, ProsePart
from bus.redis import RedisBus
from tests.bus.conftest import MakeBus

pytestmark = pytest.mark.redis

WAIT = 10.0


def req(recipient: str, text: str = "hello", sender: str = "tester") -> Envelope:
    return Envelope(sender=sender, recipient=recipient, kind=Kind.REQUEST, content=[ProsePart(text=text)])


def event(topic: str, value: object) -> Envelope:
    return Envelope(sender="tester", recipient=topic, kind=Kind.EVENT, content=[DataPart(value=value)])


async def echo(envelope: Envelope) -> Envelope:
    return envelope.reply(ProsePart(text=f"echo: {envelope.text()}"))


async def eventually(predicate: Callable[[], bool], timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


async def eventually_async(predicate: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_same_envelope_twice_on_the_stream_is_handled_once(make_bus: MakeBus, raw: Redis) -> None:
    bus = await make_bus()
    seen: list[str] = []
    await bus.subscribe("ledger", lambda e: _record(seen, e))
    duplicate = event("ledger", {"amount": 10})
    stream = bus.keys.address_stream("ledger")
    await raw.xadd(stream, {"e": duplicate.model_dump_json()})
    await raw.xadd(stream, {"e": duplicate.model_dump_json()})
    await bus.publish(event("ledger", {"amount": 20}))
    await eventually(lambda: len(seen) == 2 and bus.transport.duplicates_dropped == 1)
    assert seen.count(duplicate.id) == 1
    await eventually_async(lambda: _pending_is(raw, stream, "ledger", 0))


async def _record(target: list[str], envelope: Envelope) -> None:
    target.append(envelope.id)


async def _pending_is(raw: Redis, stream: str, group: str, count: int) -> bool:
    return (await raw.xpending(stream, group))["pending"] == count


async def test_entry_of_a_crashed_consumer_is_reclaimed_and_answered(make_bus: MakeBus) -> None:
    client = await make_bus()
    victim = await make_bus()
    started = asyncio.Event()

    async def hangs(envelope: Envelope) -> Envelope:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    await victim.subscribe("worker", hangs)
    pending = asyncio.create_task(client.request(req("worker", "job 1"), timeout=WAIT))
    await asyncio.wait_for(started.wait(), WAIT)
    await victim.abort()

    handled: list[str] = []

    async def survivor(envelope: Envelope) -> Envelope:
        handled.append(envelope.text())
        return envelope.reply(ProsePart(text="done by survivor"))

    live = await make_bus()
    await live.subscribe("worker", survivor)
    reply = await asyncio.wait_for(pending, WAIT)
    assert reply.kind is Kind.REPLY and reply.text() == "done by survivor"
    assert handled == ["job 1"]
    assert live.transport.reclaimed == 1
    assert reply.recipient == "tester"


async def test_poison_message_is_dead_lettered_after_max_deliveries(make_bus: MakeBus) -> None:
    publisher = await make_bus(max_deliveries=2)
    crashes = 0

    async def crashes_its_process(envelope: Envelope) -> None:
        nonlocal crashes
        crashes += 1
        crashed.set()
        await asyncio.Event().wait()

    for _ in range(2):
        crashed = asyncio.Event()
        victim = await make_bus(max_deliveries=2)
        await victim.subscribe("fragile", crashes_its_process)
        if crashes == 0:
            poison = event("fragile", {"payload": "poison"})
            await publisher.publish(poison)
        await asyncio.wait_for(crashed.wait(), WAIT)
        await victim.abort()

    survivor_calls: list[Envelope] = []
    live = await make_bus(max_deliveries=2)
    await live.subscribe("fragile", lambda e: _collect(survivor_calls, e))
    await eventually(lambda: live.transport.dead_lettered == 1)
    letters = await live.dead_letters()
    assert len(letters) == 1
    letter = letters[0]
    assert "delivered 2 times" in letter.reason
    assert letter.deliveries == 2
    assert letter.stream == live.keys.address_stream("fragile")
    assert letter.group == "fragile"
    assert poison.id in letter.payload
    assert crashes == 2
    assert survivor_calls == []


async def _collect(target: list[Envelope], envelope: Envelope) -> None:
    target.append(envelope)


async def test_invalid_entries_go_to_dead_letters_with_the_validation_error(make_bus: MakeBus, raw: Redis) -> None:
    bus = await make_bus()
    calls: list[Envelope] = []
    await bus.subscribe("inbox_mad", lambda e: _collect(calls, e))
    stream = bus.keys.address_stream("inbox_mad")
    bad_field = event("inbox_mad", 1).model_dump(mode="json") | {"colour": "red"}
    bad_field.pop("sender")
    await raw.xadd(stream, {"e": "{not json"})
    await raw.xadd(stream, {"e": json.dumps(bad_field)})
    await raw.xadd(stream, {"something": "else"})
    await raw.xadd(stream, {"e": b"\xff\xfe"})
    good = event("inbox_mad", 2)
    await bus.publish(good)
    await eventually(lambda: len(calls) == 1 and bus.transport.dead_lettered == 4)
    assert calls[0].id == good.id
    reasons = [letter.reason for letter in reversed(await bus.dead_letters())]
    assert "Invalid JSON" in reasons[0]
    assert "sender: Field required" in reasons[1]
    assert "colour: Extra inputs are not permitted" in reasons[1]
    assert "no 'e' field" in reasons[2]
    assert "validation failed" in reasons[3]
    assert bus.stats().rejected == 4
    await eventually_async(lambda: _pending_is(raw, stream, "inbox_mad", 0))


async def test_dead_letters_limit_is_validated(make_bus: MakeBus) -> None:
    bus = await make_bus()
    with pytest.raises(ValueError, match="limit"):
        await bus.dead_letters(limit=0)


async def test_trimming_never_drops_unacknowledged_entries(make_bus: MakeBus, raw: Redis) -> None:
    bus = await make_bus(janitor_interval=60)
    release = asyncio.Event()
    slow_seen: list[object] = []
    fast_seen: list[object] = []

    async def slow(envelope: Envelope) -> None:
        await release.wait()
        slow_seen.append(envelope.data()[0])

    async def fast(envelope: Envelope) -> None:
        fast_seen.append(envelope.data()[0])

    await bus.subscribe("orders", slow, group="slow", concurrency=1)
    await bus.subscribe("orders", fast, group="fast")
    for i in range(6):
        await bus.publish(event("orders", i))
    stream = bus.keys.address_stream("orders")
    await eventually(lambda: len(fast_seen) == 6)
    await eventually_async(lambda: _pending_is(raw, stream, "slow", 1))
    _, trimmed = await bus.janitor()
    assert trimmed == 0
    assert await raw.xlen(stream) == 6
    release.set()
    await eventually(lambda: len(slow_seen) == 6)
    await eventually_async(lambda: _pending_is(raw, stream, "slow", 0))
    _, trimmed = await bus.janitor()
    assert trimmed == 5
    assert await raw.xlen(stream) == 1
    assert sorted(slow_seen) == list(range(6)) and sorted(fast_seen) == list(range(6))


async def test_publish_waits_while_the_stream_is_full_and_loses_nothing(make_bus: MakeBus) -> None:
    bus = await make_bus(max_len=3, janitor_interval=60)
    release = asyncio.Event()
    seen: list[object] = []

    async def slow(envelope: Envelope) -> None:
        await release.wait()
        seen.append(envelope.data()[0])

    await bus.subscribe("queue", slow, concurrency=1)
    for i in range(3):
        await bus.publish(event("queue", i))
    blocked = asyncio.create_task(bus.publish(event("queue", 3)))
    await eventually(lambda: bus.transport.backpressure_waits >= 2)
    assert not blocked.done()
    release.set()
    await asyncio.wait_for(blocked, WAIT)
    await eventually(lambda: len(seen) == 4)
    assert sorted(seen) == [0, 1, 2, 3]


async def test_reply_to_a_requester_that_has_gone_is_dropped_and_counted(make_bus: MakeBus) -> None:
    server = await make_bus()
    requester = await make_bus()
    started = asyncio.Event()
    release = asyncio.Event()
    answered = asyncio.Event()

    async def slow(envelope: Envelope) -> Envelope:
        started.set()
        await release.wait()
        answered.set()
        return envelope.reply(ProsePart(text="nobody listens"))

    await server.subscribe("slow", slow)
    pending = asyncio.create_task(requester.request(req("slow"), timeout=WAIT))
    await asyncio.wait_for(started.wait(), WAIT)
    await requester.close(drain_timeout=0)
    with pytest.raises(BusClosed):
        await pending
    assert not await server.redis.exists(requester.inbox)
    release.set()
    await asyncio.wait_for(answered.wait(), WAIT)
    await eventually(lambda: server.stats().late_replies_dropped == 1)


async def test_request_reply_between_two_instances_with_one_tap_seeing_everything_once(make_bus: MakeBus) -> None:
    server = await make_bus()
    client = await make_bus()
    observer_bus_a = await make_bus()
    observer_bus_b = await make_bus()
    tapped_a: list[Envelope] = []
    tapped_b: list[Envelope] = []
    await observer_bus_a.wiretap(lambda e: _collect(tapped_a, e), group="rogers")
    await observer_bus_b.wiretap(lambda e: _collect(tapped_b, e), group="rogers")
    await server.subscribe("echo", echo)
    requests = [req("echo", str(i)) for i in range(20)]
    replies = await asyncio.gather(*(client.request(r, timeout=WAIT) for r in requests))
    for request, reply in zip(requests, replies, strict=True):
        assert reply.correlation_id == request.id and reply.text() == f"echo: {request.text()}"
        assert reply.recipient == "tester"
    await eventually(lambda: len(tapped_a) + len(tapped_b) == 40)
    ids = [e.id for e in tapped_a + tapped_b]
    assert len(set(ids)) == 40, "the shared tap group sees each envelope exactly once"
    assert {r.id for r in requests} | {r.id for r in replies} == set(ids)
    assert all(e.reply_to == client.inbox_address for e in tapped_a + tapped_b if e.kind is Kind.REQUEST)


async def test_no_route_across_instances_after_close_and_after_a_crash(make_bus: MakeBus) -> None:
    client = await make_bus()
    polite = await make_bus()
    await polite.subscribe("svc", echo)
    assert (await client.request(req("svc"), timeout=WAIT)).kind is Kind.REPLY
    await polite.close()
    reply = await client.request(req("svc"), timeout=WAIT)
    assert reply.error is not None and reply.error.code == "no_route"

    crashed = await make_bus()
    await crashed.subscribe("svc", echo)
    assert (await client.request(req("svc"), timeout=WAIT)).kind is Kind.REPLY
    await crashed.abort()

    async def routed_nowhere() -> bool:
        """Until the crashed instance's registration expires, requests still go to its stream."""
        try:
            answer = await client.request(req("svc"), timeout=0.3)
        except DeadlineExceeded:
            return False
        return answer.error is not None and answer.error.code == "no_route"

    await eventually_async(routed_nowhere)


async def test_crashed_instance_leaves_nothing_behind(make_bus: MakeBus, raw: Redis) -> None:
    survivor = await make_bus()
    crashed = await make_bus()
    await crashed.subscribe("events.*", lambda e: _collect([], e))
    await crashed.wiretap(lambda e: _collect([], e))
    pattern_stream = crashed.keys.pattern_stream("events.*")
    assert len(await raw.xinfo_groups(pattern_stream)) == 1
    assert await raw.exists(crashed.inbox)
    await crashed.abort()
    await eventually_async(lambda: _gone(raw, crashed.inbox))
    await eventually_async(lambda: _gone(raw, pattern_stream))
    await survivor.publish(event("events.x", 1))
    assert survivor.stats().undeliverable == 1


async def _gone(raw: Redis, key: str) -> bool:
    return not await raw.exists(key)


async def test_close_removes_inbox_and_private_groups(make_bus: MakeBus, raw: Redis) -> None:
    bus = await make_bus()
    await bus.subscribe("events.*", lambda e: _collect([], e))
    await bus.subscribe("named", echo)
    stream = bus.keys.pattern_stream("events.*")
    assert await raw.exists(bus.inbox)
    await bus.close()
    assert not await raw.exists(bus.inbox)
    assert not await raw.exists(stream) or await raw.xinfo_groups(stream) == []
    assert [g["name"] for g in await raw.xinfo_groups(bus.keys.address_stream("named"))] == [b"named"]
    assert await raw.zcard(bus.keys.routes("named")) == 0


async def test_queue_depth_counts_unfinished_work(make_bus: MakeBus) -> None:
    bus = await make_bus(janitor_interval=60)
    release = asyncio.Event()

    async def slow(envelope: Envelope) -> None:
        await release.wait()

    await bus.subscribe("backlog", slow, concurrency=1)
    for i in range(4):
        await bus.publish(event("backlog", i))
    assert (await bus.refresh_queue_depth()) == {"backlog": 4}
    assert bus.stats().queue_depth == {"backlog": 4}
    release.set()
    await eventually_async(lambda: _depth_is(bus, 0))


async def _depth_is(bus: RedisBus, count: int) -> bool:
    return (await bus.refresh_queue_depth()).get("backlog") == count


def test_bad_settings_name_the_field(url: str) -> None:
    with pytest.raises(ValidationError) as info:
        RedisBus(url, max_len=0, prefix="bad prefix")
    fields = {err["loc"][0] for err in info.value.errors()}
    assert fields == {"max_len", "prefix"}
    with pytest.raises(ValidationError, match="colour"):
        RedisBus(url, colour="red")


async def test_bad_group_name_is_refused(make_bus: MakeBus) -> None:
    bus = await make_bus()
    with pytest.raises(ValueError, match="group"):
        await bus.subscribe("x", echo, group="a\x1fb")


async def test_janitor_drops_consumers_of_crashed_instances(make_bus: MakeBus, raw: Redis) -> None:
    crashed = await make_bus()
    await crashed.subscribe("svc", echo)
    live = await make_bus()
    await live.subscribe("svc", echo)
    stream = live.keys.address_stream("svc")
    assert (await live.request(req("svc"), timeout=WAIT)).kind is Kind.REPLY
    await crashed.abort()

    async def only_live_consumer_left() -> bool:
        consumers = {c["name"].decode() for c in await raw.xinfo_consumers(stream, "svc")}
        return not any(name.startswith(crashed.instance) for name in consumers)

    await eventually_async(only_live_consumer_left)
    assert (await live.request(req("svc"), timeout=WAIT)).kind is Kind.REPLY
