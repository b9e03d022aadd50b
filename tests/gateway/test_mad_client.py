"""How the gateway's bus client turns transport failures into HTTP errors (real RedisBus, real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from bus.envelope import Envelope, Principal, ProsePart
from bus.redis import RedisBus
from gateway.drain import Drain
from gateway.errors import ApiError
from gateway.mad_client import MadClient
from tests.bus.redis_server import delete_prefix, redis_url, unique_prefix
from tests.support.waiting import WAIT, eventually_async

pytestmark = pytest.mark.redis

ALICE = Principal(kind="user", name="alice")


@pytest.fixture
async def small_bus(request: pytest.FixtureRequest) -> AsyncIterator[RedisBus]:
    """A bus whose work streams hold a single unacknowledged entry."""
    url, prefix = redis_url(), unique_prefix(request.node.name)
    bus = RedisBus(url, prefix=prefix, max_len=1, janitor_interval=60, reclaim_idle=1.0, presence_ttl=2.0, block=0.5)
    await bus.start()
    yield bus
    await bus.close(drain_timeout=1)
    delete_prefix(url, prefix)


async def test_a_request_kept_out_by_a_full_stream_is_503_backpressure(small_bus: RedisBus) -> None:
    release = asyncio.Event()

    async def slow(envelope: Envelope) -> Envelope:
        await release.wait()
        return envelope.reply(ProsePart(text="done"))

    await small_bus.subscribe("rogers", slow, concurrency=1)
    client = MadClient(small_bus, Drain(), reply_timeout=WAIT)

    def envelope(text: str, timeout: float) -> Envelope:
        return client.envelope("rogers", ProsePart(text=text), principal=ALICE, conversation_id=None, timeout=timeout)

    first = asyncio.create_task(client.send(envelope("first", WAIT)))
    stream = small_bus.keys.address_stream("rogers")

    async def full() -> bool:
        return await small_bus.redis.xlen(stream) == 1

    await eventually_async(full, what="the stream to hold its one entry")
    with pytest.raises(ApiError) as refused:
        await client.send(envelope("second", 0.5))
    assert refused.value.status == 503
    assert refused.value.info.code == "backpressure" and refused.value.info.retryable
    assert "rogers has too much queued work" in refused.value.info.message
    release.set()
    assert (await first).text() == "done"
