"""A small HTTP load generator (used by ``bench/gateway.py`` when ``wrk`` is absent).

Run as a child process: ``python bench/loadgen.py URL --method GET --connections 50 --duration 5``
(``--header 'Name: value'`` repeatable, ``--body JSON``). Keeps ``--connections`` requests in
flight on as many keep-alive connections for ``--duration`` seconds after a one-second warm-up,
then prints one JSON line: requests, errors (non-2xx or failed), requests per second, p50 and p99
latency in milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import aiohttp


async def run(url: str, method: str, headers: dict[str, str], body: bytes | None, connections: int, duration: float):
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    latencies: list[float] = []
    errors = 0
    counting = False
    stop_at = 0.0

    async with aiohttp.ClientSession(connector=connector, headers=headers) as http:

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                try:
                    async with http.request(method, url, data=body) as response:
                        await response.read()
                        ok = 200 <= response.status < 300
                except aiohttp.ClientError:
                    ok = False
                if counting:
                    if ok:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors += 1

        stop_at = time.perf_counter() + 1.0
        await asyncio.gather(*(worker() for _ in range(connections)))  # warm-up
        counting = True
        start = time.perf_counter()
        stop_at = start + duration
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": q[49] * 1000,
        "p99_ms": q[98] * 1000,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--body")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    headers = dict(h.split(": ", 1) for h in args.header)
    body = args.body.encode() if args.body is not None else None
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
    result = asyncio.run(run(args.url, args.method, headers, body, args.connections, args.duration))
    print(json.dumps(result))
