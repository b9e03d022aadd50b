"""The engine: validated outputs with bounded correction, code guards, hooks, budgets, end hooks, the log."""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest

from bus.envelope import Principal
from mads.core.workflow import Engine, GuardVerdict, RoleReply, RoleRequest, RunLog, StepContext
from tests.mads.core.workflow.flows import Script, pipeline

ALICE = Principal(kind="user", name="alice")


class Bindings:
    """Guards and hooks that record what they saw."""

    def __init__(self, verdicts: list[bool] | None = None) -> None:
        self.verdicts = list(verdicts or [True])
        self.effects: list[str] = []
        self.endings: list[str | None] = []

    async def checked(self, ctx: StepContext) -> GuardVerdict:
        ok = self.verdicts.pop(0)
        self.effects.append(f"guard:{ctx.output.get('code')}:{ok}")
        return GuardVerdict(ok=ok, reason="" if ok else "tests are red")

    async def record(self, ctx: StepContext) -> str:
        self.effects.append(f"record:{ctx.state}:{ctx.step}")
        return "recorded"

    async def release(self, ctx: StepContext) -> None:
        self.endings.append(ctx.ending)

    def engine(self, log: RunLog, roles: Any) -> Engine:
        return Engine(
            log, roles, guards={"checked": self.checked}, hooks={"record": self.record, "release": self.release}
        )


async def test_a_run_goes_through_its_states_with_hooks_and_guard_and_ends_done(run_log: RunLog) -> None:
    bindings = Bindings()
    roles = Script({"outcome": "planned", "steps": 1}, {"outcome": "ready", "code": "x = 1"})
    engine = bindings.engine(run_log, roles)
    run_id = await engine.start(pipeline(), principal=ALICE, subject="story-1", data={"goal": "x"})
    outcome = await engine.run(run_id)
    assert (outcome.status, outcome.state, outcome.succeeded) == ("finished", "done", True)
    assert [r.role for r in roles.requests] == ["planner", "engineer"]
    assert roles.requests[1].outputs == {"plan": {"outcome": "planned", "steps": 1}}
    assert roles.requests[1].data == {"goal": "x"}
    assert bindings.effects == ["record:plan:0", "record:code:1", "guard:x = 1:True", "record:code:1"]
    assert bindings.endings == ["finished"]
    kinds = [e.kind for e in await run_log.entries(run_id)]
    assert kinds.count("transition") == 2 and kinds[-1] == "run_finished"


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("not json at all", "the output is not JSON"),
        ({"outcome": "ready"}, "'code' is a required property"),
        ({"outcome": "ship_it", "code": "x"}, "outcome: 'ship_it' is not one of ['ready', 'give_up']"),
        ({"outcome": "ready", "code": ""}, "code: '' should be non-empty"),
    ],
)
async def test_an_invalid_output_is_recorded_and_corrected_with_its_reason(
    run_log: RunLog, bad: Any, reason: str
) -> None:
    bindings = Bindings()
    roles = Script({"outcome": "planned"}, bad, {"outcome": "ready", "code": "ok"})
    engine = bindings.engine(run_log, roles)
    run_id = await engine.start(pipeline(), principal=ALICE, subject="s")
    outcome = await engine.run(run_id)
    assert outcome.state == "done"
    assert roles.requests[2].correction is not None and reason in roles.requests[2].correction
    failures = [e for e in await run_log.entries(run_id) if e.kind == "validation_failed"]
    assert len(failures) == 1 and reason in failures[0].payload["reason"]


async def test_outputs_that_stay_invalid_fail_the_step_after_the_bounded_corrections(run_log: RunLog) -> None:
    bindings = Bindings()
    roles = Script({"outcome": "planned"}, *(["{broken"] * 3), {"outcome": "ready", "code": "never asked"})
    engine = bindings.engine(run_log, roles)
    run_id = await engine.start(pipeline(), principal=ALICE, subject="s")
    outcome = await engine.run(run_id)
    assert (outcome.status, outcome.code, outcome.state) == ("failed", "output_invalid", "code")
    assert len(roles.requests) == 4  # plan + 1 try + 2 corrections (max_corrections=2)
    assert bindings.endings == ["failed"]
    assert "guard" not in " ".join(bindings.effects)


async def test_an_outcome_the_definition_does_not_allow_never_moves_the_run(run_log: RunLog) -> None:
    """An LLM saying "done" from plan is refused: plan only leads to code."""
    bindings = Bindings()
    roles = Script(*([{"outcome": "ready", "code": "x"}] * 3))
    engine = bindings.engine(run_log, roles)
    run_id = await engine.start(pipeline(), principal=ALICE, subject="s")
    outcome = await engine.run(run_id)
    assert (outcome.status, outcome.code, outcome.state) == ("failed", "output_invalid", "plan")
    assert not [e for e in await run_log.entries(run_id) if e.kind == "transition"]


async def test_a_refusing_guard_sends_the_work_back_and_a_later_green_guard_lets_it_through(run_log: RunLog) -> None:
    bindings = Bindings(verdicts=[False, True])
    roles = Script({"outcome": "planned"}, {"outcome": "ready", "code": "bad"}, {"outcome": "ready", "code": "good"})
    engine = bindings.engine(run_log, roles)
    run_id = await engine.start(pipeline(), principal=ALICE, subject="s")
    outcome = await engine.run(run_id)
    assert outcome.state == "done"
    entries = await run_log.entries(run_id)
    refused = [e for e in entries if e.kind == "guard_refused"]
    assert [e.payload["reason"] for e in refused] == ["tests are red"]
    moves = [(e.payload["source"], e.payload["target"]) for e in entries if e.kind == "transition"]
    assert moves == [("plan", "code"), ("code", "code"), ("code", "done")]


