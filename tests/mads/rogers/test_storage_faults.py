"""Rogers on a real full disk: a message is acknowledged and durable, or refused at once — never stored later.

Rogers's directory is a small tmpfs (or loop-mounted file) the test mounts; the ecosystem is
the real one (gateway on loopback, scripted LLM). Filling the filesystem makes SQLite see
ENOSPC from the kernel.
"""

from __future__ import annotations

from pathlib import Path

from mads.core import names
from mads.rogers import Rogers
from tests.support.ecosystem import Running, ecosystem_settings, running
from tests.support.llm_server import ScriptedLLM, echo_last_user
from tests.support.small_disk import small_filesystem
from tests.support.waiting import eventually, eventually_async

BIG = 90_000
"""A message this long (and its echoed reply) needs new WAL pages, so a full disk refuses it."""


def _text(marker: str) -> str:
    return f"{marker} " + "lorem ipsum dolor " * (BIG // 18)


async def _post(eco: Running, cid: str, text: str) -> tuple[int, dict, dict[str, str]]:
    async with eco.http.post(eco.at(f"/api/conversations/{cid}/messages"), json={"text": text}) as response:
        return response.status, await response.json(), dict(response.headers)


def _rogers(eco: Running) -> Rogers:
    mad = eco.host.mads[names.ROGERS]
    assert isinstance(mad, Rogers)
    return mad


async def test_disk_full_refuses_at_once_and_never_stores_later(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    data = tmp_path / "data"
    llm_server.respond_with(echo_last_user)
    with small_filesystem(data / names.ROGERS, size_mb=8) as disk:
        settings = ecosystem_settings(data, llm_server.base_url, sections={"rogers": {"probe_interval_s": 0.05}})
        async with running(settings) as eco:
            cid = await eco.new_conversation("disk full")
            await eco.say(cid, "before the disk filled")
            disk.fill()
            status, body, headers = await _post(eco, cid, _text("refusedwhilewriting"))
            assert status == 503, body
            assert body["error"]["code"] == "storage_unavailable"
            assert body["error"]["retryable"] is True
            assert int(headers["Retry-After"]) > 0
            assert "disk_full" in body["error"]["message"]

            # Known unwritable now: refused before Grace (and the LLM) is even asked.
            asked = len(llm_server.received)
            status, body, _ = await _post(eco, cid, "refusedupfront short message")
            assert (status, body["error"]["code"]) == (503, "storage_unavailable"), body
            assert len(llm_server.received) == asked

            health = (await eco.get("/healthz"))[1]
            assert health["status"] == "degraded", health
            store = next(s for s in health["storage"] if s["store"] == "rogers/conversations.db")
            assert store["writable"] is False and "disk_full" in store["last_error"]
            disk.free()
            rogers = _rogers(eco)
            await eventually(lambda: rogers.health.health.writable, what="rogers writable again")
            await eco.say(cid, "after the disk was freed")
            texts = " ".join(m["text"] for m in await eco.history(cid, limit=200))
            assert "before the disk filled" in texts and "after the disk was freed" in texts
            assert "refusedwhilewriting" not in texts
            assert "refusedupfront" not in texts
            assert rogers.health.health.refused >= 1

            async def healthy() -> bool:
                return (await eco.get("/healthz"))[1]["status"] == "ok"

            await eventually_async(healthy, what="/healthz ok again")
