"""``ecosystem.py storage check``, ``backup`` and ``restore`` in real subprocesses against real stores.

The backup is taken while writers post messages through the real gateway; the restored data
directory must hold every message acknowledged before the backup began, pass ``storage check``
and keep an audit chain that verifies.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from bus.memory import InMemoryBus
from mads.core import names
from mads.core.base import MadContext
from mads.mcnamara import McNamara
from mads.rogers import Rogers
from tests.mads.rogers.support import call, note
from tests.support.cli import run_cli
from tests.support.ecosystem import CORE_MADS, Running, ecosystem_settings, running
from tests.support.llm_server import ScriptedLLM, echo_last_user
from tests.support.waiting import eventually

WRITERS, EACH = 4, 12


async def _history_texts(eco: Running, cid: str) -> list[str]:
    texts, cursor = [], None
    while True:
        query = {"limit": 200, **({"cursor": cursor} if cursor else {})}
        status, page = await eco.get(f"/api/conversations/{cid}/messages", params=query)
        assert status == 200, page
        texts += [m["text"] for m in page["messages"] if m["sender"].startswith("user.")]
        cursor = page["next_cursor"]
        if cursor is None:
            return texts


def _mcnamara(eco: Running) -> McNamara:
    mad = eco.host.mads[names.MCNAMARA]
    assert isinstance(mad, McNamara)
    return mad


async def test_backup_under_write_load_restores_everything_acknowledged(
    tmp_path: Path, llm_server: ScriptedLLM
) -> None:
    llm_server.respond_with(echo_last_user)
    data, backups = tmp_path / "data", tmp_path / "backups"
    mads = [*CORE_MADS, names.MCNAMARA]
    acknowledged: list[str] = []
    async with running(ecosystem_settings(data, llm_server.base_url, mads=mads)) as eco:
        cid = await eco.new_conversation("under load")

        backed_up = asyncio.Event()

        async def writer(w: int) -> None:
            i = 0
            while not backed_up.is_set() or i < EACH:
                text = f"writer{w} message{i}"
                await eco.say(cid, text)
                acknowledged.append(text)
                i += 1

        writers = [asyncio.create_task(writer(w)) for w in range(WRITERS)]
        await eventually(lambda: len(acknowledged) >= WRITERS * 2, timeout=60, what="writes under way")
        before_backup = set(acknowledged)
        code, out, err = await run_cli("backup", "--data-dir", str(data), "--to", str(backups))
        assert code == 0, err
        assert len(acknowledged) > len(before_backup), "the backup must be taken while writes go on"
        backed_up.set()
        await asyncio.gather(*writers)
        assert (await _mcnamara(eco).trail.verify()).ok

    (backup,) = list(backups.iterdir())
    manifest = json.loads((backup / "MANIFEST.json").read_text())
    assert {"rogers/conversations.db", "mcnamara/audit.db"} <= {f["path"] for f in manifest["files"]}
    assert backup.stat().st_mode & 0o077 == 0

    code, out, err = await run_cli("restore", str(backup), "--data-dir", str(data))
    assert code == 0, err
    assert "moved aside" in out
    code, out, err = await run_cli("storage", "check", "--data-dir", str(data))
    assert code == 0, out + err
    assert "audit chain of" in out and "message checksums" in out

    async with running(ecosystem_settings(data, llm_server.base_url, mads=mads)) as eco:
        restored = await _history_texts(eco, cid)
        assert before_backup <= set(restored), sorted(before_backup - set(restored))
        assert set(restored) <= set(acknowledged)
        assert len(restored) == len(set(restored)), "nothing stored twice"
        assert (await _mcnamara(eco).trail.verify()).ok
        await eco.say(cid, "after the restore")


async def test_storage_check_names_a_damaged_message_without_its_content(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bus = InMemoryBus()
    await bus.start()
    rogers = Rogers(MadContext(bus=bus, data_dir=data))
    await rogers.start()
    cid = (await call(bus, "create_conversation", {}))["id"]
    changed = note(cid, "a secret plan zebra")
    for envelope in [note(cid, "harmless"), changed]:
        await bus.publish(envelope)
    await call(bus, "sync")
    await rogers.stop()
    await bus.close()

    code, out, err = await run_cli("storage", "check", "--data-dir", str(data))
    assert code == 0, out + err

    db = data / names.ROGERS / "conversations.db"
    raw = db.read_bytes()
    offset = raw.find(b'"text":"a secret plan zebra') + len('"text":"a secret plan ')
    db.write_bytes(raw[:offset] + b"Z" + raw[offset + 1 :])
    code, out, err = await run_cli("storage", "check", "--data-dir", str(data))
    assert code == 1
    assert "DAMAGED rogers/conversations.db" in err and changed.id in err
    assert "zebra" not in err + out and "Zebra" not in err + out and "secret plan" not in err + out
