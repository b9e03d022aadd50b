"""Round-trip measurements for ``bench/bus_redis.py``: RedisBus vs raw redis-py streams.

Both run against the same server, in the same process and run, so their ratio is
what counts. Keys live under a throwaway prefix and are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time

from redis.asyncio import Redis

from bus.envelope import DataPart, Envelope, Kind
from bus.redis.bus import RedisBus


async def bus_round_trips(url: str, n: int, requesters: int) -> float:
    """Requests per second between two RedisBus instances (server echoes a data part)."""
    prefix = f"bench-{secrets.token_hex(4)}"
    server, client = RedisBus(url, prefix=prefix), RedisBus(url, prefix=prefix)
    await server.start()
    await client.start()

    async def echo(envelope: Envelope) -> Envelope:
        return envelope.reply(DataPart(value=envelope.data()[0]))

    await server.subscribe("echo", echo)
    per = max(1, n // requesters)

    async def requester() -> None:
        for i in range(per):
            request = Envelope(sender="bench", recipient="echo", kind=Kind.REQUEST, content=[DataPart(value=i)])
            await client.request(request, timeout=30)

    try:
        start = time.perf_counter()
        await asyncio.gather(*(requester() for _ in range(requesters)))
        elapsed = time.perf_counter() - start
    finally:
        await client.close()
        await server.close()
        await _delete(url, prefix)
    return per * requesters / elapsed


async def raw_round_trips(url: str, n: int, requesters: int) -> float:
    """The floor: XADD request → XREADGROUP → XADD reply + XACK → XREAD, no validation, no routing."""
    prefix = f"bench-{secrets.token_hex(4)}"
    requests, replies = f"{prefix}:req", f"{prefix}:rep"
    server, client = Redis.from_url(url), Redis.from_url(url)
    await server.xgroup_create(requests, "g", id="$", mkstream=True)
    waiting: dict[bytes, asyncio.Future[bytes]] = {}

    async def serve() -> None:
        while True:
            for _stream, entries in await server.xreadgroup("g", "c", {requests: ">"}, count=256, block=1000) or []:
                pipe = server.pipeline(transaction=False)
                for entry_id, fields in entries:
                    pipe.xadd(replies, {"c": fields[b"id"], "v": fields[b"v"]})
                    pipe.xack(requests, "g", entry_id)
                await pipe.execute()

    async def collect() -> None:
        last = "$"
        while True:
            for _stream, entries in await client.xread({replies: last}, count=256, block=1000) or []:
                for entry_id, fields in entries:
                    last = entry_id
                    future = waiting.pop(fields[b"c"], None)
                    if future is not None:
                        future.set_result(fields[b"v"])

    loop = asyncio.get_running_loop()
    per = max(1, n // requesters)

    async def requester(k: int) -> None:
        for i in range(per):
            key = f"{k}-{i}".encode()
            future: asyncio.Future[bytes] = loop.create_future()
            waiting[key] = future
            await client.xadd(requests, {"id": key, "v": str(i)})
            await future

    tasks = [asyncio.create_task(serve()), asyncio.create_task(collect())]
    try:
        start = time.perf_counter()
        await asyncio.gather(*(requester(k) for k in range(requesters)))
        elapsed = time.perf_counter() - start
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await server.delete(requests, replies)
        await server.aclose()
        await client.aclose()
    return per * requesters / elapsed


async def compare(url: str, n: int = 2000, requesters: tuple[int, ...] = (1, 50)) -> dict[str, float]:
    """``{"raw/1": rps, "bus/1": rps, "ratio/1": bus/raw, ...}`` for each requester count."""
    out: dict[str, float] = {}
    for k in requesters:
        out[f"raw/{k}"] = await raw_round_trips(url, n, k)
        out[f"bus/{k}"] = await bus_round_trips(url, n, k)
        out[f"ratio/{k}"] = out[f"bus/{k}"] / out[f"raw/{k}"]
    return out


async def _delete(url: str, prefix: str) -> None:
    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
