"""MADs in two processes on one Redis: the gateway and Grace in A, Rogers (the conversation store) in B."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from bus.envelope import Envelope
from bus.redis import RedisBus
from bus.redis.settings import split_url
from tests.deployment.conftest import Namespace
from tests.deployment.support import (
    FAST_BUS,
    PRINCIPAL,
    Api,
    EcosystemProcess,
    create_token,
    poll,
    processes,
    write_config,
)

pytestmark = [pytest.mark.redis, pytest.mark.slow]

SEE_TIMEOUT = 20.0
EXPIRY_TIMEOUT = 30.0
"""Above the directory's expiry (15 s) plus one heartbeat (5 s): when a killed MAD must show as down."""


async def split(ns: Namespace, tmp_path: Path) -> tuple[EcosystemProcess, EcosystemProcess, str]:
    """B runs Rogers, configured by flags; A runs Grace and so the gateway, configured by file.

    Also returns an operator token for A's gateway."""
    url = ns.url(**FAST_BUS)
    b = EcosystemProcess("B", ["--bus", url, "--mads", "rogers", "--data-dir", str(tmp_path / "b")], tmp_path)
    config = write_config(tmp_path / "a.toml", bus=url, mads=["grace"], data_dir=tmp_path / "a")
    a = EcosystemProcess("A", ["--config", str(config)], tmp_path)
    return a, b, await create_token(config, tmp_path)


