"""Cross-process request/reply for ``bench/bus.py``: RedisBus against raw redis-py streams.

Both columns put the responder in a second process (``python -m bus.redis.bench
raw|bus URL PREFIX``, spawned by :class:`Responder`), so each round trip crosses
processes, and the server, the same way. The raw column is the floor a stream bus
cannot beat: ``XADD`` request → ``XREADGROUP`` → pipelined ``XADD`` reply + ``XACK``
→ the requester's ``XREADGROUP NOACK`` on its own reply stream; no envelopes, no
routing, no dedup. Every key lives under the caller's prefix; :func:`delete_prefix`
removes them (never ``FLUSHDB``: the database may be shared).

The responder answers ``cpu`` on stdin with its CPU seconds, so the caller can
split the cost of a round trip between requester, responder and server; it stops
(closing its bus) when stdin closes. ``--profile FILE`` writes its cProfile stats.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import secrets
import sys
import time
from pathlib import Path

from redis.asyncio import Redis

from bus.envelope import CommandPart, DataPart, Envelope, Kind
from bus.redis.bus import RedisBus

ROOT = Path(__file__).resolve().parent.parent.parent
RAW_GROUP = "g"
READY = b"ready"
TIMEOUT = 30.0
BLOCK_MS = 2000


def request_envelope(i: int) -> Envelope:
    """What a MAD sends: a validated command, built for every request."""
    return Envelope(
        sender="bench", recipient="echo", kind=Kind.REQUEST, content=[CommandPart(tool="echo", arguments={"n": i})]
    )


async def echo(envelope: Envelope) -> Envelope:
    part = envelope.content[0]
    assert isinstance(part, CommandPart)
    return envelope.reply(DataPart(value=part.arguments["n"]))


def raw_requests(prefix: str) -> str:
    return f"{prefix}:raw:req"


# the responder process


async def serve_raw(url: str, prefix: str) -> None:
    """Echo raw entries: read a batch, then one pipeline of (reply XADD + XACK) per entry."""
    redis = Redis.from_url(url)
    requests = raw_requests(prefix)
    await redis.xgroup_create(requests, RAW_GROUP, id="$", mkstream=True)

    async def loop() -> None:
        while True:
            response = await redis.xreadgroup(RAW_GROUP, "responder", {requests: ">"}, count=256, block=BLOCK_MS)
            for _stream, entries in response or []:
                pipe = redis.pipeline(transaction=False)
                for entry_id, fields in entries:
                    pipe.xadd(fields[b"r"], {"c": fields[b"c"], "e": fields[b"e"]})
                    pipe.xack(requests, RAW_GROUP, entry_id)
                await pipe.execute()

    task = asyncio.create_task(loop())
    await control()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await redis.aclose()


async def serve_bus(url: str, prefix: str) -> None:
    """Echo through a RedisBus subscription, as a MAD in another process would."""
    bus = RedisBus(url, prefix=prefix)
    await bus.start()
    await bus.subscribe("echo", echo)
    await control()
    await bus.close()


async def control() -> None:
    """Say ready, answer ``cpu`` with this process's CPU seconds, return when stdin closes."""
    sys.stdout.buffer.write(READY + b"\n")
    sys.stdout.flush()
    while line := await asyncio.to_thread(sys.stdin.readline):
        if line.strip() == "cpu":
            print(time.process_time(), flush=True)


def serve_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="echo responder for bench/bus.py (reads control lines on stdin)")
    parser.add_argument("mode", choices=("raw", "bus"))
    parser.add_argument("url")
    parser.add_argument("prefix")
    parser.add_argument("--profile", help="write cProfile stats of the whole run to this file")
    args = parser.parse_args(argv)
    serve = serve_raw if args.mode == "raw" else serve_bus
    profiler = cProfile.Profile(time.process_time) if args.profile else None
    if profiler is not None:
        profiler.enable()
    try:
        asyncio.run(serve(args.url, args.prefix))
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)


