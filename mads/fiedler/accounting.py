"""Token and cost accounting per principal, per MAD, per conversation and per model, in memory and in SQLite.

Rows are aggregates keyed by (principal, caller, conversation, model), so the database grows
with conversations, not with calls. The principal is whom the call served (``user:alice``),
the caller the MAD that asked (stamped by the runtime) and the conversation the work's own —
all read from the request envelope, none from arguments. Totals per principal, per MAD and
per model live in memory (few keys); recent conversations are kept in a bounded LRU and
older ones are read back from disk.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import aiosqlite

from mads.core.sqlite import Migration, migrate, open_db
from mads.fiedler.schemas import UsageReport, UsageTotals

MIGRATIONS = (
    Migration(
        1,
        "usage",
        """
CREATE TABLE IF NOT EXISTS usage (
    caller TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    model TEXT NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0,
    failed_calls INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (caller, conversation_id, model)
);
""",
    ),
)


class LedgerError(Exception):
    """The usage database cannot be opened at this code's schema."""


USAGE_BY_PRINCIPAL = Migration(
    2,
    "usage_by_principal",
    """
CREATE TABLE usage_v2 (
    principal TEXT NOT NULL,
    caller TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    model TEXT NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0,
    failed_calls INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (principal, caller, conversation_id, model)
);
INSERT INTO usage_v2 (principal, caller, conversation_id, model, calls, failed_calls, input_tokens, output_tokens,
    cost_usd)
    SELECT 'system', caller, conversation_id, model, calls, failed_calls, input_tokens, output_tokens, cost_usd
    FROM usage;
DROP TABLE usage;
ALTER TABLE usage_v2 RENAME TO usage;
CREATE TABLE budget_usage (
    budget TEXT NOT NULL,
    subject TEXT NOT NULL,
    period_start TEXT NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0,
    tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, subject, period_start)
);
""",
)

UPSERT = """
INSERT INTO usage (principal, caller, conversation_id, model, calls, failed_calls, input_tokens, output_tokens,
    cost_usd)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (principal, caller, conversation_id, model) DO UPDATE SET
    calls = calls + excluded.calls,
    failed_calls = failed_calls + excluded.failed_calls,
    input_tokens = input_tokens + excluded.input_tokens,
    output_tokens = output_tokens + excluded.output_tokens,
    cost_usd = cost_usd + excluded.cost_usd
"""

SUMS = "SUM(calls), SUM(failed_calls), SUM(input_tokens), SUM(output_tokens), SUM(cost_usd)"
NO_CONVERSATION = ""


def _totals(row: tuple[int | float | None, ...]) -> UsageTotals:
    calls, failed, tokens_in, tokens_out, cost = (v or 0 for v in row)
    return UsageTotals(
        calls=int(calls),
        failed_calls=int(failed),
        input_tokens=int(tokens_in),
        output_tokens=int(tokens_out),
        cost_usd=float(cost),
    )


class Ledger:
    """Records every chat call's tokens and cost; survives restarts."""

    def __init__(self, path: Path, conversation_cache: int = 10_000) -> None:
        self.path = path
        self.conversation_cache = conversation_cache
        self._db: aiosqlite.Connection | None = None
        self.total = UsageTotals()
        self.per_principal: dict[str, UsageTotals] = {}
        self.per_mad: dict[str, UsageTotals] = {}
        self.per_model: dict[str, UsageTotals] = {}
        self.per_conversation: OrderedDict[str, UsageTotals] = OrderedDict()

    async def open(self) -> None:
        self._db = await open_db(self.path, autocommit=False)
        await migrate(self._db, (*MIGRATIONS, USAGE_BY_PRINCIPAL), error=LedgerError, label="usage")
        self.total = _totals(await self._one(f"SELECT {SUMS} FROM usage"))
        self.per_principal = await self._grouped("principal")
        self.per_mad = await self._grouped("caller")
        self.per_model = await self._grouped("model")

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        """The open database (the budget book keeps its counters in the same file)."""
        return self._require()

    async def record(
        self,
        *,
        principal: str,
        caller: str,
        conversation_id: str | None,
        model: str,
        input_tokens: int,
        output_tokens: int,
        cost_usd: float,
        ok: bool,
    ) -> None:
        entry = UsageTotals(
            calls=1,
            failed_calls=0 if ok else 1,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd,
        )
        self.total = self.total.add(entry)
        self.per_principal[principal] = self.per_principal.get(principal, UsageTotals()).add(entry)
        self.per_mad[caller] = self.per_mad.get(caller, UsageTotals()).add(entry)
        self.per_model[model] = self.per_model.get(model, UsageTotals()).add(entry)
        if conversation_id is not None:
            known = self.per_conversation.pop(conversation_id, None)
            if known is None:
                known = await self._conversation_from_disk(conversation_id)
            self.per_conversation[conversation_id] = known.add(entry)
            while len(self.per_conversation) > self.conversation_cache:
                self.per_conversation.popitem(last=False)
        db = self._require()
        await db.execute(
            UPSERT,
            (
                principal,
                caller,
                conversation_id or NO_CONVERSATION,
                model,
                1,
                entry.failed_calls,
                input_tokens,
                output_tokens,
                cost_usd,
            ),
        )
        await db.commit()

    async def report(
        self, caller: str | None = None, conversation_id: str | None = None, principal: str | None = None
    ) -> UsageReport:
        """Everything from memory, or (with a filter) the matching rows from disk."""
        if caller is None and conversation_id is None and principal is None:
            return UsageReport(
                total=self.total,
                per_principal=dict(self.per_principal),
                per_mad=dict(self.per_mad),
                per_conversation=dict(self.per_conversation),
                per_model=dict(self.per_model),
            )
        where, params = [], []
        if principal is not None:
            where.append("principal = ?")
            params.append(principal)
        if caller is not None:
            where.append("caller = ?")
            params.append(caller)
        if conversation_id is not None:
            where.append("conversation_id = ?")
            params.append(conversation_id)
        clause = " WHERE " + " AND ".join(where)
        total = _totals(await self._one(f"SELECT {SUMS} FROM usage{clause}", params))
        per_conv = await self._grouped("conversation_id", clause, params)
        per_conv.pop(NO_CONVERSATION, None)
        return UsageReport(
            total=total,
            per_principal=await self._grouped("principal", clause, params),
            per_mad=await self._grouped("caller", clause, params),
            per_conversation=per_conv,
            per_model=await self._grouped("model", clause, params),
        )

    async def _conversation_from_disk(self, conversation_id: str) -> UsageTotals:
        return _totals(await self._one(f"SELECT {SUMS} FROM usage WHERE conversation_id = ?", [conversation_id]))

    async def _one(self, sql: str, params: list[str] | None = None) -> tuple[int | float | None, ...]:
        async with self._require().execute(sql, params or []) as cursor:
            row = await cursor.fetchone()
        return tuple(row) if row else (0, 0, 0, 0, 0.0)

    async def _grouped(self, column: str, clause: str = "", params: list[str] | None = None) -> dict[str, UsageTotals]:
        sql = f"SELECT {column}, {SUMS} FROM usage{clause} GROUP BY {column}"
        async with self._require().execute(sql, params or []) as cursor:
            rows = await cursor.fetchall()
        return {row[0]: _totals(tuple(row[1:])) for row in rows}

    def _require(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("ledger is not open")
        return self._db
