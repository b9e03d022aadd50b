"""Rogers on a real full disk: a message is acknowledged and durable, or refused at once — never stored later.

Rogers's directory is a small tmpfs (or loop-mounted file) the test mounts; the ecosystem is
the real one (gateway on loopback, scripted LLM). Filling the filesystem makes SQLite see
ENOSPC from the kernel.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from bus.envelope import Envelope, Kind, ProsePart
from mads.core import names
from mads.mcnamara import McNamara
from mads.rogers import Rogers
from tests.support.ecosystem import CORE_MADS, Running, ecosystem_settings, running
from tests.support.llm_server import ScriptedLLM, echo_last_user
from tests.support.small_disk import small_filesystem
from tests.support.waiting import eventually, eventually_async

ROOT = Path(__file__).resolve().parents[3]
BIG = 90_000
"""A message this long (and its echoed reply) needs new WAL pages, so a full disk refuses it."""


def _text(marker: str) -> str:
    return f"{marker} " + "lorem ipsum dolor " * (BIG // 18)


async def _post(eco: Running, cid: str, text: str, key: str | None = None) -> tuple[int, dict, dict[str, str]]:
    headers = {"Idempotency-Key": key} if key else {}
    url = eco.at(f"/api/conversations/{cid}/messages")
    async with eco.http.post(url, json={"text": text}, headers=headers) as response:
        return response.status, await response.json(), dict(response.headers)


def _rogers(eco: Running) -> Rogers:
    mad = eco.host.mads[names.ROGERS]
    assert isinstance(mad, Rogers)
    return mad


async def test_disk_full_refuses_at_once_and_never_stores_later(tmp_path: Path, llm_server: ScriptedLLM) -> None:
    data = tmp_path / "data"
    llm_server.respond_with(echo_last_user)
    with small_filesystem(data / names.ROGERS, size_mb=8) as disk:
        settings = ecosystem_settings(
            data,
            llm_server.base_url,
            mads=[*CORE_MADS, names.MCNAMARA],
            sections={"rogers": {"probe_interval_s": 0.05}},
        )
        async with running(settings) as eco:
            cid = await eco.new_conversation("disk full")
            await eco.say(cid, "before the disk filled")
            disk.fill()
            refused_text = _text("refusedwhilewriting")
            status, body, headers = await _post(eco, cid, refused_text)
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
            assert str(tmp_path) not in json.dumps(health), "/healthz names stores, never server paths"
            assert str(tmp_path) not in json.dumps(body), "nor do error bodies"
            audit = next(s for s in health["storage"] if s["store"] == "mcnamara/audit.db")
            assert audit["writable"] is True and "path" not in audit
            db_path = str(data / names.ROGERS / "conversations.db")

            async def alerted() -> bool:
                alerts = (await eco.get("/api/alerts"))[1]["alerts"]
                return any(a["rule"] == "storage_faults" and db_path in a["subject"] for a in alerts)

            await eventually_async(alerted, what="McNamara's storage alert naming the file")

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

            # The trail records the gap: how many messages were refused while the store could not write.
            mcnamara = eco.host.mads[names.MCNAMARA]
            assert isinstance(mcnamara, McNamara)

            async def gap_recorded() -> bool:
                records = await mcnamara.trail.query(event_types=["storage.writable", "storage.low_space"])
                return any(r.details.get("refused", 0) >= 1 for r in records)

            await eventually_async(gap_recorded, what="storage.writable record with the refused count")
            assert (await mcnamara.trail.verify()).ok


async def test_a_store_announced_unwritable_refuses_the_owners_next_message_before_the_llm(
    tmp_path: Path, llm_server: ScriptedLLM
) -> None:
    """The gateway skips Rogers's check for a person's next message in their conversation while Rogers's
    last word is that it can store; a refusal it did not see itself (announced on ``events.storage``)
    puts the check back, so the message is refused before Grace or the LLM is asked."""
    data = tmp_path / "data"
    llm_server.respond_with(echo_last_user)
    with small_filesystem(data / names.ROGERS, size_mb=8) as disk:
        settings = ecosystem_settings(data, llm_server.base_url, sections={"rogers": {"probe_interval_s": 0.05}})
        async with running(settings) as eco:
            client = eco.gateway.state.client
            cid = await eco.new_conversation("announced")
            await eco.say(cid, "while the disk has room")
            assert client.storing, "Rogers said it can store, and the owner is known"
            disk.fill()
            # Someone else's traffic, not the gateway's, meets the full disk.
            await eco.host.bus.publish(
                Envelope(
                    sender="hopper",
                    recipient="events.note",
                    kind=Kind.EVENT,
                    conversation_id=None,
                    content=[ProsePart(text=_text("notthegateways"))],
                )
            )
            await eventually(lambda: not client.storing, what="the gateway hearing Rogers's announcement")
            asked = len(llm_server.received)
            status, body, headers = await _post(eco, cid, "refusedupfront short message")
            assert (status, body["error"]["code"]) == (503, "storage_unavailable"), body
            assert int(headers["Retry-After"]) > 0
            assert len(llm_server.received) == asked, "neither Grace nor the LLM was asked"

            disk.free()
            rogers = _rogers(eco)
            await eventually(lambda: rogers.health.health.writable, what="rogers writable again")
            await eco.say(cid, "after the disk was freed")
            assert client.storing
            texts = " ".join(m["text"] for m in await eco.history(cid, limit=200))
            assert "after the disk was freed" in texts and "refusedupfront" not in texts


async def test_start_on_a_full_disk_prints_one_line_naming_the_file(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "disk", size_mb=2) as disk:
        disk.fill()
        data = disk.mount_point / "data"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "ecosystem.py"),
            "--data-dir",
            str(data),
            "--port",
            "0",
            "--mads",
            names.ROGERS,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "MAD_LOG_LEVEL": "WARNING"},
        )
        _, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 3, err.decode()
    lines = [line for line in err.decode().splitlines() if not line.startswith("{")]
    assert lines == [lines[0]] and lines[0].startswith("storage error: "), lines
    assert str(data / names.ROGERS / "conversations.db") in lines[0]
    assert "disk full" in lines[0] and "B free" in lines[0]
    assert "Traceback" not in err.decode()
