"""Redis restarted under traffic between two ecosystem processes: both reconnect and serve again.

Uses a private ``redis-server`` on its own free port (never the shared 6379), killed
and restarted without persistence, so every stream, group and registration is lost.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.bus.redis_server import RedisServer, unique_prefix
from tests.deployment.conftest import Namespace
from tests.deployment.support import FAST_BUS, Api, EcosystemProcess, create_token, poll, processes, write_config

pytestmark = [pytest.mark.redis, pytest.mark.slow]

WORKERS = 4
WAIT = 30.0
RECOVERED = 12
"""Successful requests after the restart before the test calls the deployment recovered."""


@pytest.fixture
def private_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("redis-server must be installed under CI for the restart test", pytrace=False)
        pytest.skip("install redis-server to run the restart test (it restarts a private server)")
    server = RedisServer().start()
    yield server
    server.cleanup()


async def test_both_processes_reconnect_after_redis_restarts_during_traffic(
    private_server: RedisServer, http: aiohttp.ClientSession, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    ns = Namespace(server=private_server.url, db=13, prefix=unique_prefix(request.node.name))
    url = ns.url(**FAST_BUS)
    b = EcosystemProcess("B", ["--bus", url, "--mads", "rogers", "--data-dir", str(tmp_path / "b")], tmp_path)
    config = write_config(tmp_path / "a.toml", bus=url, mads=["grace"], data_dir=tmp_path / "a")
    a = EcosystemProcess("A", ["--config", str(config)], tmp_path)
    token = await create_token(config, tmp_path)
    async with processes(b, a):
        assert a.url is not None
        api = Api(http, a.url, token)
        await poll(lambda: api.alive("rogers"), WAIT, "A's directory to list rogers from B")

        phase = "before"
        outcomes: Counter[tuple[str, int, str]] = Counter()

        async def worker(n: int) -> None:
            i = 0
            while True:
                i += 1
                seen = phase
                status, body = await api.post("/api/conversations", {"title": f"traffic-{n}-{i}"})
                code = "" if status == 201 else str(body.get("error", {}).get("code"))
                outcomes[(seen, status, code)] += 1

        def succeeded(when: str) -> int:
            return sum(count for (seen, status, _), count in outcomes.items() if seen == when and status == 201)

        workers = [asyncio.create_task(worker(n)) for n in range(WORKERS)]
        try:
            await poll(lambda: _true(succeeded("before") >= RECOVERED), WAIT, "traffic to flow before the restart")
            phase = "during"
            await asyncio.to_thread(private_server.restart)
            phase = "after"
            await poll(lambda: _true(succeeded("after") >= RECOVERED), 2 * WAIT, "requests to succeed again")
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

        failures = {key: n for key, n in outcomes.items() if key[1] != 201}
        assert all(status in (503, 504) for _, status, _ in failures), f"only clear 503/504 errors: {failures}"
        await b.wait_for_line("subscriptions re-registered", WAIT)
        await a.wait_for_line("subscriptions re-registered", WAIT)
        await poll(lambda: api.alive("rogers"), WAIT, "rogers listed alive again after the restart")

        status, created = await api.post("/api/conversations", {"title": "after the restart"})
        assert status == 201, created
        status, said = await api.post(f"/api/conversations/{created['id']}/messages", {"text": "/rogers stats"})
        assert status == 200, said
        assert said["participants"] == ["grace", "rogers"] and said["reply"]["error"] is None, said

        assert await b.terminate() == 0, b.output()
        assert await a.terminate() == 0, a.output()


async def _true(value: bool) -> bool:
    return value
