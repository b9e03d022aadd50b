"""Tokens and cost per turn (one person's message and all the LLM calls it caused), kept in memory.

A client that asked a question wants to know what *that* question used (the OpenAI
``usage`` field), whatever handoffs it took. Every call Fiedler makes carries the turn
id the gateway stamped on the person's message, so the totals are summed here as the
calls are recorded, before the ``chat`` tool returns: once the turn's reply is back, its
total is complete. The book is bounded (the oldest turns are forgotten) and not
persisted; the ledger keeps the durable per-principal and per-conversation totals.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from mads.fiedler.schemas import UsageTotals


@dataclass(frozen=True)
class TurnTotals:
    principal: str
    totals: UsageTotals


class TurnUsage:
    """The usage of the most recent ``capacity`` turns, by turn id."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._turns: OrderedDict[str, TurnTotals] = OrderedDict()

    def add(self, turn: str | None, principal: str, entry: UsageTotals) -> None:
        if turn is None:
            return
        known = self._turns.pop(turn, None)
        totals = entry if known is None else known.totals.add(entry)
        self._turns[turn] = TurnTotals(principal=principal, totals=totals)
        while len(self._turns) > self.capacity:
            self._turns.popitem(last=False)

    def get(self, turn: str) -> TurnTotals | None:
        return self._turns.get(turn)
