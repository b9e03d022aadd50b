"""Slow and idle clients against the real gateway: how long they keep their connections, and whether others are served.

Run: ``uv run python bench/slow_clients.py`` (``--n`` connections of each kind, ``--seconds`` to watch).

Opens ``--n`` connections that send request headers one byte per second (slowloris) and
``--n`` that send nothing, then every second counts how many the server still holds open
and times one ordinary ``GET /healthz`` from a fresh client. With the defaults
(``[gateway] header_timeout = 10``, ``idle_timeout = 60``) the slow ones are cut after
about 10 s and the idle ones after about 60 s; healthz keeps answering throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from mad_ecosystem.app import Ecosystem
from mads import registry
from mads.core.settings import load_settings

HEADER = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000


async def slow(host: str, port: int, open_flags: list[bool], index: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    open_flags[index] = True
    try:
        for byte in HEADER:
            if reader.at_eof():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            try:
                await asyncio.wait_for(reader.read(1), 1.0)
            except TimeoutError:
                continue
            break  # the server answered or closed
    except ConnectionError:
        pass
    finally:
        open_flags[index] = False
        writer.close()


async def idle(host: str, port: int, open_flags: list[bool], index: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    open_flags[index] = True
    try:
        await reader.read()
    except ConnectionError:
        pass
    finally:
        open_flags[index] = False
        writer.close()


async def main(n: int, seconds: int) -> None:
    with tempfile.TemporaryDirectory() as data:
        settings = load_settings(
            None,
            environ={},
            known_mads=set(registry.MADS),
            overrides={
                "ecosystem": {"data_dir": data, "mads": ["rogers", "fiedler", "grace"], "log_level": "WARNING"},
                "gateway": {"host": "127.0.0.1", "port": 0},
                "fiedler": {"models": []},
            },
        )
        ecosystem = Ecosystem(settings)
        await ecosystem.start()
        try:
            assert ecosystem.url is not None
            port = int(ecosystem.url.rstrip("/").rsplit(":", 1)[1])
            slow_open, idle_open = [False] * n, [False] * n
            tasks = [asyncio.create_task(slow("127.0.0.1", port, slow_open, i)) for i in range(n)]
            tasks += [asyncio.create_task(idle("127.0.0.1", port, idle_open, i)) for i in range(n)]
            start = time.monotonic()
            print("t(s)  slow-open  idle-open  healthz(ms)")
            async with aiohttp.ClientSession() as http:
                for second in range(seconds + 1):
                    began = time.monotonic()
                    async with http.get(f"{ecosystem.url}healthz") as response:
                        status = response.status
                    took = (time.monotonic() - began) * 1000
                    print(f"{second:4d}  {sum(slow_open):9d}  {sum(idle_open):9d}  {took:8.1f} ({status})", flush=True)
                    await asyncio.sleep(max(0.0, start + second + 1 - time.monotonic()))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await ecosystem.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=70)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.seconds))
