"""Bus fixtures: the contract suite runs against every transport registered here.

A transport registers a factory in ``BUS_FACTORIES``; the ``bus`` fixture is
parametrised over all of them, so the Redis bus must pass the same tests unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bus.base import Bus
from bus.memory import InMemoryBus

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
