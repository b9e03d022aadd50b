"""Bus fixtures: the contract suite runs against every transport registered here.

A transport registers a factory in ``BUS_FACTORIES``; the ``bus`` fixture is
parametrised over all of them, so the Redis bus must pass the same tests unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis

from bus.base import Bus
from bus.memory import InMemoryBus

if TYPE_CHECKING:
    from bus.redis import RedisBus

BusFactory = Callable[[pytest.FixtureRequest], Awaitable[Bus]]


async def _memory(request: pytest.FixtureRequest) -> Bus:
    return InMemoryBus()


async def _redis(request: pytest.FixtureRequest) -> Bus:
    from bus.redis import RedisBus
    from tests.bus.redis_server import delete_prefix, redis_url, unique_prefix

    url = redis_url()
    prefix = unique_prefix(request.node.name)
    request.addfinalizer(lambda: delete_prefix(url, prefix))
    return RedisBus(url, prefix=prefix, reclaim_idle=1.0, presence_ttl=2.0, janitor_interval=0.5, block=0.5)


BUS_FACTORIES: dict[str, BusFactory] = {"memory": _memory, "redis": _redis}


@pytest.fixture(params=sorted(BUS_FACTORIES))
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    instance = await BUS_FACTORIES[request.param](request)
    await instance.start()
    try:
        yield instance
    finally:
        await instance.close(drain_timeout=2)


# ---- RedisBus fixtures shared by the Redis-specific test modules ------------------------

FAST_REDIS = {"reclaim_idle": 0.4, "presence_ttl": 1.0, "janitor_interval": 0.2, "block": 0.2, "orphan_grace": 0}
"""Short timings so recovery paths run in milliseconds, not the production seconds."""

MakeBus = Callable[..., Awaitable["RedisBus"]]


@pytest.fixture
def url() -> str:
    from tests.bus.redis_server import redis_url

    return redis_url()


@pytest.fixture
def prefix(url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    from tests.bus.redis_server import delete_prefix, unique_prefix

    name = unique_prefix(request.node.name)
    yield name
    delete_prefix(url, name)


@pytest.fixture
async def make_bus(url: str, prefix: str) -> AsyncIterator[MakeBus]:
    """Start RedisBus instances sharing the test's prefix; all are closed at the end."""
    from bus.redis import RedisBus

    buses: list[RedisBus] = []

    async def make(**overrides: object) -> RedisBus:
        bus = RedisBus(url, **{**FAST_REDIS, "prefix": prefix, **overrides})
        await bus.start()
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.close(drain_timeout=1)


@pytest.fixture
async def raw(url: str) -> AsyncIterator[Redis]:
    """A plain redis-py client on the test database, to inspect or inject stream entries."""
    client = Redis.from_url(url)
    yield client
    await client.aclose()
