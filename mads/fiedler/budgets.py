"""Budgets: limits on LLM calls, tokens and cost, checked before a call and settled after it.

Fiedler is the only caller of models, so budgets have one home here. Before each call it
*reserves* an estimate against every budget that applies (the principal's, the
conversation's, the calling MAD's, the total) and refuses the call with a typed
``budget_exceeded`` naming the budget if one would be overrun; after the call it *settles*
with what was really used. Reservations make concurrent calls count against each other
before any of them has finished, so a burst cannot overshoot a limit.

Two kinds of limit, both in ``[fiedler.budgets]``:

- ``turn_llm_calls`` — at most this many LLM calls for one person's message, whatever the
  handoffs (the turn id travels in every envelope the message causes);
- ``limits`` — named limits per scope (``principal``, ``conversation``, ``mad`` or ``total``)
  and period (``hour``, ``day``, ``month`` or ``total``), on calls, tokens and/or cost, for the
  subjects whose key matches ``match`` (a glob: ``user:*``, ``grace``, ``*``). Counters are
  kept per period in the ledger's database and survive restarts.
"""

from __future__ import annotations

import fnmatch
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import aiosqlite
from pydantic import BaseModel, ConfigDict, Field, model_validator

Scope = Literal["principal", "conversation", "mad", "total"]
Period = Literal["hour", "day", "month", "total"]
TOTAL_SUBJECT = "*"
_TURNS_KEPT = 10_000


