"""``python ecosystem.py audit …`` in a real subprocess against real trail files."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pydantic import JsonValue

from bus.envelope import CommandPart, Envelope, Kind, deadline_in
from bus.memory import InMemoryBus
from mads.core.audit_trail import AuditEvent, AuditTrail
from mads.core.base import MadContext
from mads.mcnamara import McNamara
from tests.support.cli import run_cli

CANARY = "sk-CANARY-4c2d"
DENIAL: dict[str, JsonValue] = {"event_type": "secret.denied", "actor": "hopper", "action": "read", "outcome": "denied"}


async def fill(data_dir: Path, n: int = 5) -> None:
    async with AuditTrail(data_dir / "mcnamara" / "audit.db") as trail:
        for i in range(1, n + 1):
            await trail.append(
                AuditEvent(
                    event_type="secret.read",
                    actor="hopper",
                    action=f"read-{i}",
                    outcome="success",
                    details={"path": "providers/openai", "secret_value": CANARY},
                )
            )


async def test_verify_intact_then_tampered(tmp_path: Path) -> None:
    await fill(tmp_path)
    code, out, err = await run_cli("audit", "verify", "--data-dir", str(tmp_path))
    assert (code, err) == (0, "")
    assert "intact: 5 records" in out
    with sqlite3.connect(tmp_path / "mcnamara" / "audit.db", isolation_level=None) as db:
        db.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3")
    code, out, err = await run_cli("--data-dir", str(tmp_path), "audit", "verify")
    assert code == 1
    assert "BROKEN at record 3: hash mismatch" in err


async def test_verify_with_anchor_detects_rewrite_and_missing_trail_fails(tmp_path: Path) -> None:
    await fill(tmp_path, 2)
    code, _, err = await run_cli("audit", "verify", "--data-dir", str(tmp_path), "--anchor", "2:" + "f" * 64)
    assert code == 1 and "BROKEN at record 2: head mismatch" in err
    code, _, err = await run_cli("audit", "verify", "--data-dir", str(tmp_path / "elsewhere"))
    assert code == 1 and "no audit trail at" in err
    code, _, err = await run_cli("audit", "verify", "--data-dir", str(tmp_path), "--anchor", "nonsense")
    assert code == 2 and "SEQ:HASH" in err


async def test_tail_prints_records_without_secret_plaintext(tmp_path: Path) -> None:
    await fill(tmp_path, 5)
    code, out, err = await run_cli("audit", "tail", "-n", "2", "--data-dir", str(tmp_path))
    assert (code, err) == (0, "")
    lines = out.strip().splitlines()
    assert len(lines) == 2 and lines[0].split()[0] == "4" and lines[1].split()[0] == "5"
    assert "read-5" in lines[1] and "providers/openai" in lines[1] and "hmac-sha256:" in lines[1]
    assert CANARY not in out
    code, out, _ = await run_cli("audit", "tail", "--json", "--data-dir", str(tmp_path))
    assert code == 0 and len(out.strip().splitlines()) == 5 and CANARY not in out
    code, _, err = await run_cli("audit", "tail", "-n", "0", "--data-dir", str(tmp_path))
    assert code == 2 and "-n" in err


async def test_alerts_lists_what_mcnamara_raised(tmp_path: Path) -> None:
    code, out, _ = await run_cli("audit", "alerts", "--data-dir", str(tmp_path))
    assert code == 0 and "no alerts" in out
    bus = InMemoryBus()
    await bus.start()
    mad = McNamara(MadContext(bus=bus, data_dir=tmp_path))
    await mad.start()
    try:
        for _ in range(3):
            reply = await bus.request(
                Envelope(
                    sender="turing",
                    recipient="mcnamara",
                    kind=Kind.REQUEST,
                    deadline=deadline_in(10),
                    content=[CommandPart(tool="record", arguments=DENIAL)],
                )
            )
            assert reply.error is None
        code, out, err = await run_cli("audit", "alerts", "--data-dir", str(tmp_path))
        assert code == 0, err
        assert "secret_denials hopper x1" in out and "high" in out
        code, out, _ = await run_cli("audit", "verify", "--data-dir", str(tmp_path))
        assert code == 0, "the CLI reads the trail while McNamara is running"
    finally:
        await mad.stop()
        await bus.close()
