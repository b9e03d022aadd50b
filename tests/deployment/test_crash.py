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
import fnmatch
import json
from pathlib import Path
from typing import Any

import aiohttp
import aiosqlite
import pytest
import redis.asyncio as aioredis

from bus.envelope import DataPart, Envelope, Kind, ProsePart
from bus.redis import RedisBus
from bus.redis.settings import split_url
from mads.rogers.schemas import RogersConfig
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

        # Each request ran exactly once: its tool-call event (published after the reply) reaches Rogers's
        # store through the wiretap; wait for the tap to catch up rather than racing it to the shutdown.
        async def every_run_stored() -> dict[bool, int] | None:
            runs = await stored_tool_runs(db, "create_conversation")
            return runs if sum(runs.values()) >= REQUESTS else None

        runs = await poll(every_run_stored, WAIT, "Rogers to store every create_conversation tool-call event")
        assert runs == {True: REQUESTS, False: 0}
        assert await b.terminate() == 0, b.output()
        assert await a.terminate() == 0, a.output()
    await client.aclose()
    assert await stored_tool_runs(db, "create_conversation") == {True: REQUESTS, False: 0}


TAPPED_EVENTS = 25


def stored_by_rogers(envelope: Envelope) -> bool:
    """Rogers's documented storage rules (requirements/rogers.md): skipped recipients and its own replies aside."""
    config = RogersConfig()
    if any(fnmatch.fnmatchcase(envelope.recipient, glob) for glob in config.skip_recipients):
        return False
    return not (envelope.sender == "rogers" and envelope.kind is Kind.REPLY)


async def stored_ids(db: Path) -> set[str]:
    async with aiosqlite.connect(db) as conn:
        return {row[0] for row in await conn.execute_fetchall("SELECT id FROM messages")}


async def test_kill_9_of_rogers_mid_write_loses_no_tapped_envelope(crash_ns: Namespace, tmp_path: Path) -> None:
    """Rogers's tap batch is acknowledged only once committed: kill -9 while its write is stuck, restart,
    and every envelope that crossed the bus — as another process saw it — is in the messages table."""
    b = EcosystemProcess(
        "B", ["--bus", crash_ns.url(**FAST_BUS), "--mads", "rogers", "--data-dir", str(tmp_path / "b")], tmp_path
    )
    db = tmp_path / "b" / "rogers" / "conversations.db"
    connection, settings = split_url(crash_ns.url(**FAST_BUS))
    peer = RedisBus(connection, **settings)
    client = aioredis.Redis.from_url(crash_ns.redis())
    crossed: list[Envelope] = []

    async def record(envelope: Envelope) -> None:
        crossed.append(envelope)

    async def answer(envelope: Envelope) -> Envelope:
        return envelope.reply(ProsePart(text=f"noted {envelope.text()}"))

    await peer.start()
    try:
        await peer.subscribe("peer", answer)
        async with processes(b):
            tap = f"{crash_ns.prefix}:tap"
            await poll(lambda: _has_group(client, tap, "rogers"), WAIT, "B's Rogers to tap the bus")
            # From here on, what this process's own tap sees is what crossed the bus while Rogers was tapping
            # (B's start-up requests before Rogers's group existed are outside the run).
            await peer.wiretap(record)
            lock = await aiosqlite.connect(db, isolation_level=None, timeout=WAIT)
            await lock.execute("BEGIN IMMEDIATE")
            try:
                published = [
                    Envelope(
                        sender="user.alice",
                        recipient="events.crash",
                        kind=Kind.EVENT,
                        conversation_id="crash",
                        content=[DataPart(value={"n": i})],
                    )
                    for i in range(TAPPED_EVENTS)
                ]
                for envelope in published:
                    await peer.publish(envelope)
                request = Envelope(
                    sender="user.alice", recipient="peer", kind=Kind.REQUEST, content=[ProsePart(text="hello")]
                )
                reply = await peer.request(request, timeout=WAIT)
                assert reply.kind is Kind.REPLY

                async def rogers_took_a_batch() -> bool:
                    state = await group_state(client, tap, "rogers")
                    return state["pending"] > 0 or state["lag"] == 0

                await poll(rogers_took_a_batch, WAIT, "B's Rogers to read tapped envelopes")
                await poll(lambda: _contains(crossed, reply.id), WAIT, "the peer's own tap to see the reply")
                await b.kill()
                at_kill = await group_state(client, tap, "rogers")
            finally:
                await lock.execute("ROLLBACK")
                await lock.close()

            expected = {e.id for e in crossed if stored_by_rogers(e)}
            assert {e.id for e in published} | {request.id, reply.id} <= expected
            await b.start()
            missing: set[str] = set()

            async def all_stored() -> bool:
                nonlocal missing
                missing = expected - await stored_ids(db)
                return not missing

            try:
                await poll(all_stored, WAIT + 15, "the restarted Rogers to store every envelope that crossed the bus")
            except AssertionError:
                lost = [f"{e.sender}->{e.recipient} {e.kind.value} {e.id}" for e in crossed if e.id in missing]
                raise AssertionError(f"{len(missing)} of {len(expected)} envelopes never stored: {lost[:5]}") from None
            assert at_kill["pending"] > 0, "the batch being written when B died was still unacknowledged"
            await poll(lambda: _settled(client, tap), WAIT, "the tap group to have nothing pending or unread")
            assert await client.xlen(f"{crash_ns.prefix}:dead") == 0
            assert await b.terminate() == 0, b.output()
    finally:
        await peer.close(drain_timeout=2)
        await client.aclose()


