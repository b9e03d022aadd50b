"""A Redis restart during traffic: the bus reconnects, re-registers and keeps serving.

Uses a private redis-server on its own port (never the shared 6379), killed and
restarted without persistence, so every stream, group and registration is lost.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest

from bus.base import BusError, DeadlineExceeded
from bus.envelope import Envelope, Kind, ProsePart
from bus.redis import RedisBus
from tests.bus.redis_server import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.slow]

WAIT = 20.0
FAST = {"reclaim_idle": 0.4, "presence_ttl": 1.0, "janitor_interval": 0.2, "block": 0.2, "backoff_max": 0.2}


@pytest.fixture
def private_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        import os

        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server must be installed under CI for the reconnect test", pytrace=False)
        pytest.skip("install redis-server to run the reconnect test (it restarts a private server)")
    server = RedisServer().start()
    yield server
    server.cleanup()


async def echo(envelope: Envelope) -> Envelope:
    return envelope.reply(ProsePart(text=f"echo: {envelope.text()}"))


async def test_bus_survives_a_redis_restart_during_traffic(private_server: RedisServer) -> None:
    server = RedisBus(private_server.url, prefix="reconnect", **FAST)
    client = RedisBus(private_server.url, prefix="reconnect", **FAST)
    await server.start()
    await client.start()
    tapped: list[Envelope] = []

    async def observe(envelope: Envelope) -> None:
        tapped.append(envelope)

    await client.wiretap(observe)
    await server.subscribe("echo", echo)
    outcomes: list[str] = []
    stop = asyncio.Event()
    restarted = asyncio.Event()
    after_restart_ok = asyncio.Event()

    async def traffic() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                reply = await client.request(
                    Envelope(sender="tester", recipient="echo", kind=Kind.REQUEST, content=[ProsePart(text=str(n))]),
                    timeout=0.5,
                )
            except (DeadlineExceeded, BusError) as exc:
                outcomes.append(type(exc).__name__)
                continue
            outcomes.append("reply" if reply.kind is Kind.REPLY else reply.error.code if reply.error else "error")
            if reply.kind is Kind.REPLY and reply.text() == f"echo: {n}" and restarted.is_set():
                after_restart_ok.set()

    try:
        load = asyncio.create_task(traffic())
        await _until(lambda: outcomes.count("reply") >= 5)
        await asyncio.to_thread(private_server.restart)
        restarted.set()
        await asyncio.wait_for(after_restart_ok.wait(), WAIT)
        stop.set()
        await asyncio.wait_for(load, WAIT)
        await _until(lambda: any(e.kind is Kind.REPLY for e in tapped[-3:]))
    finally:
        stop.set()
        await client.close(drain_timeout=1)
        await server.close(drain_timeout=1)
    assert client.transport.reconnects >= 1
    assert server.transport.reconnects >= 1
    assert outcomes[-1] == "reply"


async def _until(predicate, timeout: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
