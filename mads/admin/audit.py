"""``python ecosystem.py audit …``: the operator's view of McNamara's audit trail.

Opens the trail file directly (SQLite WAL lets it sit next to a running ecosystem),
so it works when the ecosystem is down — exactly when an operator may need to check
that nobody rewrote history.

    audit verify            exit 0 if the chain is intact, 1 naming the first bad record, or listing
                            the gaps the trail recorded (records lost while it could not write)
    audit tail [-n N]       the last N records (sensitive values are stored only as HMACs)
    audit alerts [--all]    open security alerts (with --all, acknowledged ones too)

Exit codes: 0 ok, 1 the trail is broken or missing (message on stderr), 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

from mads.admin.cli import AddCommon, CliError, add_command, data_dir_of, exit_code, settings_from
from mads.core import names
from mads.core.audit_trail import AuditError, AuditRecord, AuditTrail, ChainHead, canonical_json
from mads.mcnamara.store import SecurityStore

MAX_TAIL = 100_000


def mcnamara_dir(data_dir: Path) -> Path:
    """Where McNamara keeps its files (``audit.db``, ``security.db``): the MAD's own data directory."""
    return data_dir / names.MCNAMARA


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 1 <= value <= MAX_TAIL:
        raise argparse.ArgumentTypeError(f"expected 1..{MAX_TAIL}, got {value}")
    return value


def _anchor(text: str) -> ChainHead:
    seq, sep, digest = text.partition(":")
    if not sep or not seq.isdigit() or len(digest) != 64:
        raise argparse.ArgumentTypeError(f"expected SEQ:HASH (a 64-hex-digit hash), got {text!r}")
    return ChainHead(seq=int(seq), hash=digest)


def register(subparsers: Any, add_common: AddCommon) -> None:
    """Add ``audit`` and its actions to the ecosystem command line."""
    action = add_command(
        subparsers,
        add_common,
        "audit",
        summary="check and read McNamara's audit trail (verify/tail/alerts)",
        description="Read McNamara's tamper-evident audit trail directly from its file.",
        handler=run,
    )
    p = action("verify", "walk the hash chain; exit 1 naming the first bad record if it was tampered with")
    p.add_argument("--anchor", type=_anchor, metavar="SEQ:HASH", help="a head exported earlier, to detect rewrites")
    p = action("tail", "print the last records")
    p.add_argument("-n", type=_count, default=20, help="how many records (default 20)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p = action("alerts", "print security alerts")
    p.add_argument("--all", action="store_true", help="include acknowledged alerts")
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def run(args: argparse.Namespace) -> int:
    """Entry point for every ``audit`` action: never a traceback for an expected error."""
    return exit_code(lambda: _dispatch(args))


def _dispatch(args: argparse.Namespace) -> int:
    home = mcnamara_dir(data_dir_of(settings_from(args)))
    if args.audit_action == "alerts":
        security_db = home / "security.db"
        if not security_db.exists():
            print("no alerts (McNamara has not run here yet)")
            return 0
        return asyncio.run(_alerts(security_db, include_acknowledged=args.all, as_json=args.json))
    db = home / "audit.db"
    if not db.exists():
        raise CliError(f"no audit trail at {db}")
    return asyncio.run(_read_trail(db, args))


async def _read_trail(db: Path, args: argparse.Namespace) -> int:
    try:
        async with AuditTrail(db) as trail:
            if args.audit_action == "verify":
                return await _verify(trail, args.anchor)
            return _print_records(await trail.tail(args.n), as_json=args.json)
    except AuditError as exc:
        raise CliError(f"audit trail {db}: {exc}") from None


async def _verify(trail: AuditTrail, anchor: ChainHead | None) -> int:
    report = await trail.verify(expected_head=anchor)
    if report.ok and report.gaps:
        lost = sum(g.lost for g in report.gaps)
        print(
            f"audit trail chain intact ({report.records_checked} records) but it has {len(report.gaps)} recorded "
            f"gaps, {lost} records lost:",
            file=sys.stderr,
        )
        for gap in report.gaps:
            types = ", ".join(f"{k} x{v}" for k, v in gap.event_types.items())
            print(
                f"  gap at record {gap.seq}: {gap.lost} lost from {gap.first_at} to {gap.last_at} ({types})",
                file=sys.stderr,
            )
        return 1
    if report.ok:
        print(f"audit trail intact: {report.records_checked} records, head {report.head.seq} {report.head.hash}")
        return 0
    print(
        f"audit trail BROKEN at record {report.first_bad_seq}: {report.reason} ({report.detail}); "
        f"{report.records_checked} records before it verified",
        file=sys.stderr,
    )
    return 1


def _print_records(records: list[AuditRecord], *, as_json: bool) -> int:
    for r in records:
        if as_json:
            print(r.model_dump_json())
        else:
            when = r.time.isoformat(timespec="seconds")
            details = canonical_json(r.details)
            print(f"{r.seq:>7} {when} {r.event_type:<20} {r.actor} {r.action} {r.outcome.value} {details}")
    return 0


async def _alerts(path: Path, *, include_acknowledged: bool, as_json: bool) -> int:
    store = SecurityStore(path, readonly=True)
    try:
        await store.open()
        alerts = await store.alerts(include_acknowledged=include_acknowledged)
    except (sqlite3.Error, OSError, ValueError) as exc:
        raise CliError(f"cannot read alerts from {path}: {exc}") from None
    finally:
        await store.close()
    for a in alerts:
        if as_json:
            print(json.dumps(a.model_dump(mode="json")))
        else:
            ack = " (acknowledged)" if a.acknowledged else ""
            print(
                f"{a.id} {a.severity:<8} {a.rule} {a.subject} x{a.count} "
                f"last {a.last_seen.isoformat(timespec='seconds')}: {a.message}{ack}"
            )
    if not alerts:
        print("no open alerts" if not include_acknowledged else "no alerts")
    return 0