async def test_a_refusing_guard_without_a_way_back_fails_the_run_as_guard_refused(run_log: RunLog) -> None:
    bindings = Bindings(verdicts=[False])
    definition = pipeline()
    definition.transitions[1].refused_to = None
    roles = Script({"outcome": "planned"}, {"outcome": "ready", "code": "bad"})
    engine = bindings.engine(run_log, roles)
    outcome = await engine.run(await engine.start(definition, principal=ALICE, subject="s"))
    assert (outcome.status, outcome.code) == ("failed", "guard_refused")
    assert bindings.endings == ["failed"]


async def test_a_state_budget_of_llm_calls_stops_a_loop(run_log: RunLog) -> None:
    bindings = Bindings(verdicts=[False] * 10)
    definition = pipeline()
    definition.states["code"].budget.llm_calls = 3
    roles = Script({"outcome": "planned"}, *([{"outcome": "ready", "code": "bad"}] * 10))
    engine = bindings.engine(run_log, roles)
    outcome = await engine.run(await engine.start(definition, principal=ALICE, subject="s"))
    assert (outcome.status, outcome.code) == ("failed", "budget_exceeded")
    assert len(roles.requests) == 4
    assert "code: 3 LLM calls, at most 3" in outcome.message


async def test_the_run_wall_time_budget_ends_a_hanging_role_as_a_timeout(run_log: RunLog) -> None:
    never = asyncio.Event()

    async def hanging(request: RoleRequest) -> RoleReply:
        await never.wait()
        raise AssertionError("unreachable")

    bindings = Bindings()
    definition = pipeline(budget={"wall_s": 0.2})
    engine = bindings.engine(run_log, hanging)
    outcome = await engine.run(await engine.start(definition, principal=ALICE, subject="s"))
    assert (outcome.status, outcome.code) == ("failed", "timeout")
    assert bindings.endings == ["failed"]
    calls = [e for e in await run_log.entries(outcome.run_id) if e.kind == "llm_call"]
    assert calls and "no answer within" in calls[0].payload["error"]


async def test_cancelling_a_run_runs_its_end_hooks_and_records_it(run_log: RunLog) -> None:
    entered = asyncio.Event()

    async def slow(request: RoleRequest) -> RoleReply:
        entered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    bindings = Bindings()
    engine = bindings.engine(run_log, slow)
    run_id = await engine.start(pipeline(), principal=ALICE, subject="s")
    engine.drive(run_id)
    await entered.wait()
    await engine.cancel(run_id)
    assert bindings.endings == ["cancelled"]
    assert (await run_log.entries(run_id))[-1].kind == "run_cancelled"
    assert await run_log.unfinished() == []


async def test_unknown_guard_or_hook_names_are_refused_at_start(run_log: RunLog) -> None:
    engine = Engine(run_log, Script(), guards={}, hooks={"record": Bindings().record})
    with pytest.raises(ValueError, match="unknown guard 'checked'"):
        await engine.start(pipeline(), principal=ALICE, subject="s")


async def test_the_log_is_append_only(run_log: RunLog) -> None:
    bindings = Bindings()
    engine = bindings.engine(run_log, Script({"outcome": "planned"}, {"outcome": "give_up", "code": "x"}))
    run_id = await engine.start(pipeline(), principal=ALICE, subject="s")
    await engine.run(run_id)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        await run_log.db.execute("UPDATE entries SET kind = 'transition' WHERE run_id = ?", (run_id,))
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        await run_log.db.execute("DELETE FROM entries WHERE run_id = ?", (run_id,))
    record = await run_log.run(run_id)
    assert record is not None and record.principal == ALICE


async def test_a_restarted_engine_reuses_recorded_results_instead_of_redoing_them(run_log: RunLog) -> None:
    """In-process resume: the first engine stops (shutdown) mid-run; the second finishes without
    repeating the recorded LLM calls and hooks."""
    gate = asyncio.Event()
    reached = asyncio.Event()
    bindings = Bindings()

    async def first_roles(request: RoleRequest) -> RoleReply:
        if request.state == "plan":
            return RoleReply(text='{"outcome": "planned"}')
        reached.set()
        await gate.wait()
        raise AssertionError("unreachable")

    first = bindings.engine(run_log, first_roles)
    run_id = await first.start(pipeline(), principal=ALICE, subject="s")
    first.drive(run_id)
    await reached.wait()
    await first.close()
    assert await run_log.unfinished() == [run_id]
    assert bindings.endings == []

    roles = Script({"outcome": "ready", "code": "x"})
    second = bindings.engine(run_log, roles)
    assert await second.resume_all() == [run_id]
    outcome = await second.drive(run_id)
    assert outcome.state == "done"
    assert [r.state for r in roles.requests] == ["code"]
    assert bindings.effects.count("record:plan:0") == 1


async def test_a_failing_hook_fails_the_run_typed_and_the_end_hooks_still_run(run_log: RunLog) -> None:
    bindings = Bindings()

    async def broken(ctx: StepContext) -> None:
        raise OSError("disk full")

    engine = Engine(
        run_log,
        Script({"outcome": "planned"}),
        guards={"checked": bindings.checked},
        hooks={"record": broken, "release": bindings.release},
    )
    outcome = await engine.run(await engine.start(pipeline(), principal=ALICE, subject="s"))
    assert (outcome.status, outcome.code) == ("failed", "hook_failed")
    assert "OSError: disk full" in outcome.message
    assert bindings.endings == ["failed"]
