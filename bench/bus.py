"""Request/reply throughput of ``InMemoryBus`` against a raw asyncio queue+future baseline.

Run: ``uv run python bench/bus.py`` (``--n`` round trips per run, ``--reps`` runs per column).

Prints round trips per second — sequential, and with 100 concurrent requesters — for
three columns measured in the same process, on the same event loop, interleaved:

* **raw asyncio**: the floor. Requesters put ``(payload, future)`` on an
  ``asyncio.Queue`` of the bus's default mailbox size, drained by as many workers as a
  bus subscription has by default; each worker awaits a handler coroutine and sets the
  future. Same structure as the bus, minus envelopes, routing and deadlines.
* **InMemoryBus**: what a MAD pays. Each request envelope (and its command part) is
  built and validated in the timed loop; the handler builds a validated reply.
* **InMemoryBus, prebuilt**: the same traffic with every request and reply built
  before the clock starts, so the column shows the bus machinery alone.

Every column is the median of ``--reps`` runs; each ratio is the median of the
per-run ratios (a run of the bus and the raw run next to it see the same machine
load). A breakdown of per-message costs, measured in the same run, follows.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bus.base import DEFAULT_CONCURRENCY, DEFAULT_MAILBOX
from bus.envelope import CommandPart, DataPart, Envelope, Kind
from bus.memory import InMemoryBus

clock = time.thread_time
"""CPU seconds of the event-loop thread: on a shared machine, wall time mostly measures the neighbours."""

SCENARIOS = (("sequential", 1), ("100 concurrent requesters", 100))
TIMEOUT = 30.0


def request_envelope(i: int) -> Envelope:
    return Envelope(
        sender="bench",
        recipient="echo",
        kind=Kind.REQUEST,
        content=[CommandPart(tool="echo", arguments={"n": i})],
    )


async def echo(envelope: Envelope) -> Envelope:
    part = envelope.content[0]
    assert isinstance(part, CommandPart)
    return envelope.reply(DataPart(value=part.arguments["n"]))


async def timed(requesters: int, n: int, requester: Callable[[int, int], Awaitable[None]]) -> float:
    """Round trips per second for ``requesters`` tasks sharing ``n`` round trips."""
    per = n // requesters
    start = clock()
    await asyncio.gather(*(requester(r * per, per) for r in range(requesters)))
    return per * requesters / (clock() - start)


class Raw:
    """The baseline: queue + future, a worker pool awaiting a handler."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[int, asyncio.Future[int]]] = asyncio.Queue(DEFAULT_MAILBOX)
        self.workers = [asyncio.create_task(self._work()) for _ in range(DEFAULT_CONCURRENCY)]

    @staticmethod
    async def handle(value: int) -> int:
        return value + 1

    async def _work(self) -> None:
        queue, handle = self.queue, self.handle
        while True:
            value, future = await queue.get()
            future.set_result(await handle(value))
            queue.task_done()

    async def run(self, n: int, requesters: int) -> float:
        loop = asyncio.get_running_loop()
        put = self.queue.put

        async def requester(first: int, count: int) -> None:
            for i in range(first, first + count):
                future: asyncio.Future[int] = loop.create_future()
                await put((i, future))
                assert await future == i + 1

        return await timed(requesters, n, requester)

    def close(self) -> None:
        for worker in self.workers:
            worker.cancel()


class Validated:
    """The bus with envelopes built (and validated) inside the timed loop."""

    def __init__(self, bus: InMemoryBus) -> None:
        self.bus = bus

    async def run(self, n: int, requesters: int) -> float:
        request = self.bus.request

        async def requester(first: int, count: int) -> None:
            for i in range(first, first + count):
                reply = await request(request_envelope(i), timeout=TIMEOUT)
                assert reply.kind is Kind.REPLY

        return await timed(requesters, n, requester)


class Prebuilt:
    """The bus with every envelope built before the clock starts: machinery only."""

    def __init__(self, bus: InMemoryBus, n: int) -> None:
        self.bus = bus
        self.requests = [request_envelope(i) for i in range(n)]
        self.replies = {r.id: r.reply(DataPart(value=i)) for i, r in enumerate(self.requests)}

    async def handle(self, envelope: Envelope) -> Envelope:
        return self.replies[envelope.id]

    async def run(self, n: int, requesters: int) -> float:
        request, requests = self.bus.request, self.requests

        async def requester(first: int, count: int) -> None:
            for i in range(first, first + count):
                reply = await request(requests[i], timeout=TIMEOUT)
                assert reply.kind is Kind.REPLY

        return await timed(requesters, n, requester)


