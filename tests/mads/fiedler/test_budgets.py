"""Budgets: reserved before a call (so concurrent calls count against each other), settled after,
persisted per period in the ledger's database; the per-turn cap spans every MAD of a turn."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from mads.fiedler.accounting import Ledger
from mads.fiedler.budgets import Amount, BudgetBook, BudgetConfig, BudgetExceeded, BudgetLimit, Subjects

DAY = datetime(2030, 5, 17, 12, tzinfo=UTC)
ALICE = Subjects(principal="user:alice", conversation="c1", mad="grace", turn=None)


def book(*limits: BudgetLimit, turn_llm_calls: int = 24) -> BudgetBook:
    return BudgetBook(BudgetConfig(limits=list(limits), turn_llm_calls=turn_llm_calls))


async def test_reservations_count_before_the_calls_settle() -> None:
    budgets = book(BudgetLimit(name="three", scope="principal", match="user:*", max_calls=3))
    held = [await budgets.reserve(ALICE, Amount(calls=1), DAY) for _ in range(3)]
    with pytest.raises(BudgetExceeded, match=r"'three'.*3 of 3 LLM calls"):
        await budgets.reserve(ALICE, Amount(calls=1), DAY)
    other = Subjects(principal="system", conversation=None, mad="hopper", turn=None)
    await budgets.reserve(other, Amount(calls=1), DAY)  # the limit matches people only
    for reservation in held:
        await budgets.settle(reservation, Amount(calls=1))
    with pytest.raises(BudgetExceeded):
        await budgets.reserve(ALICE, Amount(calls=1), DAY)


async def test_settling_counts_what_was_used_not_what_was_reserved() -> None:
    budgets = book(BudgetLimit(name="tokens", scope="conversation", max_tokens=1000))
    first = await budgets.reserve(ALICE, Amount(calls=1, tokens=900), DAY)
    with pytest.raises(BudgetExceeded, match="900 of 1000 tokens"):
        await budgets.reserve(ALICE, Amount(calls=1, tokens=200), DAY)
    await budgets.settle(first, Amount(calls=1, tokens=100))
    second = await budgets.reserve(ALICE, Amount(calls=1, tokens=800), DAY)
    await budgets.settle(second, Amount(calls=1, tokens=800))
    await budgets.settle(second, Amount(calls=1, tokens=800))  # settling twice changes nothing
    with pytest.raises(BudgetExceeded, match="900 of 1000"):
        await budgets.reserve(ALICE, Amount(calls=1, tokens=101), DAY)


async def test_a_new_period_starts_afresh_and_counters_survive_a_restart(tmp_path: Path) -> None:
    limit = BudgetLimit(name="daily-cost", scope="principal", period="day", max_cost_usd=1.0)
    ledger = Ledger(tmp_path / "usage.db")
    await ledger.open()
    budgets = book(limit)
    await budgets.open(ledger.db)
    held = await budgets.reserve(ALICE, Amount(calls=1, cost_usd=0.5), DAY)
    await budgets.settle(held, Amount(calls=1, cost_usd=0.9))
    await ledger.close()

    reopened = Ledger(tmp_path / "usage.db")
    await reopened.open()
    again = book(limit)
    await again.open(reopened.db)
    with pytest.raises(BudgetExceeded, match=r"\$0\.9000 of \$1\.00"):
        await again.reserve(ALICE, Amount(calls=1, cost_usd=0.2), DAY)
    tomorrow = DAY.replace(day=18)
    await again.reserve(ALICE, Amount(calls=1, cost_usd=0.2), tomorrow)
    await reopened.close()


async def test_one_turn_may_cause_at_most_the_configured_calls_whichever_mad_makes_them() -> None:
    budgets = book(turn_llm_calls=3)
    turn = "0" * 32
    for mad in ("grace", "rogers", "grace"):
        await budgets.reserve(Subjects("user:alice", "c1", mad, turn), Amount(calls=1), DAY)
    with pytest.raises(BudgetExceeded, match="turn_llm_calls"):
        await budgets.reserve(Subjects("user:alice", "c1", "marco", turn), Amount(calls=1), DAY)
    await budgets.reserve(Subjects("user:alice", "c1", "grace", "1" * 32), Amount(calls=1), DAY)


def test_budget_configuration_names_what_is_wrong() -> None:
    with pytest.raises(ValidationError, match="give max_calls, max_tokens and/or max_cost_usd"):
        BudgetLimit(name="empty", scope="total")
    with pytest.raises(ValidationError, match="duplicate budget name"):
        BudgetConfig(limits=[BudgetLimit(name="a", scope="total", max_calls=1)] * 2)
    with pytest.raises(ValidationError, match="scope"):
        BudgetLimit.model_validate({"name": "x", "scope": "galaxy", "max_calls": 1})
