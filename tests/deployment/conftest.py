"""Fixtures for the multi-process tests: a Redis, a private key prefix, an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from tests.bus.redis_server import delete_prefix, redis_url, unique_prefix
from tests.deployment.support import bus_url


@dataclass(frozen=True)
class Namespace:
    """Where one test's deployment lives in Redis: server, DB number, key prefix."""

    server: str
    db: int
    prefix: str

    def url(self, **settings: str) -> str:
        return bus_url(self.server, db=self.db, prefix=self.prefix, **settings)

    def redis(self) -> str:
        return bus_url(self.server, db=self.db, prefix=self.prefix).split("?", 1)[0]


def namespace(request: pytest.FixtureRequest, server: str, db: int) -> Iterator[Namespace]:
    ns = Namespace(server=server, db=db, prefix=unique_prefix(request.node.name))
    yield ns
    delete_prefix(ns.redis(), ns.prefix)


@pytest.fixture
def shared_ns(request: pytest.FixtureRequest) -> Iterator[Namespace]:
    """A private prefix in DB 14 of the shared test Redis (see tests/bus/redis_server.py)."""
    yield from namespace(request, redis_url(), 14)


@pytest.fixture
def crash_ns(request: pytest.FixtureRequest) -> Iterator[Namespace]:
    """A private prefix in DB 15 of the shared test Redis."""
    yield from namespace(request, redis_url(), 15)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session
