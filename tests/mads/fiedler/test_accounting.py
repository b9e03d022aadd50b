"""The usage ledger: per MAD, per conversation, per model; persisted in SQLite across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mads.fiedler.accounting import Ledger
from tests.mads.fiedler.harness import KEY_ENV, SECRET_KEY, config, ecosystem
from tests.support.llm_server import Reply, ScriptedLLM, ServerError


async def test_ledger_aggregates_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"
    ledger = Ledger(path, conversation_cache=2)
    await ledger.open()
    await ledger.record(
        principal="user:alice",
        caller="a",
        conversation_id="c1",
        model="m",
        input_tokens=10,
        output_tokens=5,
        cost_usd=0.5,
        ok=True,
    )
    await ledger.record(
        principal="user:bob",
        caller="b",
        conversation_id="c2",
        model="m",
        input_tokens=1,
        output_tokens=1,
        cost_usd=0.1,
        ok=True,
    )
    await ledger.record(
        principal="user:alice",
        caller="a",
        conversation_id="c3",
        model="n",
        input_tokens=2,
        output_tokens=0,
        cost_usd=0.0,
        ok=False,
    )
    await ledger.record(
        principal="user:bob",
        caller="a",
        conversation_id=None,
        model="n",
        input_tokens=3,
        output_tokens=3,
        cost_usd=0.0,
        ok=True,
    )
    report = await ledger.report()
    assert report.total.calls == 4 and report.total.failed_calls == 1
    assert report.total.input_tokens == 16 and report.total.cost_usd == pytest.approx(0.6)
    assert report.per_mad["a"].calls == 3 and report.per_mad["b"].input_tokens == 1
    assert list(report.per_conversation) == ["c2", "c3"]
    assert report.per_model["n"].output_tokens == 3
    assert report.per_principal["user:alice"].calls == 2 and report.per_principal["user:bob"].calls == 2
    await ledger.close()

    reopened = Ledger(path, conversation_cache=2)
    await reopened.open()
    again = await reopened.report()
    assert again.total == report.total
    assert again.per_mad == report.per_mad
    assert again.per_model == report.per_model
    old = await reopened.report(conversation_id="c1")
    assert old.total.input_tokens == 10 and list(old.per_mad) == ["a"]
    await reopened.record(
        principal="user:alice",
        caller="a",
        conversation_id="c1",
        model="m",
        input_tokens=1,
        output_tokens=1,
        cost_usd=0.0,
        ok=True,
    )
    assert (await reopened.report()).per_conversation["c1"].input_tokens == 11
    alice = await reopened.report(principal="user:alice")
    assert set(alice.per_principal) == {"user:alice"} and alice.total.calls == 3
    only_a = await reopened.report(caller="a")
    assert set(only_a.per_conversation) == {"c1", "c3"}
    assert only_a.total.calls == 4
    await reopened.close()


async def test_usage_tool_survives_a_restart(tmp_path: Path, llm_server: ScriptedLLM, monkeypatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET_KEY)
    llm_server.script(Reply(text="one two"), ServerError(status=500))
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        await eco.chat(as_sender="hopper", in_conversation="c-r")
        await eco.chat(as_sender="grace", in_conversation="c-r")
        before = (await eco.command("usage")).data()[0]
    assert before["total"]["calls"] == 2 and before["total"]["failed_calls"] == 1
    assert before["per_mad"]["hopper"]["output_tokens"] == 2
    assert before["per_mad"]["grace"]["failed_calls"] == 1
    assert (tmp_path / "fiedler" / "usage.db").exists()
    async with ecosystem(tmp_path, config(llm_server)) as eco:
        after = (await eco.command("usage")).data()[0]
        by_conversation = (await eco.command("usage", conversation_id="c-r")).data()[0]
    assert after["total"] == before["total"]
    assert after["per_mad"] == before["per_mad"]
    assert by_conversation["per_conversation"] == {"c-r": before["total"]}
    raw = (tmp_path / "fiedler" / "usage.db").read_bytes()
    assert SECRET_KEY.encode() not in raw