class BudgetLimit(BaseModel):
    """One named limit; at least one of ``max_calls``, ``max_tokens``, ``max_cost_usd``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z][a-z0-9_\-]{0,63}$")
    scope: Scope
    match: str = Field(default="*", min_length=1, max_length=200, description="glob on the scope's key")
    period: Period = "day"
    max_calls: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    max_cost_usd: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _some_limit(self) -> BudgetLimit:
        if self.max_calls is None and self.max_tokens is None and self.max_cost_usd is None:
            raise ValueError(f"budget {self.name!r}: give max_calls, max_tokens and/or max_cost_usd")
        return self


def _default_limits() -> list[BudgetLimit]:
    return [BudgetLimit(name="person-daily-cost", scope="principal", match="*:*", period="day", max_cost_usd=10.0)]


class BudgetConfig(BaseModel):
    """``[fiedler.budgets]``."""

    model_config = ConfigDict(extra="forbid")

    turn_llm_calls: int = Field(
        default=24, ge=1, le=1000, description="LLM calls one person's message may cause in total, handoffs included"
    )
    limits: list[BudgetLimit] = Field(default_factory=_default_limits)
    default_max_tokens: int = Field(
        default=1024, ge=1, description="output tokens reserved when neither the request nor the model says"
    )

    @model_validator(mode="after")
    def _unique_names(self) -> BudgetConfig:
        names = [limit.name for limit in self.limits]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"limits: duplicate budget name(s) {duplicates}")
        return self


@dataclass(frozen=True)
class Subjects:
    """What one call is charged to."""

    principal: str
    conversation: str | None
    mad: str
    turn: str | None

    def key(self, scope: Scope) -> str | None:
        if scope == "principal":
            return self.principal
        if scope == "conversation":
            return self.conversation
        if scope == "mad":
            return self.mad
        return TOTAL_SUBJECT


@dataclass
class Amount:
    calls: int = 0
    tokens: int = 0
    cost_usd: float = 0.0

    def plus(self, other: Amount) -> Amount:
        return Amount(self.calls + other.calls, self.tokens + other.tokens, self.cost_usd + other.cost_usd)

    def minus(self, other: Amount) -> Amount:
        return Amount(self.calls - other.calls, self.tokens - other.tokens, self.cost_usd - other.cost_usd)


class BudgetExceeded(Exception):
    """A call would overrun a budget; the message names it, its limit and what is used."""

    def __init__(self, budget: str, message: str) -> None:
        super().__init__(message)
        self.budget = budget


@dataclass
class Reservation:
    """What one call holds until it settles."""

    entries: list[tuple[BudgetLimit, str, str]]  # (limit, subject, period_start)
    amount: Amount
    turn: str | None
    settled: bool = False


@dataclass
class _Counter:
    used: Amount = field(default_factory=Amount)
    reserved: Amount = field(default_factory=Amount)


def period_start(period: Period, now: datetime) -> str:
    now = now.astimezone(UTC)
    if period == "hour":
        return now.strftime("%Y-%m-%dT%H:00Z")
    if period == "day":
        return now.strftime("%Y-%m-%d")
    if period == "month":
        return now.strftime("%Y-%m")
    return "all"


class BudgetBook:
    """Reserve before a call, settle after; counters per (budget, subject, period) persisted in SQLite."""

    def __init__(self, config: BudgetConfig) -> None:
        self.config = config
        self._db: aiosqlite.Connection | None = None
        self._counters: dict[tuple[str, str, str], _Counter] = {}
        self._turns: OrderedDict[str, int] = OrderedDict()

    async def open(self, db: aiosqlite.Connection) -> None:
        """Use the ledger's open database (its ``budget_usage`` table)."""
        self._db = db

    def _applicable(self, subjects: Subjects) -> list[tuple[BudgetLimit, str]]:
        found = []
        for limit in self.config.limits:
            key = subjects.key(limit.scope)
            if key is not None and fnmatch.fnmatchcase(key, limit.match):
                found.append((limit, key))
        return found

    async def _counter(self, limit: BudgetLimit, subject: str, start: str) -> _Counter:
        key = (limit.name, subject, start)
        counter = self._counters.get(key)
        if counter is None:
            counter = _Counter(used=await self._load(key))
            self._counters[key] = counter
        return counter

    async def _load(self, key: tuple[str, str, str]) -> Amount:
        if self._db is None:
            return Amount()
        sql = "SELECT calls, tokens, cost_usd FROM budget_usage WHERE budget = ? AND subject = ? AND period_start = ?"
        async with self._db.execute(sql, key) as cursor:
            row = await cursor.fetchone()
        return Amount(int(row[0]), int(row[1]), float(row[2])) if row else Amount()

    async def reserve(self, subjects: Subjects, estimate: Amount, now: datetime | None = None) -> Reservation:
        """Hold ``estimate`` against every applicable budget, or raise :class:`BudgetExceeded` (holding nothing)."""
        now = now or datetime.now(UTC)
        if subjects.turn is not None:
            calls = self._turns.get(subjects.turn, 0)
            if calls >= self.config.turn_llm_calls:
                raise BudgetExceeded(
                    "turn_llm_calls",
                    f"budget 'turn_llm_calls' exceeded: one message may cause at most "
                    f"{self.config.turn_llm_calls} LLM calls (handoffs included), and this one has used them all",
                )
        entries: list[tuple[BudgetLimit, str, str]] = []
        for limit, subject in self._applicable(subjects):
            start = period_start(limit.period, now)
            counter = await self._counter(limit, subject, start)
            _check(limit, subject, counter.used.plus(counter.reserved), estimate)
            entries.append((limit, subject, start))
        for limit, subject, start in entries:
            counter = self._counters[(limit.name, subject, start)]
            counter.reserved = counter.reserved.plus(estimate)
        if subjects.turn is not None:
            self._turns[subjects.turn] = self._turns.pop(subjects.turn, 0) + 1
            while len(self._turns) > _TURNS_KEPT:
                self._turns.popitem(last=False)
        return Reservation(entries=entries, amount=estimate, turn=subjects.turn)

    async def settle(self, reservation: Reservation, actual: Amount) -> None:
        """Release the reservation and count what the call really used (persisted)."""
        if reservation.settled:
            return
        reservation.settled = True
        for limit, subject, start in reservation.entries:
            counter = self._counters[(limit.name, subject, start)]
            counter.reserved = counter.reserved.minus(reservation.amount)
            counter.used = counter.used.plus(actual)
            if self._db is not None:
                await self._db.execute(
                    "INSERT INTO budget_usage (budget, subject, period_start, calls, tokens, cost_usd)"
                    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (budget, subject, period_start) DO UPDATE SET"
                    " calls = calls + excluded.calls, tokens = tokens + excluded.tokens,"
                    " cost_usd = cost_usd + excluded.cost_usd",
                    (limit.name, subject, start, actual.calls, actual.tokens, actual.cost_usd),
                )
        if self._db is not None and reservation.entries:
            await self._db.commit()

    def turn_calls(self, turn: str) -> int:
        return self._turns.get(turn, 0)


def _check(limit: BudgetLimit, subject: str, held: Amount, estimate: Amount) -> None:
    where = f"budget {limit.name!r} ({limit.scope} {subject}, per {limit.period})"
    if limit.max_calls is not None and held.calls + estimate.calls > limit.max_calls:
        raise BudgetExceeded(limit.name, f"{where} exceeded: {held.calls} of {limit.max_calls} LLM calls used")
    if limit.max_tokens is not None and held.tokens + estimate.tokens > limit.max_tokens:
        raise BudgetExceeded(
            limit.name,
            f"{where} exceeded: {held.tokens} of {limit.max_tokens} tokens used, this call may need {estimate.tokens}",
        )
    if limit.max_cost_usd is not None and held.cost_usd + estimate.cost_usd > limit.max_cost_usd:
        raise BudgetExceeded(
            limit.name,
            f"{where} exceeded: ${held.cost_usd:.4f} of ${limit.max_cost_usd:.2f} used, "
            f"this call may cost ${estimate.cost_usd:.4f}",
        )
