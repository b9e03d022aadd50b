"""McNamara's own state in SQLite: alerts, blocked IPs, quarantined MADs.

Kept apart from the audit trail (``security.db`` next to ``audit.db``) because it
is mutable — alerts get acknowledged, blocks expire — while the trail is
append-only and hash-chained. Every change that matters is *also* written to the
trail by McNamara, so this file is convenience state, not evidence.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from bus.topics import SecurityAlert
from mads.core.sqlite import Migration, migrate, open_db, open_readonly
from mads.mcnamara.schemas import BlockedIp, Quarantined

_MIGRATIONS = (
    Migration(
        1,
        "security",
        """CREATE TABLE IF NOT EXISTS alerts (
        id TEXT PRIMARY KEY,
        rule TEXT NOT NULL,
        severity TEXT NOT NULL,
        subject TEXT NOT NULL,
        message TEXT NOT NULL,
        first_seen TEXT NOT NULL,
        last_seen TEXT NOT NULL,
        count INTEGER NOT NULL,
        acknowledged INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX IF NOT EXISTS alerts_rule_subject ON alerts (rule, subject, first_seen);
    CREATE INDEX IF NOT EXISTS alerts_last_seen ON alerts (last_seen);
    CREATE TABLE IF NOT EXISTS blocked_ips (ip TEXT PRIMARY KEY, until TEXT NOT NULL, reason TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS quarantined (mad TEXT PRIMARY KEY, since TEXT NOT NULL, reason TEXT NOT NULL);
    """,
    ),
)


class SecurityStoreError(Exception):
    """``security.db`` cannot be opened at this code's schema."""


_ALERT_COLUMNS = "id, rule, severity, subject, message, first_seen, last_seen, count, acknowledged"


def _t(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _alert(row: aiosqlite.Row | tuple[object, ...]) -> SecurityAlert:
    return SecurityAlert.model_validate(dict(zip(_ALERT_COLUMNS.split(", "), row, strict=True)))


class SecurityStore:
    """Async access to ``security.db``; ``readonly`` for the operator CLI."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        if self.readonly:
            self._db = await open_readonly(self.path, autocommit=False)
            return
        self._db = await open_db(self.path, autocommit=False)
        await migrate(self._db, _MIGRATIONS, error=SecurityStoreError, label="security")

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError(f"security store {self.path} is not open")
        return self._db

    # ---- alerts --------------------------------------------------------------------

    async def add_alert(self, alert: SecurityAlert) -> None:
        await self.db.execute(
            f"INSERT INTO alerts ({_ALERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                alert.id,
                alert.rule,
                alert.severity,
                alert.subject,
                alert.message,
                _t(alert.first_seen),
                _t(alert.last_seen),
                alert.count,
                int(alert.acknowledged),
            ),
        )
        await self.db.commit()

    async def repeat_alert(self, rule: str, subject: str, now: datetime) -> SecurityAlert | None:
        """Count one more occurrence on the latest alert for ``rule`` and ``subject``."""
        async with self.db.execute(
            "SELECT id FROM alerts WHERE rule = ? AND subject = ? ORDER BY first_seen DESC LIMIT 1", (rule, subject)
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        await self.db.execute("UPDATE alerts SET count = count + 1, last_seen = ? WHERE id = ?", (_t(now), row[0]))
        await self.db.commit()
        return await self.alert(str(row[0]))

    async def alert(self, alert_id: str) -> SecurityAlert | None:
        async with self.db.execute(f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE id = ?", (alert_id,)) as cur:
            row = await cur.fetchone()
        return _alert(row) if row else None

    async def alerts(self, since: datetime | None = None, include_acknowledged: bool = False) -> list[SecurityAlert]:
        """Alerts, newest activity first."""
        sql = f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE 1=1"
        params: list[object] = []
        if since is not None:
            sql += " AND last_seen >= ?"
            params.append(_t(since))
        if not include_acknowledged:
            sql += " AND acknowledged = 0"
        async with self.db.execute(sql + " ORDER BY last_seen DESC LIMIT 1000", params) as cur:
            rows = await cur.fetchall()
        return [_alert(r) for r in rows]

    async def latest_fired(self, since: datetime) -> list[tuple[str, str, datetime]]:
        """(rule, subject, first_seen) of alerts raised since ``since``: cooldowns to restore on start."""
        async with self.db.execute(
            "SELECT rule, subject, MAX(first_seen) FROM alerts WHERE first_seen >= ? GROUP BY rule, subject",
            (_t(since),),
        ) as cur:
            rows = await cur.fetchall()
        return [(str(r[0]), str(r[1]), datetime.fromisoformat(str(r[2]))) for r in rows]

    async def acknowledge(self, alert_id: str) -> SecurityAlert | None:
        await self.db.execute("UPDATE alerts SET acknowledged = 1 WHERE id = ?", (alert_id,))
        await self.db.commit()
        return await self.alert(alert_id)

    # ---- blocks and quarantines ----------------------------------------------------

    async def put_block(self, block: BlockedIp) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO blocked_ips (ip, until, reason) VALUES (?, ?, ?)",
            (block.ip, _t(block.until), block.reason),
        )
        await self.db.commit()

    async def remove_block(self, ip: str) -> None:
        await self.db.execute("DELETE FROM blocked_ips WHERE ip = ?", (ip,))
        await self.db.commit()

    async def blocks(self) -> list[BlockedIp]:
        async with self.db.execute("SELECT ip, until, reason FROM blocked_ips ORDER BY until") as cur:
            rows = await cur.fetchall()
        return [BlockedIp(ip=r[0], until=datetime.fromisoformat(r[1]), reason=r[2]) for r in rows]

    async def put_quarantine(self, entry: Quarantined) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO quarantined (mad, since, reason) VALUES (?, ?, ?)",
            (entry.mad, _t(entry.since), entry.reason),
        )
        await self.db.commit()

    async def remove_quarantine(self, mad: str) -> None:
        await self.db.execute("DELETE FROM quarantined WHERE mad = ?", (mad,))
        await self.db.commit()

    async def quarantines(self) -> list[Quarantined]:
        async with self.db.execute("SELECT mad, since, reason FROM quarantined ORDER BY since") as cur:
            rows = await cur.fetchall()
        return [Quarantined(mad=r[0], since=datetime.fromisoformat(r[1]), reason=r[2]) for r in rows]
