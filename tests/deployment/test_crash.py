"""``kill -9`` of the process running Rogers while requests are in flight, then a restart.

The requests come through the gateway in process A. Rogers in process B is held
mid-handler: the test takes SQLite's write lock on B's database, so every
``create_conversation`` handler B has taken is running but has not yet written
anything, and the rest wait unread in the stream. B is then killed with SIGKILL,
the lock released and B started again. Every request must be answered, each
conversation must exist exactly once, and the handler must have completed exactly
once per request — counted by the ``events.tool_call`` event each completed tool run
publishes, which Rogers stores under its own fresh id (so a second run could not
hide behind idempotent storage).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import pytest
import redis.asyncio as aioredis

from tests.deployment.conftest import Namespace
from tests.deployment.support import FAST_BUS, Api, EcosystemProcess, create_token, poll, processes, write_config

pytestmark = [pytest.mark.redis, pytest.mark.slow]

REQUESTS = 24
CONCURRENCY = 16
"""Rogers's handler slots (``MAD.concurrency``): B takes 16 requests, 8 stay unread in the stream."""
WAIT = 30.0


async def group_state(client: aioredis.Redis, stream: str, group: str) -> dict[str, int]:
    """``pending`` (delivered, not acknowledged) and ``lag`` (not yet delivered) of one consumer group."""
    for info in await client.xinfo_groups(stream):
        name = info["name"].decode() if isinstance(info["name"], bytes) else info["name"]
        if name == group:
            return {"pending": int(info["pending"]), "lag": int(info["lag"] or 0)}
    return {"pending": 0, "lag": 0}


async def stored_tool_runs(db: Path, tool: str) -> dict[bool, int]:
    """Completed runs of ``tool`` by outcome, from the tool-call events Rogers stored."""
    async with aiosqlite.connect(db) as conn:
        rows = await conn.execute_fetchall(
            "SELECT envelope FROM messages WHERE recipient = 'events.tool_call'",
        )
    runs = {True: 0, False: 0}
    for (envelope,) in rows:
        value: dict[str, Any] = json.loads(envelope)["content"][0]["value"]
        if value["tool"] == tool:
            runs[bool(value["ok"])] += 1
    return runs


async def test_kill_9_with_requests_in_flight_loses_none_and_runs_none_twice(
    crash_ns: Namespace, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = crash_ns.url(**FAST_BUS)
    b = EcosystemProcess("B", ["--bus", url, "--mads", "rogers", "--data-dir", str(tmp_path / "b")], tmp_path)
    config = write_config(tmp_path / "a.toml", bus=url, mads=["grace"], data_dir=tmp_path / "a")
    a = EcosystemProcess("A", ["--config", str(config)], tmp_path)
    token = await create_token(config, tmp_path)
    db = tmp_path / "b" / "rogers" / "conversations.db"
    stream = f"{crash_ns.prefix}:s:rogers"
    titles = [f"inflight-{i:02d}" for i in range(REQUESTS)]
    client = aioredis.Redis.from_url(crash_ns.redis())
    async with processes(b, a):
        assert a.url is not None
        api = Api(http, a.url, token)
        await poll(lambda: api.alive("rogers"), WAIT, "A's directory to list rogers from B")

        lock = await aiosqlite.connect(db, isolation_level=None, timeout=WAIT)
        await lock.execute("BEGIN IMMEDIATE")
        try:
            sent = [asyncio.create_task(api.post("/api/conversations", {"title": t})) for t in titles]

            async def all_in_flight() -> dict[str, int] | None:
                state = await group_state(client, stream, "rogers")
                return state if state == {"pending": CONCURRENCY, "lag": REQUESTS - CONCURRENCY} else None

            await poll(all_in_flight, WAIT, "B to hold 16 requests in its handlers and 8 to wait in the stream")
            assert not any(task.done() for task in sent), "no request may be answered while B's handlers are held"
            await b.kill()
        finally:
            await lock.execute("ROLLBACK")
            await lock.close()

        assert await group_state(client, stream, "rogers") == {"pending": CONCURRENCY, "lag": REQUESTS - CONCURRENCY}
        await b.start()
        async with asyncio.timeout(WAIT + 15):
            answers = await asyncio.gather(*sent)
        assert [status for status, _ in answers] == [201] * REQUESTS, answers
        assert sorted(body["title"] for _, body in answers) == titles
        assert len({body["id"] for _, body in answers}) == REQUESTS

        status, page = await api.get("/api/conversations", limit=200)
        assert status == 200, page
        assert sorted(c["title"] for c in page["conversations"]) == titles, "each conversation exactly once"
        assert await group_state(client, stream, "rogers") == {"pending": 0, "lag": 0}
        assert await client.xlen(f"{crash_ns.prefix}:dead") == 0

        assert await b.terminate() == 0, b.output()
        assert await a.terminate() == 0, a.output()
    await client.aclose()
    assert await stored_tool_runs(db, "create_conversation") == {True: REQUESTS, False: 0}