async def live_routes(ns: Namespace, address: str) -> int:
    """Registrations of ``address`` that have not expired, by the Redis server's clock."""
    client = aioredis.Redis.from_url(ns.redis())
    try:
        seconds, micros = await client.time()
        return int(await client.zcount(f"{ns.prefix}:r:{address}", seconds * 1000 + micros // 1000, "+inf"))
    finally:
        await client.aclose()


async def test_conversation_through_gateway_in_a_is_stored_by_rogers_in_b(
    shared_ns: Namespace, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    a, b, token = await split(shared_ns, tmp_path)
    async with processes(b, a):
        banner = await b.wait_for_line("runs MADs:", 1)
        assert "runs MADs: rogers;" in banner and "no gateway in this process" in banner, banner
        assert shared_ns.prefix in banner and b.url is None
        assert "runs MADs: grace;" in await a.wait_for_line("runs MADs:", 1) and a.url is not None
        api = Api(http, a.url, token)

        await poll(lambda: api.alive("rogers"), SEE_TIMEOUT, "A's directory to list rogers from B")
        mads = await api.mads()
        assert mads["rogers"]["process"].endswith(f"-{b.pid}"), mads["rogers"]
        assert mads["grace"]["process"].endswith(f"-{a.pid}"), mads["grace"]
        assert {"create_conversation", "history", "search", "sync"} <= {t["name"] for t in mads["rogers"]["tools"]}

        status, created = await api.post("/api/conversations", {"title": "Across processes"})
        assert status == 201, created
        cid = created["id"]
        status, said = await api.post(f"/api/conversations/{cid}/messages", {"text": "/rogers list_conversations"})
        assert status == 200, said
        assert said["participants"] == ["grace", "rogers"]
        assert said["reply"]["error"] is None
        [page] = said["reply"]["data"]
        assert [c["title"] for c in page["conversations"]] == ["Across processes"]

        status, helped = await api.post(f"/api/conversations/{cid}/messages", {"text": "/help"})
        assert status == 200, helped
        assert "rogers — " in helped["reply"]["text"], "Grace's own directory lists the remote rogers"

        status, history = await api.get(f"/api/conversations/{cid}/messages")
        assert status == 200, history
        texts = [(m["sender"], m["recipient"], m["text"]) for m in history["messages"]]
        assert (f"user.{PRINCIPAL}", "grace", "/rogers list_conversations") in texts, texts
        replies = {(m["sender"], m["recipient"]) for m in history["messages"] if m["kind"] == "reply"}
        assert replies == {("grace", f"user.{PRINCIPAL}")}, "stored as addressed, not to the gateway's bus inbox"
        status, stored = await api.get(f"/api/conversations/{cid}")
        assert status == 200, stored
        assert {p["address"] for p in stored["participants"]} == {f"user.{PRINCIPAL}", "grace", "rogers"}, stored
        assert (tmp_path / "b" / "rogers" / "conversations.db").is_file()
        assert not (tmp_path / "a" / "rogers").exists(), "the store must live in B only"

        assert await b.terminate() == 0, b.output()
        assert await live_routes(shared_ns, "rogers") == 0, "a clean stop withdraws the route at once"
        status, body = await api.post("/api/conversations", {"title": "while B is stopped"})
        assert status == 503, body
        assert body["error"]["code"] == "no_route"
        assert "'rogers' is not running" in body["error"]["message"], body
        assert "rogers" not in await api.mads(), "B announced rogers down when it stopped"
        assert await a.terminate() == 0, a.output()


async def test_killed_mad_fails_fast_and_is_shown_down_then_comes_back(
    shared_ns: Namespace, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    a, b, token = await split(shared_ns, tmp_path)
    async with processes(b, a):
        assert a.url is not None
        api = Api(http, a.url, token)
        await poll(lambda: api.alive("rogers"), SEE_TIMEOUT, "A's directory to list rogers from B")

        await b.kill()

        async def route_lapsed() -> bool:
            return await live_routes(shared_ns, "rogers") == 0

        await poll(route_lapsed, SEE_TIMEOUT, "rogers's registration to expire (presence_ttl)")
        status, body = await api.post("/api/conversations", {"title": "B is dead"})
        assert status == 503, body
        assert body["error"]["code"] == "no_route" and "'rogers' is not running" in body["error"]["message"], body

        async def shown_down() -> bool:
            entry = (await api.mads()).get("rogers")
            return entry is not None and not entry["alive"]

        await poll(shown_down, EXPIRY_TIMEOUT, "A's directory to mark rogers not alive")
        status, health = await api.get("/healthz")
        assert status == 200 and "rogers" not in health["mads_alive"], health

        await b.start()
        await poll(lambda: api.alive("rogers"), SEE_TIMEOUT, "the restarted rogers to be listed alive")
        assert (await api.mads())["rogers"]["process"].endswith(f"-{b.pid}")
        status, created = await api.post("/api/conversations", {"title": "B is back"})
        assert status == 201, created
        assert await b.terminate() == 0
        assert await a.terminate() == 0


async def test_two_processes_hosting_grace_are_both_listed_through_heartbeats(
    shared_ns: Namespace, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """Each instance of a MAD is its own directory entry: no entry flipping between processes."""
    url = shared_ns.url(**FAST_BUS)
    config = write_config(tmp_path / "a.toml", bus=url, mads=["grace"], data_dir=tmp_path / "a")
    a = EcosystemProcess("A", ["--config", str(config)], tmp_path)
    b = EcosystemProcess("B", ["--bus", url, "--mads", "grace,rogers", "--data-dir", str(tmp_path / "b")], tmp_path)
    token = await create_token(config, tmp_path)
    async with processes(a, b):
        assert a.url is not None and b.url is not None
        api = Api(http, a.url, token)

        async def graces() -> list[dict[str, Any]]:
            status, body = await api.get("/api/mads")
            assert status == 200, body
            return [m for m in body["mads"] if m["name"] == "grace"]

        async def both_alive() -> list[dict[str, Any]] | None:
            found = await graces()
            return found if len(found) == 2 and all(m["alive"] for m in found) else None

        first = await poll(both_alive, SEE_TIMEOUT, "A's directory to list grace in A and in B")
        processes_of = [m["process"] for m in first]
        assert sorted(int(p.rsplit("-", 1)[1]) for p in processes_of) == sorted([a.pid, b.pid]), first
        heard: dict[str, int] = {}

        async def count(envelope: Envelope) -> None:
            for value in envelope.data():
                process = value["process"]  # type: ignore[index]
                heard[process] = heard.get(process, 0) + 1

        connection, settings = split_url(url)
        listener = RedisBus(connection, **settings)
        await listener.start()
        await listener.subscribe("events.presenc[e]", count)

        async def both_heard_again() -> bool:
            """Every poll sees both instances, in the same order, until each has sent a heartbeat since."""
            now = await graces()
            assert [m["process"] for m in now] == processes_of, now
            return all(heard.get(p, 0) >= 2 for p in processes_of)

        try:
            await poll(both_heard_again, SEE_TIMEOUT, "two heartbeats from both instances")
        finally:
            await listener.close(drain_timeout=1)
        status, health = await api.get("/healthz")
        assert status == 200 and health["mads_alive"].count("grace") == 1, health

        assert await b.terminate() == 0, b.output()

        async def only_a_left() -> bool:
            return [m["process"] for m in await graces()] == [p for p in processes_of if p.endswith(f"-{a.pid}")]

        await poll(only_a_left, SEE_TIMEOUT, "B's grace to be gone from A's directory once B stopped")
        assert await a.terminate() == 0, a.output()
