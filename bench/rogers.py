"""Rogers's write throughput on ``InMemoryBus``: N events published, then one ``sync``.

Run: ``uv run python bench/rogers.py`` (``--n`` events per run, ``--reps`` runs per column).

Two columns, measured in the same process and interleaved run by run:

* **bus + no-op tap**: the floor. The same events published to a bus whose only
  wiretap does nothing, then drained: envelopes, the tap mailbox and its task.
* **Rogers**: the events published with Rogers tapping the bus, then one ``sync``
  request, which answers once every event is committed to SQLite (WAL,
  ``synchronous=FULL``) — the moment the data is durable.

Figures are wall-clock messages per second (fsync latency is real time, not CPU),
median of ``--reps`` runs; the ratio is the median of per-run ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bus.envelope import CommandPart, Envelope, Kind, ProsePart, deadline_in
from bus.memory import InMemoryBus
from mads.core.base import MadContext
from mads.rogers import Rogers

TIMEOUT = 120.0


def events(n: int) -> list[Envelope]:
    return [
        Envelope(
            sender="user.bench",
            recipient="events.note",
            kind=Kind.EVENT,
            conversation_id="bench",
            content=[ProsePart(text=f"note number {i} about the quarterly plan")],
        )
        for i in range(n)
    ]


async def floor(batch: list[Envelope]) -> float:
    """Messages per second through a bus with a no-op wiretap, drained at the end."""

    async def nothing(envelope: Envelope) -> None:
        return None

    bus = InMemoryBus()
    await bus.start()
    await bus.wiretap(nothing)
    start = time.perf_counter()
    for envelope in batch:
        await bus.publish(envelope)
    await bus.close(drain_timeout=TIMEOUT)
    return len(batch) / (time.perf_counter() - start)


async def rogers(batch: list[Envelope]) -> float:
    """Messages per second from the first publish until ``sync`` says everything is durable."""
    with tempfile.TemporaryDirectory(prefix="bench-rogers-") as data_dir:
        bus = InMemoryBus()
        await bus.start()
        mad = Rogers(MadContext(bus=bus, data_dir=Path(data_dir)))
        await mad.start()
        try:
            start = time.perf_counter()
            for envelope in batch:
                await bus.publish(envelope)
            sync = Envelope(
                sender="user.bench",
                recipient="rogers",
                kind=Kind.REQUEST,
                deadline=deadline_in(TIMEOUT),
                content=[CommandPart(tool="sync")],
            )
            reply = await bus.request(sync)
            elapsed = time.perf_counter() - start
            if reply.error is not None:
                raise RuntimeError(f"sync failed: {reply.error.message}")
            count = reply.data()[0]["count"]  # type: ignore[index]
            if count < len(batch):
                raise RuntimeError(f"only {count} of {len(batch)} stored")
        finally:
            await bus.close()
            await mad.stop()
    return len(batch) / elapsed


async def main(n: int, reps: int) -> None:
    floors: list[float] = []
    stored: list[float] = []
    for _ in range(reps):
        floors.append(await floor(events(n)))
        stored.append(await rogers(events(n)))
    ratios = [s / f for s, f in zip(stored, floors, strict=True)]
    print(f"{n} events then one sync, median of {reps} runs (wall clock):")
    print(f"  bus + no-op tap   {statistics.median(floors):10.0f} msg/s")
    print(f"  Rogers (durable)  {statistics.median(stored):10.0f} msg/s")
    print(f"  Rogers / floor    {statistics.median(ratios):10.3f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.reps))
