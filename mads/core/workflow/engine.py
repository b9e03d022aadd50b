"""The workflow engine: drives a run through its definition, validating every output, guarding every move.

A run is a fold over its log. In each non-terminal state the engine asks the state's role for
an output (an LLM call, through whatever :data:`RoleRunner` the owner binds), validates it against
the state's schema (``outcome`` limited to the transitions leaving the state), and on an invalid
output records a ``validation_failed`` entry and asks again with the reason, at most
``max_corrections`` times before the step fails with ``output_invalid``. The transition named
by the output runs its ``before`` hooks, then its guard (code), then is recorded, then its
``after`` hooks. Hooks, guards and LLM calls are *recorded results*: each runs under a key and
its result is stored; a resumed run finds the key and reuses the result instead of doing the
work again. When the run ends — done, failed, cancelled or out of time — the definition's
``on_end`` hooks run once (an ``run_ending`` entry comes first, so a crash between the two
still runs them on resume).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from bus.envelope import Principal
from bus.ids import new_id
from mads.core.workflow.definition import OUTCOME, TransitionSpec, WorkflowDefinition
from mads.core.workflow.log import Entry, RunLog, RunRecord

FailureCode = Literal[
    "output_invalid",
    "budget_exceeded",
    "guard_refused",
    "invalid_transition",
    "hook_failed",
    "timeout",
    "cancelled",
    "unknown_run",
]


class WorkflowFailure(Exception):
    """A typed failure of a step or a run (``code`` says which rule stopped it)."""

    def __init__(self, code: FailureCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class RoleRequest(BaseModel):
    """What a role is asked in one step: where the run is, what it must produce, and why it is asked again."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    subject: str
    state: str
    role: str
    attempt: int
    output_schema: dict[str, Any]
    data: dict[str, Any]
    outputs: dict[str, Any] = Field(description="the last output of each state visited so far")
    correction: str | None = Field(None, description="why the previous output was refused")


class RoleReply(BaseModel):
    """A role's raw answer (text the engine parses as JSON) and what it cost."""

    model_config = ConfigDict(extra="forbid")

    text: str
    cost_usd: float = 0.0
    llm_calls: int = 1


class GuardVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ok: bool
    reason: str = ""
    detail: dict[str, JsonValue] = Field(default_factory=dict)


@dataclass
class StepContext:
    """What a guard or hook sees: the run, the step, its output and the transition being taken."""

    run: RunRecord
    state: str
    step: int
    output: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    transition: TransitionSpec | None = None
    ending: str | None = None
    """For ``on_end`` hooks: finished, failed or cancelled."""
    ending_message: str = ""
    """For ``on_end`` hooks: why the run failed (the typed failure's message)."""


RoleRunner = Callable[[RoleRequest], Awaitable[RoleReply]]
Guard = Callable[[StepContext], Awaitable[GuardVerdict]]
Hook = Callable[[StepContext], Awaitable[JsonValue]]
Observer = Callable[[str, Entry, RunRecord], Awaitable[None]]


