"""Loss after a crash is detected: a truncated WAL loses acknowledged messages, and Rogers says so.

Rogers and McNamara run on a real bus; McNamara's trail holds what Rogers acknowledged (count and
running hash per conversation). The test copies Rogers's database and WAL while it runs (what a
crash leaves on disk), cuts the WAL short, and starts a new Rogers on the copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import aiosqlite

from bus.base import Subscription
from bus.envelope import Envelope
from bus.memory import InMemoryBus
from mads.core import names
from mads.core.base import MadContext
from mads.core.ledger import LEDGER_EVENT_TYPE
from mads.core.sqlite import backup_file
from mads.core.store_health import STORAGE_TOPIC
from mads.mcnamara import McNamara
from mads.rogers import Rogers
from tests.mads.rogers.support import Recorder, call, note
from tests.support.cli import run_cli as cli
from tests.support.waiting import eventually, eventually_async

FIRST, LATER = 10, 10


async def _ledger_count(mcnamara: McNamara, cid: str) -> int:
    records = await mcnamara.trail.query(0, [LEDGER_EVENT_TYPE], limit=10_000)
    counts = [r.details["conversations"][cid]["count"] for r in records if cid in r.details["conversations"]]
    return counts[-1] if counts else 0


async def test_a_truncated_wal_is_reported_as_lost_acknowledged_messages(tmp_path: Path) -> None:
    live, crashed = tmp_path / "live", tmp_path / "crashed"
    bus = InMemoryBus()
    await bus.start()
    mcnamara = McNamara(MadContext(bus=bus, data_dir=live))
    rogers = Rogers(MadContext(bus=bus, data_dir=live))
    await mcnamara.start()
    await rogers.start()
    cid = (await call(bus, "create_conversation", {}))["id"]
    for i in range(FIRST):
        await bus.publish(note(cid, f"early {i}"))
    await call(bus, "sync")
    db = live / names.ROGERS / "conversations.db"
    wal = db.with_name(db.name + "-wal")
    await eventually_async(lambda: _count_is(mcnamara, cid, FIRST), what="first ledger entry")
    wal_after_first = wal.stat().st_size
    for i in range(LATER):
        await bus.publish(note(cid, f"later {i}"))
    await call(bus, "sync")
    await eventually_async(lambda: _count_is(mcnamara, cid, FIRST + LATER), what="second ledger entry")

    # What a crash leaves: the file and its WAL as they are now, the WAL then cut back to before the later batch.
    (crashed / names.ROGERS).mkdir(parents=True, mode=0o700)
    shutil.copyfile(db, crashed / names.ROGERS / db.name)
    shutil.copyfile(wal, crashed / names.ROGERS / wal.name)
    with (crashed / names.ROGERS / wal.name).open("r+b") as fh:
        fh.truncate(wal_after_first)
    (crashed / names.MCNAMARA).mkdir(mode=0o700)
    backup_file(live / names.MCNAMARA / "audit.db", crashed / names.MCNAMARA / "audit.db")
    key = crashed / names.MCNAMARA / "audit.db.hmac-key"
    shutil.copyfile(live / names.MCNAMARA / "audit.db.hmac-key", key)
    key.chmod(0o600)
    await rogers.stop()
    await mcnamara.stop()
    await bus.close()

    bus = InMemoryBus()
    await bus.start()
    seen: list[dict] = []

    async def on_storage(envelope: Envelope) -> None:
        seen.extend(v for v in envelope.data() if isinstance(v, dict))

    subscription: Subscription = await bus.subscribe(STORAGE_TOPIC, on_storage, group="test")
    mcnamara = McNamara(MadContext(bus=bus, data_dir=crashed))
    rogers = Rogers(MadContext(bus=bus, data_dir=crashed))
    await mcnamara.start()
    await rogers.start()
    try:
        await eventually(lambda: rogers.ledger_checked, timeout=30, what="the ledger check after start")
        page = await call(bus, "history", {"conversation_id": cid, "limit": 100})
        stored = len(page["messages"])
        assert stored < FIRST + LATER, "the truncated WAL really lost acknowledged messages"
        await eventually(lambda: any(v["state"] == "lost" for v in seen), what="the loss announced")
        lost = next(v for v in seen if v["state"] == "lost")
        assert lost["details"]["missing"] == FIRST + LATER - stored
        assert lost["details"]["conversations"] == [f"{cid}: {FIRST + LATER - stored} missing"]
        assert rogers.health.health.state == "lost"

        async def alerted() -> bool:
            alerts = await mcnamara.store.alerts(include_acknowledged=False)
            return any(a.rule == "storage_faults" and "(lost)" in a.subject for a in alerts)

        await eventually_async(alerted, what="McNamara's alert about the loss")
    finally:
        await subscription.cancel()
        await rogers.stop()
        await mcnamara.stop()
        await bus.close()

    code, out, err = await cli("storage", "check", "--data-dir", str(crashed))
    assert code == 1, out + err
    assert f"conversation {cid}: {FIRST + LATER - stored} acknowledged messages missing" in err
    code, out, err = await cli("storage", "check", "--data-dir", str(live))
    assert code == 0, out + err
    assert "1 conversations match what was acknowledged" in out


async def _count_is(mcnamara: McNamara, cid: str, expected: int) -> bool:
    return await _ledger_count(mcnamara, cid) == expected


async def test_asking_for_the_ledger_without_mcnamara_stores_nothing(tmp_path: Path) -> None:
    """No McNamara: Rogers keeps asking (no_route) while it waits for one; none of that is stored."""
    bus = InMemoryBus()
    await bus.start()
    recorder = Recorder()
    await bus.wiretap(recorder)
    rogers = Rogers(MadContext(bus=bus, data_dir=tmp_path))
    await rogers.start()
    try:

        def asked() -> list[Envelope]:
            return [
                e
                for e in recorder.seen
                if e.sender == rogers.address and any(getattr(p, "tool", None) == "ledger" for p in e.content)
            ]

        await eventually(lambda: len(asked()) >= 2, what="two ledger requests")
        await call(bus, "sync")
        ids = {e.id for e in asked()}
        answers = {e.id for e in recorder.seen if e.correlation_id in ids}
        assert answers, "each request was answered (no_route)"
        async with aiosqlite.connect(rogers.store.path) as db, db.execute("SELECT id FROM messages") as cursor:
            stored = {row[0] for row in await cursor.fetchall()}
        assert stored and not (ids | answers) & stored
    finally:
        await rogers.stop()
        await bus.close()