async def _has_group(client: aioredis.Redis, stream: str, group: str) -> bool:
    if not await client.exists(stream):
        return False
    return any(info["name"] in (group, group.encode()) for info in await client.xinfo_groups(stream))


async def _contains(envelopes: list[Envelope], envelope_id: str) -> bool:
    return any(e.id == envelope_id for e in envelopes)


async def _settled(client: aioredis.Redis, stream: str) -> bool:
    return await group_state(client, stream, "rogers") == {"pending": 0, "lag": 0}


BACKLOG = 64


async def test_a_dead_consumers_requests_are_answered_before_the_backlog(
    crash_ns: Namespace, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """kill -9 of B while its 16 handlers hold requests and 64 more wait unread; B restarts busy (its new
    handlers are held too). The dead consumer's 16 requests must take B's next free slots, ahead of the
    unread backlog, instead of being answered after all of it (issue 9, item 14)."""
    url = crash_ns.url(**FAST_BUS)
    b = EcosystemProcess("B", ["--bus", url, "--mads", "rogers", "--data-dir", str(tmp_path / "b")], tmp_path)
    config = write_config(tmp_path / "a.toml", bus=url, mads=["grace"], data_dir=tmp_path / "a")
    a = EcosystemProcess("A", ["--config", str(config)], tmp_path)
    token = await create_token(config, tmp_path)
    db = tmp_path / "b" / "rogers" / "conversations.db"
    stream = f"{crash_ns.prefix}:s:rogers"
    client = aioredis.Redis.from_url(crash_ns.redis())
    answered: list[str] = []
    async with processes(b, a):
        assert a.url is not None
        api = Api(http, a.url, token)
        await poll(lambda: api.alive("rogers"), WAIT, "A's directory to list rogers from B")

        async def create(title: str) -> tuple[int, Any]:
            result = await api.post("/api/conversations", {"title": title})
            answered.append(title)
            return result

        async def state_is(expected: dict[str, int]) -> bool:
            return await group_state(client, stream, "rogers") == expected

        lock = await aiosqlite.connect(db, isolation_level=None, timeout=WAIT)
        await lock.execute("BEGIN IMMEDIATE")
        try:
            orphans = [f"orphan-{i:02d}" for i in range(CONCURRENCY)]
            sent = [asyncio.create_task(create(t)) for t in orphans]
            await poll(lambda: state_is({"pending": CONCURRENCY, "lag": 0}), WAIT, "B to hold 16 requests")
            backlog = [f"backlog-{i:03d}" for i in range(BACKLOG)]
            sent += [asyncio.create_task(create(t)) for t in backlog]
            await poll(lambda: state_is({"pending": CONCURRENCY, "lag": BACKLOG}), WAIT, "64 requests to wait unread")
            await b.kill()
            await b.start()
            await b.wait_for_line("wait for a free handler slot", WAIT)
        finally:
            await lock.execute("ROLLBACK")
            await lock.close()

        async with asyncio.timeout(WAIT + 15):
            answers = await asyncio.gather(*sent)
        assert [status for status, _ in answers] == [201] * (CONCURRENCY + BACKLOG), answers
        last_orphan = max(answered.index(t) for t in orphans)
        after = answered[last_orphan + 1 :]
        # B's restarted handlers held 16 of the backlog; the orphans go next, then the other 48
        assert len(after) >= BACKLOG // 2, f"the orphans were answered behind the backlog: {answered}"
        assert await state_is({"pending": 0, "lag": 0})
        assert await client.xlen(f"{crash_ns.prefix}:dead") == 0
        assert await b.terminate() == 0, b.output()
        assert await a.terminate() == 0, a.output()
    await client.aclose()
