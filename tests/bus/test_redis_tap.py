"""The Redis wiretap acknowledges a batch only once its observer has returned.

Each test has its own key prefix and deletes its keys; synchronisation is by events
and Redis state, never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from bus.envelope import DataPart, Envelope, Kind
from bus.redis import RedisBus
from tests.bus.redis_server import delete_prefix, redis_url, unique_prefix
from tests.bus.test_redis_bus import eventually, eventually_async

pytestmark = pytest.mark.redis

WAIT = 10.0
FAST = {"reclaim_idle": 0.6, "presence_ttl": 1.0, "janitor_interval": 0.2, "block": 0.2, "max_deliveries": 3}
GROUP = "rogers"


def event(value: int) -> Envelope:
    return Envelope(sender="tester", recipient="events.tapped", kind=Kind.EVENT, content=[DataPart(value=value)])


@pytest.fixture
def prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    name = unique_prefix(request.node.name)
    yield name
    delete_prefix(redis_url(), name)


@pytest.fixture
async def raw() -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url())
    yield client
    await client.aclose()


async def pending_ids(raw: Redis, stream: str) -> list[bytes]:
    entries = await raw.xpending_range(stream, GROUP, min="-", max="+", count=1000)
    return [entry["message_id"] for entry in entries]


async def envelope_ids(raw: Redis, stream: str, entry_ids: list[bytes]) -> list[str]:
    found = []
    for entry_id in entry_ids:
        for _, fields in await raw.xrange(stream, min=entry_id, max=entry_id):
            found.append(Envelope.model_validate_json(fields[b"e"]).id)
    return found


async def test_batch_stays_pending_until_the_observer_returns(prefix: str, raw: Redis) -> None:
    bus = RedisBus(redis_url(), prefix=prefix, **FAST)
    other = RedisBus(redis_url(), prefix=prefix, **FAST)
    await bus.start()
    await other.start()
    entered = asyncio.Event()
    release = asyncio.Event()
    calls: list[list[str]] = []
    returned: list[str] = []
    elsewhere: list[str] = []

    async def held(batch: list[Envelope]) -> None:
        calls.append([e.id for e in batch])
        entered.set()
        await release.wait()
        returned.extend(e.id for e in batch)

    async def spare(batch: list[Envelope]) -> None:
        elsewhere.extend(e.id for e in batch)

    try:
        await bus.wiretap_batches(held, batch=50, group=GROUP)
        published = [event(i) for i in range(10)]
        for envelope in published:
            await bus.publish(envelope)
        await asyncio.wait_for(entered.wait(), WAIT)
        first = calls[0]
        stream = bus.keys.tap
        assert await envelope_ids(raw, stream, await pending_ids(raw, stream)) == first

        # A second tap of the group joins; it reclaims entries idle for reclaim_idle. The heartbeat of the
        # observing bus renews the batch's entries, so across several renewals (longer than reclaim_idle)
        # they stay pending, owned by the first tap, delivered once.
        await other.wiretap_batches(spare, batch=50, group=GROUP)
        await _renewals(raw, stream, count=4, limit_ms=bus.settings.reclaim_idle * 1000)
        assert await envelope_ids(raw, stream, await pending_ids(raw, stream)) == first
        assert calls == [first]
        assert set(elsewhere).isdisjoint(first), "a batch still being observed is not handed to another tap"

        release.set()
        await eventually(lambda: len(returned) + len(elsewhere) == len(published))
        await eventually_async(lambda: _nothing_pending(raw, stream))
        assert returned[: len(first)] == first
        assert sorted(returned + elsewhere) == sorted(e.id for e in published)
    finally:
        release.set()
        await other.close(drain_timeout=1)
        await bus.close(drain_timeout=1)


async def _renewals(raw: Redis, stream: str, *, count: int, limit_ms: float) -> None:
    """Wait until the pending entries' idle time has been reset ``count`` times, checking each observation:
    still pending, delivered once, never idle for ``limit_ms`` (when another tap would reclaim them)."""
    seen, previous = 0, -1
    async with asyncio.timeout(WAIT):
        while seen < count:
            entries = await raw.xpending_range(stream, GROUP, min="-", max="+", count=1000)
            assert entries, "the batch being observed must stay pending"
            assert all(e["times_delivered"] == 1 for e in entries), entries
            idle = max(e["time_since_delivered"] for e in entries)
            assert idle < limit_ms, f"entries left idle {idle} ms: the lease was not renewed"
            if idle < previous:
                seen += 1
            previous = idle
            await asyncio.sleep(0.01)


async def _nothing_pending(raw: Redis, stream: str) -> bool:
    return not await pending_ids(raw, stream)


async def test_batch_of_a_killed_tap_is_observed_by_the_next_one_in_the_group(prefix: str, raw: Redis) -> None:
    crashed = RedisBus(redis_url(), prefix=prefix, **FAST)
    await crashed.start()
    entered = asyncio.Event()
    never = asyncio.Event()

    async def stuck(batch: list[Envelope]) -> None:
        entered.set()
        await never.wait()

    survivor: RedisBus | None = None
    try:
        await crashed.wiretap_batches(stuck, batch=50, group=GROUP)
        published = [event(i) for i in range(5)]
        for envelope in published:
            await crashed.publish(envelope)
        await asyncio.wait_for(entered.wait(), WAIT)
        await crashed.abort()  # as kill -9: nothing acknowledged

        seen: list[str] = []

        async def store(batch: list[Envelope]) -> None:
            seen.extend(e.id for e in batch)

        survivor = RedisBus(redis_url(), prefix=prefix, **FAST)
        await survivor.start()
        await survivor.wiretap_batches(store, batch=50, group=GROUP)
        await eventually(lambda: set(seen) >= {e.id for e in published})
        await eventually_async(lambda: _nothing_pending(raw, survivor.keys.tap))
        assert survivor.transport_stats().reclaimed >= 1
    finally:
        never.set()
        if survivor is not None:
            await survivor.close(drain_timeout=1)


async def test_batch_whose_observer_keeps_failing_is_dead_lettered(prefix: str, raw: Redis) -> None:
    bus = RedisBus(redis_url(), prefix=prefix, **FAST)
    await bus.start()
    poison = event(-1)
    later = event(1)
    attempts: list[int] = []
    fine: list[str] = []

    async def refuse_poison(batch: list[Envelope]) -> None:
        if any(e.id == poison.id for e in batch):
            attempts.append(len(batch))
            raise RuntimeError("cannot store this")
        fine.extend(e.id for e in batch)

    try:
        await bus.wiretap_batches(refuse_poison, batch=1, group=GROUP)
        await bus.publish(poison)
        await bus.publish(later)
        await eventually(lambda: later.id in fine)
        await eventually_async(lambda: _nothing_pending(raw, bus.keys.tap))
        dead = await bus.dead_letters()
        assert len(dead) == 1
        assert (dead[0].stream, dead[0].group, dead[0].deliveries) == (bus.keys.tap, GROUP, 3)
        assert poison.id in dead[0].payload and "max_deliveries=3" in dead[0].reason
        assert len(attempts) == 3, "delivered max_deliveries times, then given up"
        assert fine == [later.id]
    finally:
        await bus.close(drain_timeout=1)
