"""Concurrent prose turns through the gateway against litellm alone, on the same scripted LLM server.

Run: ``uv run python bench/turns.py`` (``--n`` concurrent turns, default 1000; ``--delay`` seconds
the scripted LLM waits before answering, default 1).

The scripted OpenAI-compatible server (``tests/support/llm_server.py``) runs in a child process,
answering every chat request after ``--delay`` seconds. Two sides, measured in this process one
after the other against that same server:

* **litellm alone**: ``--n`` concurrent ``litellm.acompletion`` calls, not streamed (nobody watches
  these conversations, so Fiedler does not stream either) — the floor: the same LLM wait, the same
  client library, nothing else.
* **the ecosystem**: the real ecosystem (Rogers, Fiedler, Grace, gateway; in-memory bus) started
  in this process, one conversation per turn created beforehand, then ``--n`` concurrent
  ``POST /api/conversations/{id}/messages`` over loopback HTTP, each answered by Grace's Imperator
  through Fiedler and stored durably by Rogers before the response. The gateway's rate limits are
  raised for the run (one client IP sends every request); everything else is the default.

Prints wall time, p50 and p99 latency of each side, the ratio of wall times, and the peak RSS of
this process (ecosystem and load generator together) sampled during the ecosystem's run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from tests.support.ecosystem import ecosystem_settings, fiedler_section, running
from tests.support.waiting import eventually

SERVER = """
import asyncio, sys
from tests.support.llm_server import Reply, ScriptedLLM

async def main(delay: float) -> None:
    async with ScriptedLLM(responder=lambda request: Reply(text="the answer", delay=delay)) as llm:
        print(llm.base_url, flush=True)
        await asyncio.get_running_loop().create_future()

asyncio.run(main(float(sys.argv[1])))
"""
ROOT = Path(__file__).resolve().parent.parent


@contextlib.asynccontextmanager
async def scripted_server(delay: float):  # type: ignore[no-untyped-def]
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SERVER, str(delay), cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        yield line.decode().strip()
    finally:
        process.terminate()
        await process.wait()


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 1e6


class Sampler:
    """The process's resident memory, sampled every 50 ms while a run lasts."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mb())
            await asyncio.sleep(0.05)

    def __enter__(self) -> Sampler:
        self._task = asyncio.create_task(self._sample())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


def summary(label: str, wall: float, latencies: list[float], failures: int) -> str:
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return f"{label:<16}{wall:>9.2f} s{q[49]:>9.2f} s{q[98]:>9.2f} s{failures:>10}"


async def timed(n: int, one: object) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failures = 0

    async def run(i: int) -> None:
        nonlocal failures
        started = time.perf_counter()
        try:
            await one(i)  # type: ignore[operator]
        except Exception as exc:
            failures += 1
            if failures <= 3:
                print(f"  failure: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
            return
        latencies.append(time.perf_counter() - started)

    start = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(n)))
    return time.perf_counter() - start, latencies, failures


async def litellm_side(base_url: str, n: int) -> tuple[float, list[float], int]:
    import litellm

    pricing = {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0}  # the same prices as the ecosystem's

    async def one(i: int) -> None:
        # Not streamed: nobody watches these conversations, so Fiedler asks for whole answers too.
        response = await litellm.acompletion(
            model="openai/scripted",
            api_base=base_url,
            api_key="bench",
            messages=[{"role": "user", "content": f"question {i}"}],
            timeout=120,
            **pricing,
        )
        assert response.choices[0].message.content

    await one(-1)  # warm-up: litellm's first call loads its providers
    return await timed(n, one)


async def ecosystem_side(base_url: str, n: int, data_dir: Path) -> tuple[float, list[float], int, float, float]:
    limits = {
        "rate_per_ip": 1e6,
        "burst_per_ip": 1_000_000,
        "rate_per_principal": 1e6,
        "burst_per_principal": 1_000_000,
    }
    # The scripted model is free and says so, as a deployment of a local model would ([[fiedler.models]] prices).
    fiedler = fiedler_section(base_url)
    fiedler["models"][0].update(input_cost_per_token=0.0, output_cost_per_token=0.0)
    settings = ecosystem_settings(
        data_dir, base_url, gateway=limits, ecosystem={"freeze_startup_heap": True}, sections={"fiedler": fiedler}
    )
    async with running(settings) as eco:
        connector = aiohttp.TCPConnector(limit=0)
        fiedler = eco.host.mads["fiedler"]
        await fiedler.ready()
        await eventually(lambda: gc.get_freeze_count() > 0, what="the start-up heap frozen")
        async with aiohttp.ClientSession(headers=eco.auth_headers, connector=connector) as http:
            eco.http, own = http, eco.http
            try:
                await eco.say(await eco.new_conversation(), "warm-up")
                conversations = await asyncio.gather(*(eco.new_conversation() for _ in range(n)))

                async def one(i: int) -> None:
                    url = eco.at(f"/api/conversations/{conversations[i]}/messages")
                    async with http.post(url, json={"text": f"question {i}"}) as response:
                        body = await response.json()
                        if response.status != 200:
                            raise RuntimeError(f"{response.status}: {body}")
                        assert body["reply"]["text"]

                before = rss_mb()
                with Sampler() as memory:
                    wall, latencies, failures = await timed(n, one)
            finally:
                eco.http = own
    return wall, latencies, failures, before, memory.peak


async def main(n: int, delay: float) -> None:
    async with scripted_server(delay) as base_url:
        print(f"{n} concurrent turns, scripted LLM answering after {delay:g} s ({base_url})")
        print(f"{'':<16}{'wall':>11}{'p50':>11}{'p99':>11}{'failures':>10}")
        lite = await litellm_side(base_url, n)
        print(summary("litellm alone", *lite))
        with tempfile.TemporaryDirectory(prefix="bench-turns-") as tmp:
            wall, latencies, failures, before, peak = await ecosystem_side(base_url, n, Path(tmp))
        print(summary("ecosystem", wall, latencies, failures))
        print(f"ratio (ecosystem wall / litellm wall): {wall / lite[0]:.2f}x")
        print(f"RSS of this process (ecosystem + load generator): {before:.0f} MB before the turns, peak {peak:.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="concurrent turns")
    parser.add_argument("--delay", type=float, default=1.0, help="seconds the scripted LLM waits before answering")
    args = parser.parse_args()
    asyncio.run(main(args.n, args.delay))
