"""Request/reply throughput of the bus against a raw asyncio queue+future baseline.

Run: ``uv run python bench/bus.py`` (``--n`` round trips per scenario).
Prints messages per second — sequential, and with 100 concurrent requesters —
for the raw baseline and ``InMemoryBus`` with validated envelopes, and the ratio.
Both run in the same process, same event loop, same run: the ratio is what counts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bus.base import Bus
from bus.envelope import CommandPart, DataPart, Envelope, Kind
from bus.memory import InMemoryBus


async def raw_round_trips(n: int, requesters: int) -> float:
    """The floor: an asyncio.Queue to one worker, replies through futures."""
    queue: asyncio.Queue[tuple[int, asyncio.Future[int]]] = asyncio.Queue(1024)

    async def worker() -> None:
        while True:
            value, future = await queue.get()
            future.set_result(value + 1)
            queue.task_done()

    workers = [asyncio.create_task(worker()) for _ in range(16)]
    loop = asyncio.get_running_loop()

    async def requester(count: int) -> None:
        for i in range(count):
            future: asyncio.Future[int] = loop.create_future()
            await queue.put((i, future))
            await future

    start = time.perf_counter()
    await asyncio.gather(*(requester(n // requesters) for _ in range(requesters)))
    elapsed = time.perf_counter() - start
    for w in workers:
        w.cancel()
    return (n // requesters) * requesters / elapsed


async def bus_round_trips(bus: Bus, n: int, requesters: int) -> float:
    async def echo(envelope: Envelope) -> Envelope:
        part = envelope.content[0]
        assert isinstance(part, CommandPart)
        return envelope.reply(DataPart(value=part.arguments["n"]))

    sub = await bus.subscribe("echo", echo)

    async def requester(count: int) -> None:
        for i in range(count):
            reply = await bus.request(
                Envelope(
                    sender="bench",
                    recipient="echo",
                    kind=Kind.REQUEST,
                    content=[CommandPart(tool="echo", arguments={"n": i})],
                ),
                timeout=30,
            )
            assert reply.kind is Kind.REPLY

    start = time.perf_counter()
    await asyncio.gather(*(requester(n // requesters) for _ in range(requesters)))
    elapsed = time.perf_counter() - start
    await sub.cancel()
    return (n // requesters) * requesters / elapsed


async def main(n: int) -> None:
    bus = InMemoryBus()
    await bus.start()
    print(f"{'scenario':<28}{'raw asyncio /s':>16}{'InMemoryBus /s':>16}{'ratio':>8}")
    for label, requesters in (("sequential", 1), ("100 concurrent requesters", 100)):
        await raw_round_trips(n // 10, requesters)  # warm-up
        await bus_round_trips(bus, n // 10, requesters)
        raw = await raw_round_trips(n, requesters)
        mem = await bus_round_trips(bus, n, requesters)
        print(f"{label:<28}{raw:>16,.0f}{mem:>16,.0f}{mem / raw:>8.2f}")
    await bus.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="round trips per scenario")
    args = parser.parse_args()
    asyncio.run(main(args.n))