class RunOutcome(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    status: Literal["finished", "failed", "cancelled"]
    state: str
    succeeded: bool
    code: str | None = None
    message: str = ""


@dataclass
class RunView:
    """A run folded from its entries."""

    state: str
    step: int
    outputs: dict[str, Any]
    llm_calls: int
    llm_calls_by_state: dict[str, int]
    cost_usd: float
    last_transition: Entry | None
    ending: Entry | None
    ended: Entry | None


def fold(record: RunRecord, entries: list[Entry]) -> RunView:
    view = RunView(record.definition.initial, 0, {}, 0, {}, 0.0, None, None, None)
    for entry in entries:
        if entry.kind == "transition":
            view.state = entry.payload["target"]
            view.step += 1
            view.last_transition = entry
        elif entry.kind == "step_output" and entry.state is not None:
            view.outputs[entry.state] = entry.payload["output"]
        elif entry.kind == "llm_call" and entry.state is not None:
            calls = int(entry.payload.get("llm_calls", 1))
            view.llm_calls += calls
            view.llm_calls_by_state[entry.state] = view.llm_calls_by_state.get(entry.state, 0) + calls
            view.cost_usd += float(entry.payload.get("cost_usd", 0.0))
        elif entry.kind == "run_ending":
            view.ending = entry
        elif entry.kind in ("run_finished", "run_failed", "run_cancelled"):
            view.ended = entry
    return view


def check_output(definition: WorkflowDefinition, state: str, text: str) -> tuple[dict[str, Any] | None, str | None]:
    """Parse and validate one output for ``state``: ``(output, None)`` or ``(None, reason)``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, f"the output is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    validator = jsonschema.Draft202012Validator(definition.step_schema(state))
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = ".".join(str(p) for p in first.absolute_path) or "(the output)"
        return None, f"{where}: {first.message}"[:1000]
    return value, None


class Engine:
    """Runs workflow definitions over one :class:`RunLog`, with code-bound guards and hooks.

    ``roles`` answers a :class:`RoleRequest` (the owner makes it an ephemeral role MAD's LLM
    call); ``guards`` and ``hooks`` map the names used in definitions to code; ``observer`` sees
    every entry appended (events, metrics). Unknown guard or hook names are refused at ``start``.
    """

    def __init__(
        self,
        log: RunLog,
        roles: RoleRunner,
        *,
        guards: Mapping[str, Guard] | None = None,
        hooks: Mapping[str, Hook] | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.log = log
        self.roles = roles
        self.guards = dict(guards or {})
        self.hooks = dict(hooks or {})
        self.observer = observer
        self._tasks: dict[str, asyncio.Task[RunOutcome]] = {}
        self._shutting_down = False

    # ---- starting, driving, cancelling ---------------------------------------------------

    def check_bindings(self, definition: WorkflowDefinition) -> None:
        names = [*definition.on_end]
        for t in definition.transitions:
            names += [*t.before, *t.after, *t.refused_hooks]
            if t.guard is not None and t.guard not in self.guards:
                raise ValueError(f"{definition.key}: transition {t.source}->{t.target}: unknown guard {t.guard!r}")
        unknown = sorted({n for n in names if n not in self.hooks})
        if unknown:
            raise ValueError(f"{definition.key}: unknown hook(s) {', '.join(unknown)}")

    async def start(
        self,
        definition: WorkflowDefinition,
        *,
        principal: Principal,
        subject: str,
        data: dict[str, Any] | None = None,
        run_id: str | None = None,
    ) -> str:
        """Record a new run (not yet driven); returns its id."""
        self.check_bindings(definition)
        record = await self.log.create(run_id or new_id(), definition, principal, subject, data or {})
        await self._append(record, "run_started", {"workflow": definition.key, "subject": subject})
        return record.id

    def drive(self, run_id: str) -> asyncio.Task[RunOutcome]:
        """The task driving ``run_id`` to its end (one per run; a second call returns the same task)."""
        task = self._tasks.get(run_id)
        if task is None or task.done():
            task = asyncio.create_task(self.run(run_id), name=f"workflow-{run_id}")
            self._tasks[run_id] = task
        return task

    async def cancel(self, run_id: str) -> RunOutcome | None:
        """Cancel a driven run; its ``on_end`` hooks run before this returns."""
        task = self._tasks.get(run_id)
        if task is None:
            return None
        task.cancel()
        try:
            return await task
        except asyncio.CancelledError:
            return None

    async def resume_all(self) -> list[str]:
        """Drive every run the log shows unfinished (after a restart); returns their ids."""
        ids = await self.log.unfinished()
        for run_id in ids:
            self.drive(run_id)
        return ids

    async def close(self) -> None:
        """Stop driving (runs stay unfinished in the log and resume on the next start)."""
        self._shutting_down = True
        tasks = [t for t in self._tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def run(self, run_id: str) -> RunOutcome:
        """Drive ``run_id`` until it ends; safe to call on a run resumed from the log."""
        record = await self.log.run(run_id)
        if record is None:
            raise WorkflowFailure("unknown_run", f"no run {run_id!r}")
        started = time.monotonic()
        try:
            while True:
                view = fold(record, await self.log.entries(run_id))
                if view.ended is not None:
                    return self._outcome(record, view)
                if view.ending is not None:
                    return await self._end(record, view, view.ending.payload)
                if view.last_transition is not None:
                    moved = view.last_transition.payload
                    source = moved["source"]
                    ctx = StepContext(
                        record,
                        source,
                        view.step - 1,
                        output=view.outputs.get(source, {}),
                        outputs=view.outputs,
                        transition=record.definition.transition(source, moved["on"]),
                    )
                    await self._run_hooks(record, view, moved["hooks"], view.step - 1, "after", ctx)
                spec = record.definition.states[view.state]
                if spec.terminal:
                    status = "finished"
                    ending = {"status": status, "code": None, "message": ""}
                    await self._append(record, "run_ending", ending, state=view.state, key="ending")
                    return await self._end(record, fold(record, await self.log.entries(run_id)), ending)
                self._check_run_time(record, started)
                await self._step(record, view)
        except WorkflowFailure as failure:
            view = fold(record, await self.log.entries(run_id))
            ending = {"status": "failed", "code": failure.code, "message": failure.message}
            await self._append(record, "run_ending", ending, state=view.state, key="ending")
            return await self._end(record, fold(record, await self.log.entries(run_id)), ending)
        except asyncio.CancelledError:
            # Cancelled (a person's cancel, or shutdown): record it and release what the run holds.
            # Shutdown (close) leaves no ending: the run resumes on the next start.
            if self._closing(run_id):
                raise
            await asyncio.shield(self._cancelled(record))
            raise

    def _closing(self, run_id: str) -> bool:
        return self._shutting_down

    async def _cancelled(self, record: RunRecord) -> None:
        view = fold(record, await self.log.entries(record.id))
        if view.ended is not None:
            return
        ending = {"status": "cancelled", "code": "cancelled", "message": "the run was cancelled"}
        if view.ending is None:
            await self._append(record, "run_ending", ending, state=view.state, key="ending")
            view = fold(record, await self.log.entries(record.id))
        await self._end(record, view, view.ending.payload if view.ending else ending)

    async def _end(self, record: RunRecord, view: RunView, ending: dict[str, Any]) -> RunOutcome:
        ctx = StepContext(
            record,
            view.state,
            view.step,
            outputs=view.outputs,
            ending=ending["status"],
            ending_message=str(ending.get("message") or ""),
        )
        for name in record.definition.on_end:
            hook = self.hooks[name]
            # Every end hook runs even if one fails (its failure is recorded as hook_failed).
            with contextlib.suppress(WorkflowFailure):
                await self._once(record, f"end:{name}", "hook", {"hook": name, "when": "end"}, lambda h=hook: h(ctx))
        kind = {"finished": "run_finished", "failed": "run_failed", "cancelled": "run_cancelled"}[ending["status"]]
        await self._append(record, kind, ending, state=view.state, key="ended")
        return self._outcome(record, fold(record, await self.log.entries(record.id)))

    def _outcome(self, record: RunRecord, view: RunView) -> RunOutcome:
        assert view.ended is not None
        payload = view.ended.payload
        spec = record.definition.states[view.state]
        return RunOutcome(
            run_id=record.id,
            status=payload["status"],
            state=view.state,
            succeeded=payload["status"] == "finished" and spec.succeeded,
            code=payload.get("code"),
            message=payload.get("message", ""),
        )

    # ---- one step ----------------------------------------------------------------------------

    async def _step(self, record: RunRecord, view: RunView) -> None:
        definition = record.definition
        state, n = view.state, view.step
        output = await self._output(record, view)
        transition = definition.transition(state, output[OUTCOME])
        if transition is None:  # the schema's enum makes this unreachable; refuse rather than trust it
            raise WorkflowFailure("invalid_transition", f"{state}: no transition on {output[OUTCOME]!r}")
        ctx = StepContext(
            record, state, n, output=output, outputs={**view.outputs, state: output}, transition=transition
        )
        await self._run_hooks(record, view, transition.before, n, "before", ctx)
        verdict = GuardVerdict(ok=True)
        if transition.guard is not None:
            guard = self.guards[transition.guard]
            result = await self._once(
                record,
                f"s{n}:guard",
                "guard",
                {"guard": transition.guard},
                lambda: _dump(guard(ctx)),
            )
            verdict = GuardVerdict.model_validate(result)
        if verdict.ok:
            await self._append(
                record,
                "transition",
                {"source": state, "target": transition.target, "on": transition.on, "hooks": transition.after},
                state=state,
                key=f"s{n}:transition",
            )
            return
        await self._append(
            record,
            "guard_refused",
            {"guard": transition.guard, "reason": verdict.reason, "detail": verdict.detail},
            state=state,
            key=f"s{n}:refused",
        )
        if transition.refused_to is None:
            raise WorkflowFailure("guard_refused", f"{state} -> {transition.target}: {verdict.reason}")
        await self._append(
            record,
            "transition",
            {
                "source": state,
                "target": transition.refused_to,
                "on": transition.on,
                "refused": verdict.reason,
                "hooks": transition.refused_hooks,
            },
            state=state,
            key=f"s{n}:transition",
        )

    async def _output(self, record: RunRecord, view: RunView) -> dict[str, Any]:
        """The step's validated output: recorded, or asked for with bounded corrective retries."""
        definition = record.definition
        state, n = view.state, view.step
        recorded = await self.log.recorded(record.id, f"s{n}:output")
        if recorded is not None:
            return recorded.payload["output"]
        spec = definition.states[state]
        assert spec.role is not None
        correction: str | None = None
        for attempt in range(spec.max_corrections + 1):
            reply = await self._call_role(record, view, attempt, correction)
            if reply.get("error"):
                problem = f"the role failed: {reply['error']}"
            else:
                output, problem = check_output(definition, state, reply["text"])
                if output is not None:
                    await self._append(record, "step_output", {"output": output}, state=state, key=f"s{n}:output")
                    return output
            await self._append(
                record,
                "validation_failed",
                {"attempt": attempt, "reason": problem, "text": str(reply.get("text", ""))[:2000]},
                state=state,
                key=f"s{n}:invalid{attempt}",
            )
            correction = problem
            view = fold(record, await self.log.entries(record.id))
        raise WorkflowFailure(
            "output_invalid", f"{state}: no valid output after {spec.max_corrections + 1} attempts ({correction})"
        )

    async def _call_role(
        self, record: RunRecord, view: RunView, attempt: int, correction: str | None
    ) -> dict[str, Any]:
        definition = record.definition
        state, n = view.state, view.step
        key = f"s{n}:call{attempt}"
        recorded = await self.log.recorded(record.id, key)
        if recorded is not None:
            return recorded.payload
        spec = definition.states[state]
        self._check_budgets(record, view)
        request = RoleRequest(
            run_id=record.id,
            subject=record.subject,
            state=state,
            role=spec.role or "",
            attempt=attempt,
            output_schema=definition.step_schema(state),
            data=record.data,
            outputs=view.outputs,
            correction=correction,
        )
        timeout = _min(spec.budget.wall_s, self._run_remaining(record))
        try:
            async with asyncio.timeout(timeout):
                reply = await self.roles(request)
            payload: dict[str, Any] = {
                "text": reply.text[:200_000],
                "cost_usd": reply.cost_usd,
                "llm_calls": reply.llm_calls,
                "error": None,
            }
        except TimeoutError:
            payload = {"text": "", "cost_usd": 0.0, "llm_calls": 1, "error": f"no answer within {timeout:g}s"}
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a role that crashes is an invalid attempt, bounded like the others
            payload = {"text": "", "cost_usd": 0.0, "llm_calls": 1, "error": f"{type(exc).__name__}: {exc}"[:1000]}
        await self._append(record, "llm_call", {**payload, "role": spec.role, "attempt": attempt}, state=state, key=key)
        return payload

    # ---- budgets ------------------------------------------------------------------------------

    def _check_budgets(self, record: RunRecord, view: RunView) -> None:
        definition = record.definition
        spec = definition.states[view.state]
        if definition.budget.llm_calls is not None and view.llm_calls >= definition.budget.llm_calls:
            raise WorkflowFailure(
                "budget_exceeded", f"run: {view.llm_calls} LLM calls, at most {definition.budget.llm_calls}"
            )
        used = view.llm_calls_by_state.get(view.state, 0)
        if spec.budget.llm_calls is not None and used >= spec.budget.llm_calls:
            raise WorkflowFailure("budget_exceeded", f"{view.state}: {used} LLM calls, at most {spec.budget.llm_calls}")
        if definition.budget.cost_usd is not None and view.cost_usd >= definition.budget.cost_usd:
            raise WorkflowFailure(
                "budget_exceeded", f"run: ${view.cost_usd:.4f} spent, at most ${definition.budget.cost_usd}"
            )
        self._check_run_time(record, None)

    def _run_remaining(self, record: RunRecord) -> float | None:
        wall = record.definition.budget.wall_s
        if wall is None:
            return None
        elapsed = (datetime.now(UTC) - datetime.fromisoformat(record.created_at)).total_seconds()
        return max(0.001, wall - elapsed)

    def _check_run_time(self, record: RunRecord, started: float | None) -> None:
        wall = record.definition.budget.wall_s
        if wall is None:
            return
        elapsed = (datetime.now(UTC) - datetime.fromisoformat(record.created_at)).total_seconds()
        if elapsed >= wall:
            raise WorkflowFailure("timeout", f"run: {elapsed:.1f}s elapsed, at most {wall:g}s")

    # ---- recorded results ---------------------------------------------------------------------------

    async def _run_hooks(
        self, record: RunRecord, view: RunView, names: list[str], step: int, when: str, ctx: StepContext | None = None
    ) -> None:
        if ctx is None:
            ctx = StepContext(record, view.state, step, outputs=view.outputs)
        for name in names:
            hook = self.hooks[name]
            await self._once(
                record, f"s{step}:{when}:{name}", "hook", {"hook": name, "when": when}, lambda h=hook: h(ctx)
            )

    async def _once(
        self,
        record: RunRecord,
        key: str,
        kind: str,
        meta: dict[str, Any],
        work: Callable[[], Awaitable[JsonValue]],
    ) -> JsonValue:
        """Run ``work`` unless its result is recorded under ``key``; record it; return it."""
        recorded = await self.log.recorded(record.id, key)
        if recorded is not None:
            return recorded.payload["result"]
        try:
            result = await work()
        except (WorkflowFailure, asyncio.CancelledError):
            raise
        except Exception as exc:  # a hook or guard that fails fails the step, typed; end hooks still run
            name = meta.get("hook") or meta.get("guard")
            await self._append(record, "hook_failed", {**meta, "error": f"{type(exc).__name__}: {exc}"[:2000]})
            raise WorkflowFailure("hook_failed", f"{kind} {name}: {type(exc).__name__}: {exc}"[:2000]) from exc
        await self._append(record, kind, {**meta, "result": result}, key=key)
        return result

    async def _append(
        self, record: RunRecord, kind: str, payload: dict[str, Any], *, state: str | None = None, key: str | None = None
    ) -> Entry:
        entry = await self.log.append(record.id, kind, payload, state=state, key=key)
        if self.observer is not None:
            await self.observer(kind, entry, record)
        return entry


async def _dump(pending: Awaitable[GuardVerdict]) -> JsonValue:
    verdict = await pending
    return verdict.model_dump(mode="json")


def _min(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if present else None
