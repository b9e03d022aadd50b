"""Audit trail on a real SQLite file: chaining, tamper detection, HMAC'd values, write failures."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from mads.core.audit_trail import (
    GENESIS_HASH,
    AuditEvent,
    AuditEventType,
    AuditKeyError,
    AuditOutcome,
    AuditTrail,
    AuditWriteError,
    ChainHead,
    record_hash,
)

E = AuditEventType


def event(i: int = 0, **kw: object) -> AuditEvent:
    base: dict[str, object] = {
        "event_type": E.TOOL_CALL,
        "actor": "imperator",
        "action": f"call-{i}",
        "outcome": AuditOutcome.SUCCESS,
        "details": {"i": i, "path": "providers/openai"},
    }
    base.update(kw)
    return AuditEvent.model_validate(base)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "mcnamara" / "audit.db"


@pytest.fixture
async def trail(db_path: Path) -> AsyncIterator[AuditTrail]:
    async with AuditTrail(db_path) as t:
        yield t


async def fill(trail: AuditTrail, n: int = 6) -> None:
    for i in range(1, n + 1):
        await trail.append(event(i))


def _db_files_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(db.parent.iterdir()) if p.name.startswith(db.name))


def raw(db_path: Path) -> sqlite3.Connection:
    return sqlite3.connect(db_path, isolation_level=None)


async def test_chain_links_and_verifies(trail: AuditTrail) -> None:
    first = await trail.append(event(1))
    second = await trail.append(event(2, event_type="bus.custom_event"))
    assert (first.seq, first.prev_hash) == (1, GENESIS_HASH)
    assert (second.seq, second.prev_hash) == (2, first.hash)
    assert len(first.hash) == 64 and first.hash != second.hash
    report = await trail.verify()
    assert report.ok and report.records_checked == 2 and report.head == ChainHead(seq=2, hash=second.hash)


async def test_empty_chain_verifies(trail: AuditTrail) -> None:
    report = await trail.verify()
    assert report.ok and report.records_checked == 0 and report.head.hash == GENESIS_HASH


async def test_chain_survives_reopen(db_path: Path) -> None:
    async with AuditTrail(db_path) as t:
        await fill(t, 3)
    async with AuditTrail(db_path) as t:
        rec = await t.append(event(4))
        assert rec.seq == 4
        assert (await t.verify()).ok


async def test_concurrent_appends_form_one_linear_chain(trail: AuditTrail) -> None:
    records = await asyncio.gather(*(trail.append(event(i)) for i in range(50)))
    assert sorted(r.seq for r in records) == list(range(1, 51))
    report = await trail.verify()
    assert report.ok and report.records_checked == 50


async def test_modified_record_detected(trail: AuditTrail, db_path: Path) -> None:
    await fill(trail)
    with raw(db_path) as db:
        db.execute("UPDATE audit_log SET outcome = 'failure' WHERE seq = 3")
    report = await trail.verify()
    assert (report.ok, report.first_bad_seq, report.reason) == (False, 3, "hash mismatch")
    assert report.records_checked == 2


async def test_modified_details_detected(trail: AuditTrail, db_path: Path) -> None:
    await fill(trail)
    with raw(db_path) as db:
        db.execute("""UPDATE audit_log SET details = '{"i":4,"path":"providers/other"}' WHERE seq = 4""")
    report = await trail.verify()
    assert (report.first_bad_seq, report.reason) == (4, "hash mismatch")


async def test_deleted_middle_record_detected(trail: AuditTrail, db_path: Path) -> None:
    await fill(trail)
    with raw(db_path) as db:
        db.execute("DELETE FROM audit_log WHERE seq = 3")
    report = await trail.verify()
    assert (report.first_bad_seq, report.reason) == (3, "sequence gap")


async def test_deleted_last_record_detected_as_truncation(trail: AuditTrail, db_path: Path) -> None:
    await fill(trail)
    with raw(db_path) as db:
        db.execute("DELETE FROM audit_log WHERE seq = 6")
    report = await trail.verify()
    assert (report.first_bad_seq, report.reason) == (6, "truncated")


async def test_forged_record_appended_without_head_detected(trail: AuditTrail, db_path: Path) -> None:
    await fill(trail)
    last = (await trail.tail(1))[0]
    args = (7, last.time.isoformat(), "auth.login", "mallory", "login", "success", "{}", last.hash)
    with raw(db_path) as db:
        db.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (*args, record_hash(*args)))
    report = await trail.verify()
    assert (report.first_bad_seq, report.reason) == (7, "records after head")


async def test_inserted_record_detected(trail: AuditTrail, db_path: Path) -> None:
    await fill(trail)
    prev = (await trail.query(since_seq=2, limit=1))[0]
    with raw(db_path) as db:
        db.execute("BEGIN")
        for seq in range(6, 3, -1):
            db.execute("UPDATE audit_log SET seq = seq + 1 WHERE seq = ?", (seq,))
        args = (4, prev.time.isoformat(), "auth.login", "mallory", "login", "success", "{}", prev.hash)
        db.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (*args, record_hash(*args)))
        db.execute("COMMIT")
    report = await trail.verify()
    assert (report.first_bad_seq, report.reason) == (5, "prev_hash mismatch")


async def test_naively_inserted_record_detected(trail: AuditTrail, db_path: Path) -> None:
    await fill(trail)
    with raw(db_path) as db:
        db.execute("BEGIN")
        for seq in range(6, 2, -1):
            db.execute("UPDATE audit_log SET seq = seq + 1 WHERE seq = ?", (seq,))
        db.execute(
            "INSERT INTO audit_log SELECT 3, time, event_type, 'mallory', action, outcome, details, prev_hash, hash "
            "FROM audit_log WHERE seq = 2"
        )
        db.execute("COMMIT")
    report = await trail.verify()
    assert (report.first_bad_seq, report.reason) == (3, "prev_hash mismatch")


async def test_reordered_records_detected(trail: AuditTrail, db_path: Path) -> None:
    await fill(trail)
    with raw(db_path) as db:
        db.execute("BEGIN")
        db.execute("UPDATE audit_log SET seq = -1 WHERE seq = 2")
        db.execute("UPDATE audit_log SET seq = 2 WHERE seq = 4")
        db.execute("UPDATE audit_log SET seq = 4 WHERE seq = -1")
        db.execute("COMMIT")
    report = await trail.verify()
    assert (report.first_bad_seq, report.reason) == (2, "prev_hash mismatch")


async def test_rewritten_history_caught_only_by_external_anchor(trail: AuditTrail, db_path: Path) -> None:
    await fill(trail, 4)
    anchor = await trail.head()
    with raw(db_path) as db:
        db.execute("BEGIN")
        prev = GENESIS_HASH
        rows = db.execute("SELECT seq, time, event_type, actor, action, outcome, details FROM audit_log ORDER BY seq")
        for seq, time, et, _actor, action, outcome, details in rows.fetchall():
            digest = record_hash(seq, time, et, "mallory", action, outcome, details, prev)
            db.execute("UPDATE audit_log SET actor='mallory', prev_hash=?, hash=? WHERE seq=?", (prev, digest, seq))
            prev = digest
        db.execute("UPDATE audit_head SET hash = ? WHERE id = 1", (prev,))
        db.execute("COMMIT")
    assert (await trail.verify()).ok, "documented limit: a full rewrite with the head is self-consistent"
    report = await trail.verify(expected_head=anchor)
    assert (report.ok, report.first_bad_seq, report.reason) == (False, 4, "head mismatch")


async def test_hmac_values_not_in_db_but_matchable(trail: AuditTrail, db_path: Path) -> None:
    token = "tok-CANARY-5d1e9a7c"
    secret = "sk-CANARY-secret-77"
    rec = await trail.append(
        event(
            1,
            event_type=E.SECRET_READ,
            details={"path": "providers/openai", "token": token, "nested": {"api_key": secret}, "my_id": "id-CANARY-1"},
            hmac_keys=frozenset({"my_id"}),
        )
    )
    assert rec.details["token"] == trail.hmac_value(token)
    assert rec.details["nested"] == {"api_key": trail.hmac_value(secret)}
    assert rec.details["my_id"] == trail.hmac_value("id-CANARY-1")
    assert rec.details["path"] == "providers/openai"
    assert str(rec.details["token"]).startswith("hmac-sha256:") and len(str(rec.details["token"])) == 12 + 64
    await trail.close()
    data = _db_files_bytes(db_path)
    for canary in (token, secret, "id-CANARY-1"):
        assert canary.encode() not in data
    assert b"providers/openai" in data
    async with AuditTrail(db_path) as again:
        found = await again.query(event_types=[E.SECRET_READ])
        assert found[0].details["token"] == again.hmac_value(token)
        assert again.hmac_value(token) != again.hmac_value(token + "x")


async def test_hmac_key_file_created_0600_and_per_install(tmp_path: Path) -> None:
    async with AuditTrail(tmp_path / "a" / "audit.db") as a, AuditTrail(tmp_path / "b" / "audit.db") as b:
        assert a.hmac_value("same") != b.hmac_value("same")
        assert a.hmac_key_path.stat().st_mode & 0o777 == 0o600
        assert len(a.hmac_key_path.read_bytes()) == 32


async def test_bad_hmac_key_file_refused(tmp_path: Path) -> None:
    key = tmp_path / "audit.db.hmac-key"
    key.write_bytes(os.urandom(32))
    os.chmod(key, 0o644)
    with pytest.raises(AuditKeyError, match="not accessible by group or others"):
        await AuditTrail(tmp_path / "audit.db").open()
    os.chmod(key, 0o600)
    key.write_bytes(os.urandom(16))
    with pytest.raises(AuditKeyError, match="exactly 32 bytes, got 16"):
        await AuditTrail(tmp_path / "audit.db").open()


async def test_write_blocked_by_lock_raises_and_chain_stays_valid(db_path: Path) -> None:
    async with AuditTrail(db_path, busy_timeout_ms=50) as t:
        await t.append(event(1))
        blocker = raw(db_path)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            with pytest.raises(AuditWriteError, match=r"could not write audit record.*locked"):
                await t.append(event(2))
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        rec = await t.append(event(3))
        assert rec.seq == 3, "the failed append left a gap record (seq 2) before the next record"
        report = await t.verify()
        assert report.ok
        (gap,) = report.gaps
        assert (gap.seq, gap.lost) == (2, 1) and sum(gap.event_types.values()) == 1


async def test_write_to_broken_schema_raises(trail: AuditTrail, db_path: Path) -> None:
    await trail.append(event(1))
    with raw(db_path) as db:
        db.execute("DROP TABLE audit_log")
    with pytest.raises(AuditWriteError, match="no such table"):
        await trail.append(event(2))


async def test_write_after_close_raises(db_path: Path) -> None:
    t = AuditTrail(db_path)
    await t.open()
    await t.close()
    with pytest.raises(AuditWriteError, match="not open"):
        await t.append(event(1))


async def test_tail_and_query(trail: AuditTrail) -> None:
    await trail.append(event(1, event_type=E.AUTH_LOGIN))
    await trail.append(event(2, event_type=E.AUTH_DENIED, outcome=AuditOutcome.DENIED))
    await trail.append(event(3, event_type=E.LLM_CALL))
    await trail.append(event(4, event_type=E.AUTH_DENIED, outcome=AuditOutcome.DENIED))
    assert [r.seq for r in await trail.tail(2)] == [3, 4]
    assert [r.seq for r in await trail.tail(10)] == [1, 2, 3, 4]
    assert [r.seq for r in await trail.query(since_seq=1)] == [2, 3, 4]
    denied = await trail.query(event_types=[E.AUTH_DENIED])
    assert [(r.seq, r.outcome) for r in denied] == [(2, AuditOutcome.DENIED), (4, AuditOutcome.DENIED)]
    assert [r.seq for r in await trail.query(since_seq=2, event_types={"auth.denied", "llm.call"})] == [3, 4]
    assert await trail.query(event_types=[]) == []
    assert [r.seq for r in await trail.query(limit=1)] == [1]
    with pytest.raises(ValueError, match="since_seq"):
        await trail.query(since_seq=-1)
    with pytest.raises(ValueError, match="n must be"):
        await trail.tail(-1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_type", "NotDotted"),
        ("event_type", "auth"),
        ("actor", ""),
        ("outcome", "maybe"),
        ("details", {"x": float("nan")}),
        ("extra_field", 1),
    ],
)
def test_bad_events_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as err:
        event(1, **{field: value})
    assert err.value.errors()[0]["loc"][0] == field


async def test_non_finite_details_rejected(trail: AuditTrail) -> None:
    ev = AuditEvent.model_construct(
        event_type="tool.call",
        actor="a",
        action="b",
        outcome=AuditOutcome.SUCCESS,
        details={"x": float("inf")},
        hmac_keys=frozenset(),
    )
    with pytest.raises(ValueError, match="details must be finite JSON"):
        await trail.append(ev)
    assert await trail.tail(5) == []
