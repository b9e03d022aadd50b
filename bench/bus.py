"""Request/reply throughput of ``InMemoryBus`` against a raw asyncio queue+future baseline.

Run: ``uv run --group bench python bench/bus.py --wall --only memory`` (``--n`` round trips
per run, ``--reps`` runs per column; without ``--wall`` rates are per CPU second of the loop).

Prints round trips per second — sequential, and with 100 concurrent requesters — for
the columns measured in the same process, on the same event loop, interleaved:

* **raw asyncio**: the floor. Requesters put ``(payload, future)`` on an
  ``asyncio.Queue`` of the bus's default mailbox size, drained by as many workers as a
  bus subscription has by default; each worker awaits a handler coroutine and sets the
  future. Same structure as the bus, minus envelopes, routing and deadlines.
* **InMemoryBus**: what a MAD pays. Each request is built in the timed loop as
  ``MAD.request`` builds it (a validated command part in a ``trusted_envelope``); the
  handler builds a validated data part and its reply (``Envelope.reply``).
* **InMemoryBus, prebuilt**: the same traffic with every request and reply built
  before the clock starts, so the column shows the bus machinery alone.
* **autogen-core** (optional ``bench`` dependency group, ``uv sync --group bench``;
  skipped with a note without it): ``SingleThreadedAgentRuntime.send_message`` to a
  ``RoutedAgent`` that answers (``bench/autogen_echo.py``); ``bus/ag`` is InMemoryBus
  over autogen-core, per run.

Every column is the median of ``--reps`` runs; each ratio is the median of the
per-run ratios (a run of the bus and the raw run next to it see the same machine
load). A breakdown of per-message costs, measured in the same run, follows.

Redis section (``--redis URL``, default ``redis://127.0.0.1:6379/15``; ``--only
memory|redis`` runs one section): request/reply per wall-clock second between two
processes — the responder is a second Python process (``bus.redis.bench``) for both
columns — sequential and with 50 concurrent requesters:

* **raw redis-py**: ``XADD`` request → ``XREADGROUP`` → pipelined ``XADD`` reply +
  ``XACK`` → the requester's ``XREADGROUP NOACK`` on its reply stream. The floor.
* **RedisBus**: ``request()`` to an ``echo`` subscription in the other process,
  envelopes built and validated at both ends.

Warm-up, then ``--redis-reps`` interleaved runs of ``--redis-n`` round trips; rates are
medians, the ratio is the median of per-run ratios. CPU µs per round trip of the
requester, the responder and the Redis server (``INFO cpu``: the whole server) follow.
Keys live under a fresh ``bench-…`` prefix and are deleted at the end (never FLUSHDB).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import secrets
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NamedTuple

from redis.asyncio import Redis
from redis.exceptions import RedisError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bus.base import DEFAULT_CONCURRENCY, DEFAULT_MAILBOX
from bus.envelope import CommandPart, DataPart, Envelope, Kind, trusted_envelope
from bus.memory import InMemoryBus
from bus.redis import bench as redis_bench

clock = time.thread_time
"""CPU seconds of the event-loop thread: on a shared machine, wall time mostly measures the neighbours."""

SCENARIOS = (("sequential", 1), ("100 concurrent requesters", 100))
TIMEOUT = 30.0


def request_envelope(i: int) -> Envelope:
    """A request as a MAD builds one: a validated part in a trusted envelope (``MAD.request``)."""
    return trusted_envelope(
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


class AutogenCore:
    """autogen-core's in-process runtime: ``send_message`` to a ``RoutedAgent`` that answers.

    Optional (``uv sync --group bench``): without the package the column is skipped with a note.
    """

    def __init__(self) -> None:
        import autogen_echo  # bench/, beside this script; raises ImportError without autogen-core

        self.peer = autogen_echo

    async def start(self) -> None:
        self.runtime = await self.peer.started_runtime()

    async def run(self, n: int, requesters: int) -> float:
        send, ask, agent = self.runtime.send_message, self.peer.Ask, self.peer.ECHO

        async def requester(first: int, count: int) -> None:
            for i in range(first, first + count):
                answer = await send(ask(i), agent)
                assert answer.n == i + 1

        return await timed(requesters, n, requester)

    async def close(self) -> None:
        await self.runtime.stop()


def autogen_or_none() -> AutogenCore | None:
    try:
        return AutogenCore()
    except ImportError:
        return None


def breakdown(batch: int = 2000, reps: int = 15) -> dict[str, float]:
    """Median µs per call of each envelope operation, sampled round robin so all see the same load."""
    request = request_envelope(1)
    part = DataPart(value=1)
    raw = {"sender": "bench", "recipient": "echo", "kind": "request", "content": [part]}
    operations: dict[str, Callable[[], object]] = {
        "request: CommandPart + trusted_envelope": lambda: request_envelope(1),
        "reply: DataPart, validated": lambda: DataPart(value=1),
        "request: Envelope(...), full validation": lambda: Envelope(
            sender="bench", recipient="echo", kind=Kind.REQUEST, content=[CommandPart(tool="echo", arguments={"n": 1})]
        ),
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
    gc.collect()
    gc.freeze()  # the prebuilt column's envelopes would otherwise make every full collection of the others slower
    await bus.subscribe("echo", echo)
    await built.subscribe("echo", prebuilt.handle)
    autogen = autogen_or_none()
    runners = [raw.run, validated.run, prebuilt.run]
    if autogen is not None:
        await autogen.start()
        runners.append(autogen.run)
    for run in runners:
        await run(max(n // 10, requesters), requesters)  # warm-up
    rates: list[list[float]] = [[] for _ in runners]
    for rep in range(reps):
        order = [(rep + k) % len(runners) for k in range(len(runners))]  # rotate: no column always runs first
        for k in order:
            rates[k].append(await runners[k](n, requesters))
    raw.close()
    await bus.close()
    await built.close()
    gc.unfreeze()
    if autogen is not None:
        await autogen.close()
    med = [statistics.median(r) for r in rates]

    def ratio(k: int, base: int = 0) -> float:
        return statistics.median(a / b for a, b in zip(rates[k], rates[base], strict=True))

    line = f"{label:<27}{med[0]:>13,.0f}{med[1]:>13,.0f}{ratio(1):>7.2f}{med[2]:>13,.0f}{ratio(2):>7.2f}"
    if autogen is not None:
        line += f"{med[3]:>13,.0f}{ratio(1, 3):>9.1f}x"
    print(line)
    return {"raw": med[0], "bus": med[1], "prebuilt": med[2]}


async def main(n: int, reps: int) -> None:
    unit = "wall-clock second" if clock is time.perf_counter else "CPU second of the event-loop thread"
    print(f"round trips per {unit}; {n:,} per run, median of {reps} runs; ratio = median of per-run ratios")
    has_autogen = autogen_or_none() is not None
    extra = f"{'autogen-core':>13}{'bus/ag':>10}" if has_autogen else ""
    print(f"{'':<27}{'raw asyncio':>13}{'InMemoryBus':>13}{'':>7}{'prebuilt':>13}{'':>7}{extra}")
    extra = f"{'/s':>13}{'ratio':>10}" if has_autogen else ""
    print(f"{'scenario':<27}{'/s':>13}{'/s':>13}{'ratio':>7}{'/s':>13}{'ratio':>7}{extra}")
    if not has_autogen:
        print("(autogen-core column skipped: not installed; `uv sync --group bench` adds it)")
    results = {label: await scenario(label, requesters, n, reps) for label, requesters in SCENARIOS}
    costs = breakdown()
    print("\nbreakdown, µs per message (median, same run)")
    for name, us in costs.items():
        print(f"  {name:<52}{us:>7.2f}")
    validation = costs["request: CommandPart + trusted_envelope"] + costs["reply: DataPart, validated"]
    for label, r in results.items():
        raw_us, bus_us, built_us = 1e6 / r["raw"], 1e6 / r["bus"], 1e6 / r["prebuilt"]
        print(
            f"  {label}: raw round trip {raw_us:.2f}, bus round trip {bus_us:.2f}"
            f" = machinery {built_us:.2f} + envelopes {bus_us - built_us:.2f};"
            f" ceiling if the bus cost nothing beyond raw + validation: {raw_us / (raw_us + validation):.2f}x"
        )


REDIS_URL = "redis://127.0.0.1:6379/15"
REDIS_SCENARIOS = (("sequential", 1), ("50 concurrent requesters", 50))
REDIS_COLUMNS = ("raw", "bus")


class RedisSample(NamedTuple):
    rate: float
    requester_us: float
    responder_us: float
    server_us: float


async def server_cpu(admin: Redis) -> float:
    info = await admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def redis_run(
    client: redis_bench.RawClient | redis_bench.BusClient,
    responder: redis_bench.Responder,
    admin: Redis,
    n: int,
    requesters: int,
) -> RedisSample:
    """One timed run: round trips per wall-clock second and CPU µs per round trip of each party."""
    cpu = (time.process_time(), await responder.cpu(), await server_cpu(admin))
    start = time.perf_counter()
    done = await client.run(n, requesters)
    elapsed = time.perf_counter() - start
    after = (time.process_time(), await responder.cpu(), await server_cpu(admin))
    us = [(b - a) / done * 1e6 for a, b in zip(cpu, after, strict=True)]
    return RedisSample(done / elapsed, *us)


async def redis_section(url: str, n: int, reps: int) -> None:
    admin = Redis.from_url(url, socket_connect_timeout=2.0)
    try:
        await admin.ping()
    except (RedisError, OSError) as exc:
        await admin.aclose()
        sys.exit(f"--redis {url}: cannot reach Redis ({type(exc).__name__}: {exc})")
    prefix = f"bench-{secrets.token_hex(4)}"
    responders = {col: redis_bench.Responder(col, url, prefix) for col in REDIS_COLUMNS}
    clients: dict[str, redis_bench.RawClient | redis_bench.BusClient] = {
        "raw": redis_bench.RawClient(url, prefix),
        "bus": redis_bench.BusClient(url, prefix),
    }
    results: dict[str, dict[str, list[RedisSample]]] = {}
    try:
        for col in REDIS_COLUMNS:
            await responders[col].start()
            await clients[col].start()
        print(f"\nRedis {url}: request/reply between two processes, round trips per wall-clock second;")
        print(f"{n:,} per run, median of {reps} runs; ratio = median of per-run RedisBus/raw ratios")
        print(f"{'scenario':<27}{'raw redis-py/s':>15}{'RedisBus/s':>13}{'ratio':>7}")
        for label, requesters in REDIS_SCENARIOS:
            for col in REDIS_COLUMNS:
                await clients[col].run(max(n // 5, requesters * 4), requesters)  # warm-up
            samples: dict[str, list[RedisSample]] = {col: [] for col in REDIS_COLUMNS}
            for rep in range(reps):
                for col in REDIS_COLUMNS[:: 1 if rep % 2 == 0 else -1]:
                    samples[col].append(await redis_run(clients[col], responders[col], admin, n, requesters))
            results[label] = samples
            raw, bus = (statistics.median(s.rate for s in samples[col]) for col in REDIS_COLUMNS)
            ratio = statistics.median(b.rate / r.rate for r, b in zip(samples["raw"], samples["bus"], strict=True))
            print(f"{label:<27}{raw:>15,.0f}{bus:>13,.0f}{ratio:>7.2f}")
        print("\nCPU µs per round trip (median): requester | responder | Redis server")
        for label, samples in results.items():
            cells = []
            for col in REDIS_COLUMNS:
                parts = [statistics.median(getattr(s, f) for s in samples[col]) for f in RedisSample._fields[1:]]
                cells.append(f"{col} {parts[0]:>5.0f} | {parts[1]:>5.0f} | {parts[2]:>4.0f}")
            print(f"  {label:<27}" + "    ".join(cells))
    finally:
        for col in REDIS_COLUMNS:
            await clients[col].close()
            await responders[col].stop()
        await redis_bench.delete_prefix(url, prefix)
        await admin.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="round trips per run")
    parser.add_argument("--reps", type=int, default=7, help="runs per column (the median is reported)")
    parser.add_argument("--wall", action="store_true", help="time with the wall clock instead of CPU time")
    parser.add_argument("--redis", default=REDIS_URL, metavar="URL", help="Redis for the Redis section")
    parser.add_argument("--redis-n", type=int, default=2000, help="round trips per Redis run")
    parser.add_argument("--redis-reps", type=int, default=5, help="runs per Redis column (the median is reported)")
    parser.add_argument("--only", choices=("memory", "redis"), help="run one section only")
    args = parser.parse_args()
    if args.wall:
        clock = time.perf_counter
    if args.only != "redis":
        asyncio.run(main(args.n, args.reps))
    if args.only != "memory":
        asyncio.run(redis_section(args.redis, args.redis_n, args.redis_reps))