def breakdown(batch: int = 2000, reps: int = 15) -> dict[str, float]:
    """Median µs per call of each envelope operation, sampled round robin so all see the same load."""
    request = request_envelope(1)
    part = DataPart(value=1)
    raw = {"sender": "bench", "recipient": "echo", "kind": "request", "content": [part]}
    operations: dict[str, Callable[[], object]] = {
        "request: CommandPart + Envelope, validated": lambda: request_envelope(1),
        "reply: DataPart, validated": lambda: DataPart(value=1),
        "reply: Envelope.reply(part)": lambda: request.reply(part),
        "one Envelope, full validation (model_validate)": lambda: Envelope.model_validate(raw),
    }
    samples: dict[str, list[float]] = {name: [] for name in operations}
    for _ in range(reps):
        for name, operation in operations.items():
            start = clock()
            for _ in range(batch):
                operation()
            samples[name].append((clock() - start) / batch * 1e6)
    return {name: statistics.median(values) for name, values in samples.items()}


async def scenario(label: str, requesters: int, n: int, reps: int) -> dict[str, float]:
    raw = Raw()
    bus, built = InMemoryBus(), InMemoryBus()
    await bus.start()
    await built.start()
    validated, prebuilt = Validated(bus), Prebuilt(built, n)
    await bus.subscribe("echo", echo)
    await built.subscribe("echo", prebuilt.handle)
    runners = (raw.run, validated.run, prebuilt.run)
    for run in runners:
        await run(max(n // 10, requesters), requesters)  # warm-up
    rates: list[list[float]] = [[], [], []]
    for rep in range(reps):
        order = [(rep + k) % 3 for k in range(3)]  # rotate, so no column always runs first
        for k in order:
            rates[k].append(await runners[k](n, requesters))
    raw.close()
    await bus.close()
    await built.close()
    med = [statistics.median(r) for r in rates]
    ratio = statistics.median(v / r for v, r in zip(rates[1], rates[0], strict=True))
    ratio_built = statistics.median(p / r for p, r in zip(rates[2], rates[0], strict=True))
    print(f"{label:<27}{med[0]:>13,.0f}{med[1]:>13,.0f}{ratio:>7.2f}{med[2]:>13,.0f}{ratio_built:>7.2f}")
    return {"raw": med[0], "bus": med[1], "prebuilt": med[2]}


async def main(n: int, reps: int) -> None:
    unit = "wall-clock second" if clock is time.perf_counter else "CPU second of the event-loop thread"
    print(f"round trips per {unit}; {n:,} per run, median of {reps} runs; ratio = median of per-run bus/raw ratios")
    print(f"{'':<27}{'raw asyncio':>13}{'InMemoryBus':>13}{'':>7}{'prebuilt':>13}{'':>7}")
    print(f"{'scenario':<27}{'/s':>13}{'/s':>13}{'ratio':>7}{'/s':>13}{'ratio':>7}")
    results = {label: await scenario(label, requesters, n, reps) for label, requesters in SCENARIOS}
    costs = breakdown()
    print("\nbreakdown, µs per message (median, same run)")
    for name, us in costs.items():
        print(f"  {name:<52}{us:>7.2f}")
    validation = costs["request: CommandPart + Envelope, validated"] + costs["reply: DataPart, validated"]
    for label, r in results.items():
        raw_us, bus_us, built_us = 1e6 / r["raw"], 1e6 / r["bus"], 1e6 / r["prebuilt"]
        print(
            f"  {label}: raw round trip {raw_us:.2f}, bus round trip {bus_us:.2f}"
            f" = machinery {built_us:.2f} + envelopes {bus_us - built_us:.2f};"
            f" ceiling if the bus cost nothing beyond raw + validation: {raw_us / (raw_us + validation):.2f}x"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="round trips per run")
    parser.add_argument("--reps", type=int, default=7, help="runs per column (the median is reported)")
    parser.add_argument("--wall", action="store_true", help="time with the wall clock instead of CPU time")
    args = parser.parse_args()
    if args.wall:
        clock = time.perf_counter
    asyncio.run(main(args.n, args.reps))