class Responder:
    """The requester's handle on a responder process."""

    def __init__(self, mode: str, url: str, prefix: str, profile: str | None = None) -> None:
        self.args = [mode, url, prefix] + (["--profile", profile] if profile else [])
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bus.redis.bench",
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), TIMEOUT)
        if line.strip() != READY:
            raise RuntimeError(f"responder {self.args[0]} did not start (said {line!r}); see its stderr above")

    async def cpu(self) -> float:
        """CPU seconds the responder has used so far."""
        assert self.process is not None and self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(b"cpu\n")
        await self.process.stdin.drain()
        return float(await asyncio.wait_for(self.process.stdout.readline(), TIMEOUT))

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), TIMEOUT)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


# the requester side (the bench process)


class RawClient:
    """Requests as raw entries; one collector reads this client's reply stream (as a bus inbox does)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.redis = Redis.from_url(url)
        self.requests = raw_requests(prefix)
        self.replies = f"{prefix}:raw:rep:{secrets.token_hex(4)}"
        self.payload = request_envelope(0).model_dump_json().encode()
        self.waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.redis.xgroup_create(self.replies, "inbox", id="$", mkstream=True)
        self.task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        while True:
            response = await self.redis.xreadgroup(
                "inbox", "owner", {self.replies: ">"}, count=256, block=BLOCK_MS, noack=True
            )
            for _stream, entries in response or []:
                for _entry_id, fields in entries:
                    future = self.waiting.pop(fields[b"c"], None)
                    if future is not None:
                        future.set_result(fields[b"e"])

    async def run(self, n: int, requesters: int) -> int:
        """``n`` round trips split between ``requesters`` tasks; returns how many were made."""
        loop = asyncio.get_running_loop()
        per = max(1, n // requesters)
        xadd, waiting, payload = self.redis.xadd, self.waiting, self.payload
        fields = {"r": self.replies, "e": payload}

        async def requester(k: int) -> None:
            for i in range(per):
                key = f"{k}-{i}".encode()
                future: asyncio.Future[bytes] = loop.create_future()
                waiting[key] = future
                await xadd(self.requests, {"c": key, **fields})
                assert await asyncio.wait_for(future, TIMEOUT) == payload

        await asyncio.gather(*(requester(k) for k in range(requesters)))
        return per * requesters

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.redis.aclose()


class BusClient:
    """Requests through a RedisBus, building and validating each envelope as a MAD does."""

    def __init__(self, url: str, prefix: str) -> None:
        self.bus = RedisBus(url, prefix=prefix)

    async def start(self) -> None:
        await self.bus.start()

    async def run(self, n: int, requesters: int) -> int:
        per = max(1, n // requesters)
        request = self.bus.request

        async def requester(first: int) -> None:
            for i in range(first, first + per):
                reply = await request(request_envelope(i), timeout=TIMEOUT)
                assert reply.kind is Kind.REPLY and reply.data() == [i], reply

        await asyncio.gather(*(requester(k * per) for k in range(requesters)))
        return per * requesters

    async def close(self) -> None:
        await self.bus.close()


async def delete_prefix(url: str, prefix: str) -> int:
    """Delete every key under ``prefix`` and nothing else."""
    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        await client.aclose()


async def compare(url: str, n: int = 2000, requesters: tuple[int, ...] = (1, 50)) -> dict[str, float]:
    """One quick pass: ``{"raw/1": rps, "bus/1": rps, "ratio/1": bus/raw, ...}``, responders in other processes.

    ``bench/bus.py --only redis`` is the full measurement (warm-ups, medians, CPU split).
    """
    prefix = f"bench-{secrets.token_hex(4)}"
    responders = [Responder("raw", url, prefix), Responder("bus", url, prefix)]
    clients: list[RawClient | BusClient] = [RawClient(url, prefix), BusClient(url, prefix)]
    out: dict[str, float] = {}
    try:
        for part in (*responders, *clients):
            await part.start()
        for k in requesters:
            for name, client in zip(("raw", "bus"), clients, strict=True):
                await client.run(max(n // 10, k), k)
                start = time.perf_counter()
                done = await client.run(n, k)
                out[f"{name}/{k}"] = done / (time.perf_counter() - start)
            out[f"ratio/{k}"] = out[f"bus/{k}"] / out[f"raw/{k}"]
    finally:
        for client in clients:
            await client.close()
        for responder in responders:
            await responder.stop()
        await delete_prefix(url, prefix)
    return out


if __name__ == "__main__":
    serve_main()
