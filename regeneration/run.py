"""A regeneration run as a workflow on the engine (``mads.core.workflow``).

``propose`` (the LLM, through Fiedler, on the pinned model) → the guard ``checked`` (apply the
change in the run's worktree, the architectural report, the MAD's tests and the architecture
tests confined) → ``awaiting_approval``. A refused or red change goes back to ``propose`` with
the reason, while the run's budget (LLM calls, cost, wall time) lasts; the engine stops the run
when it is spent. A person then approves (merge, tag) or rejects (discard) the run.

Everything is recorded in the run log (append-only): who started the run, the model and its
parameters, each prompt's hash, each change's diff hash, report and test results, the decision
and who took it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from bus.envelope import Principal
from bus.ids import new_id
from mads.core.workflow import (
    Budget,
    Engine,
    GuardVerdict,
    RoleReply,
    RoleRequest,
    RunLog,
    RunOutcome,
    StateSpec,
    StepContext,
    TransitionSpec,
    WorkflowDefinition,
    WorkflowFailure,
)
from regeneration.confinement import Confinement, ConfinementLimits
from regeneration.gitrepo import git
from regeneration.migrations import rehearse, shape_check
from regeneration.order import dependencies, dependency_order
from regeneration.pinning import ModelNotPinned, PinnedModel, verify_pinned
from regeneration.prompt import OUTPUT_SCHEMA, build_messages, prompt_hash
from regeneration.report import REGISTRY, build_report, registered_mads
from regeneration.worktree import ChangeRefused, ProposedChange, RegenWorktree, WorktreeManager

FiedlerCall = Callable[[str, dict[str, JsonValue]], Awaitable[JsonValue]]
"""Run one of Fiedler's tools (``chat``, ``models``) by command and return its result."""

AWAITING = "awaiting_approval"
OUTPUT_CAP = 6000


class DecisionRefused(Exception):
    """Approve or reject is not possible for this run now (not awaiting approval, already decided, not an operator)."""


def definition(budget: Budget, max_corrections: int = 1) -> WorkflowDefinition:
    return WorkflowDefinition(
        name="regeneration",
        version=1,
        initial="propose",
        states={
            "propose": StateSpec(role="regenerator", output_schema=OUTPUT_SCHEMA, max_corrections=max_corrections),
            AWAITING: StateSpec(terminal=True, succeeded=True),
        },
        transitions=[
            TransitionSpec(source="propose", target=AWAITING, on="proposed", guard="checked", refused_to="propose")
        ],
        budget=budget,
        on_end=["settle"],
    )


ARCHITECTURE_TESTS = ("tests/test_codebase.py",)
"""Run on their own, so nothing the change adds under ``tests/mads/<mad>/`` (a conftest) is loaded with them."""


def default_tests(mad: str) -> list[str]:
    return [f"tests/mads/{mad}"]


@dataclass
class RegenerationContext:
    """What regeneration needs, passed in: the source, where worktrees go, confinement, the LLM and the log."""

    source: Path
    worktrees: WorktreeManager
    confinement: Confinement
    log: RunLog
    fiedler: FiedlerCall
    model: PinnedModel
    budget: Budget
    python: str
    tests: Callable[[str], list[str]] = default_tests
    limits: ConfinementLimits = field(default_factory=ConfinementLimits)
    data_dir: Path | None = None
    """The ecosystem's data directory: a change that adds a migration is rehearsed on a copy of
    ``<data_dir>/<mad>``'s databases (``None``: on no data, a fresh start)."""


class RunSummary(BaseModel):
    """A run as shown to a person: the state, the report, the tests, the diff, the cost and the decision."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    mad: str
    started_by: str
    status: str
    state: str
    model: dict[str, JsonValue]
    llm_calls: int
    cost_usd: float
    attempts: list[dict[str, JsonValue]]
    report: dict[str, JsonValue] | None
    tests: dict[str, JsonValue] | None
    architecture_tests: dict[str, JsonValue] | None
    migration_rehearsal: dict[str, JsonValue] | None
    diff: str | None
    diff_hash: str | None
    decision: dict[str, JsonValue] | None
    failure: str | None
    reloads: list[dict[str, JsonValue]] = []
    """After approval (or its rollback): each running ecosystem's reload of the MAD (``regen_reloaded`` /
    ``regen_reload_failed``; ``after: "rollback"`` when the reload followed a rollback)."""
    rolled_back: dict[str, JsonValue] | None = None
    """The rollback that returned the MAD to the version before this run's: who, when, the new commit."""


class AllEntry(BaseModel):
    """One MAD's run in ``regenerate --all``."""

    model_config = ConfigDict(extra="forbid")

    mad: str
    run_id: str
    status: str
    state: str
    code: str | None
    failure: str | None


class Regeneration:
    """Starts, drives, shows and decides regeneration runs."""

    def __init__(self, ctx: RegenerationContext) -> None:
        self.ctx = ctx
        self.engine = Engine(ctx.log, self._propose, guards={"checked": self._checked}, hooks={"settle": self._settle})
        self._definition = definition(ctx.budget)

    # ---- starting ----------------------------------------------------------------------------

    async def start(self, mad: str, principal: Principal) -> str:
        """Pin the model, make the worktree, record and drive the run; its id."""
        registry_source = await asyncio.to_thread((self.ctx.source / REGISTRY).read_text, encoding="utf-8")
        known = registered_mads(registry_source)
        if mad not in known:
            raise ValueError(f"mad: unknown MAD {mad!r} (known: {', '.join(known)})")
        try:
            registry_entry = verify_pinned(self.ctx.model, _as_dict(await self.ctx.fiedler("models", {})))
        except ModelNotPinned:
            raise
        run_id = new_id()
        worktree = await self.ctx.worktrees.create(mad, run_id)
        data = {"mad": mad, "worktree": worktree.model_dump(mode="json"), "model": registry_entry}
        await self.engine.start(
            self._definition, principal=principal, subject=f"regenerate {mad}", data=data, run_id=run_id
        )
        await self.ctx.log.append(run_id, "regen_started", {"mad": mad, "by": str(principal), "model": registry_entry})
        self.engine.drive(run_id)
        return run_id

    async def wait(self, run_id: str) -> RunOutcome:
        return await self.engine.drive(run_id)

    async def start_all(self, principal: Principal, only: set[str] | None = None) -> list[AllEntry]:
        """Regenerate every registered MAD (or those in ``only``) in dependency order, one run each.

        Each run has its own budget and its own worktree from the source's ``HEAD``. A run that
        fails does not stop the others (nothing merges before a person approves, so one MAD's
        failed run changes nothing another run sees); a model that is not pinned stops before
        the first run, since it would refuse every one.
        """
        order = dependency_order(await asyncio.to_thread(dependencies, self.ctx.source))
        unknown = sorted((only or set()) - set(order))
        if unknown:
            raise ValueError(f"mad: unknown MAD(s) {', '.join(unknown)} (known: {', '.join(order)})")
        entries: list[AllEntry] = []
        for mad in order:
            if only is not None and mad not in only:
                continue
            run_id = await self.start(mad, principal)
            outcome = await self.wait(run_id)
            entries.append(
                AllEntry(
                    mad=mad,
                    run_id=run_id,
                    status=outcome.status,
                    state=outcome.state,
                    code=outcome.code,
                    failure=outcome.message or None,
                )
            )
        return entries

    # ---- the LLM -----------------------------------------------------------------------------

    async def _propose(self, request: RoleRequest) -> RoleReply:
        worktree = RegenWorktree.model_validate(request.data["worktree"])
        failures = [
            str(e.payload.get("reason", ""))
            for e in await self.ctx.log.entries(request.run_id)
            if e.kind == "guard_refused"
        ]
        if request.correction:
            failures.append(f"Your last answer was not valid: {request.correction}")
        base_tree = await self._export(worktree, worktree.base)
        try:
            messages = await asyncio.to_thread(build_messages, base_tree, worktree.mad, failures)
        finally:
            await asyncio.to_thread(_remove_tree, base_tree)
        digest = prompt_hash(messages)
        pinned = self.ctx.model
        result = _as_dict(
            await self.ctx.fiedler(
                "chat",
                {"messages": messages, "model": pinned.name, **pinned.parameters()},  # type: ignore[dict-item]
            )
        )
        await self.ctx.log.append(
            request.run_id,
            "regen_prompt",
            {
                "prompt_sha256": digest,
                "model": pinned.name,
                "answered_by": result.get("model"),
                "attempt": request.attempt,
            },
        )
        if result.get("model") != pinned.name:
            raise ModelNotPinned(f"model: answered by {result.get('model')!r}, not the pinned {pinned.name!r}")
        return RoleReply(text=str(result.get("content") or ""), cost_usd=float(result.get("cost_usd") or 0.0))

    # ---- the checks --------------------------------------------------------------------------

    async def _checked(self, ctx: StepContext) -> GuardVerdict:
        worktree = RegenWorktree.model_validate(ctx.run.data["worktree"])
        try:
            change = ProposedChange.model_validate({k: v for k, v in ctx.output.items() if k != "outcome"})
        except ValidationError as e:
            return GuardVerdict(ok=False, reason=f"the change is malformed: {e.errors()[0]['msg']}")
        await git(worktree.path, "reset", "-q", "--hard", worktree.base)
        await git(worktree.path, "clean", "-q", "-fdx")
        try:
            commit = await self.ctx.worktrees.apply(worktree, change)
        except ChangeRefused as e:
            return GuardVerdict(ok=False, reason=f"the change was refused: {e}")
        diff = await git(worktree.path, "diff", worktree.base, commit)
        diff_hash = hashlib.sha256(diff.encode()).hexdigest()
        report = await build_report(
            worktree.path, worktree.base, worktree.mad, self.ctx.confinement, declared=change.declared
        )
        detail: dict[str, JsonValue] = {
            "commit": commit,
            "diff_sha256": diff_hash,
            "report": report.model_dump(mode="json"),
        }
        if report.refused:
            broken = "; ".join(f"{v.rule} {v.path}: {v.detail}" for v in report.violations)
            return GuardVerdict(ok=False, reason=f"principles broken: {broken}", detail=detail)
        if report.schema_error:
            return GuardVerdict(ok=False, reason=f"the MAD does not import: {report.schema_error}", detail=detail)
        shape = await shape_check(worktree.path, worktree.base, commit, worktree.mad)
        detail["shape"] = shape.model_dump(mode="json")
        if shape.refused:
            broken = "; ".join(f"{p.rule} {p.path}: {p.detail}" for p in shape.problems)
            return GuardVerdict(ok=False, reason=f"stored data: {broken}", detail=detail)
        for label, paths in (("architecture tests", list(ARCHITECTURE_TESTS)), ("tests", self.ctx.tests(worktree.mad))):
            tests = await self.ctx.confinement.run(
                [self.ctx.python, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *paths],
                worktree.path,
                self.ctx.limits,
                {"PYTHONPATH": str(worktree.path)},
            )
            output = (tests.stdout + tests.stderr)[-OUTPUT_CAP:]
            detail["architecture_tests" if label != "tests" else "tests"] = {
                "paths": list(paths),
                "returncode": tests.returncode,
                "timed_out": tests.timed_out,
                "limit": tests.limit,
                "output": output,
            }
            if not tests.ok:
                why = "timed out" if tests.timed_out else f"exit {tests.returncode}"
                return GuardVerdict(ok=False, reason=f"{label} failed ({why}):\n{output}", detail=detail)
        if shape.migrations_added:
            await self._rehearse(ctx.run.id, worktree, detail)
        await git(worktree.path, "clean", "-q", "-fdx")
        return GuardVerdict(ok=True, detail=detail)

    async def _rehearse(self, run_id: str, worktree: RegenWorktree, detail: dict[str, JsonValue]) -> None:
        """Rehearse the change's migrations on a copy of the MAD's data; a failure stops the run before approval.

        The rehearsal's reason and output go to the audit and the operator, not back to the LLM:
        they may hold stored data.
        """
        data_dir = self.ctx.data_dir if self.ctx.data_dir is not None else worktree.path / ".regen-no-data"
        rehearsal = await rehearse(
            self.ctx.confinement, self.ctx.python, worktree.path, worktree.mad, data_dir, self.ctx.limits
        )
        detail["migration_rehearsal"] = rehearsal.model_dump(mode="json")
        await self.ctx.log.append(
            run_id,
            "regen_migration",
            {"ok": rehearsal.ok, "reason": rehearsal.reason(), **rehearsal.model_dump(mode="json")},
        )
        if not rehearsal.ok:
            raise WorkflowFailure(
                "guard_refused", f"migration rehearsal on a copy of the data failed: {rehearsal.reason()}"
            )

    async def _settle(self, ctx: StepContext) -> JsonValue:
        """However the run ends: a run that did not reach approval leaves nothing behind."""
        if ctx.ending == "finished" and ctx.state == AWAITING:
            return "awaiting approval"
        worktree = RegenWorktree.model_validate(ctx.run.data["worktree"])
        if await asyncio.to_thread(worktree.path.exists):
            await self.ctx.worktrees.discard(worktree)
        return f"discarded ({ctx.ending}: {ctx.ending_message})"[:1000]

    async def _export(self, worktree: RegenWorktree, commit: str) -> Path:
        target = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="regen-prompt-"))
        listing = await git(worktree.path, "ls-tree", "-r", "--name-only", commit)
        wanted = [p for p in listing.split("\n") if p and _is_prompt_file(p, worktree.mad)]
        for path in wanted:
            content = await git(worktree.path, "show", f"{commit}:{path}")
            await asyncio.to_thread(_write, target / path, content)
        return target

    # ---- a person decides -------------------------------------------------------------------------

    async def summary(self, run_id: str) -> RunSummary:
        record = await self.ctx.log.run(run_id)
        if record is None:
            raise KeyError(f"run: no regeneration run {run_id!r}")
        entries = await self.ctx.log.entries(run_id)
        attempts: list[dict[str, JsonValue]] = []
        last_ok: dict[str, Any] | None = None
        status, state, failure, decision = "running", "propose", None, None
        calls, cost = 0, 0.0
        reloads: list[dict[str, JsonValue]] = []
        rolled_back: dict[str, JsonValue] | None = None
        for e in entries:
            if e.kind == "llm_call":
                calls += int(e.payload.get("llm_calls", 1))
                cost += float(e.payload.get("cost_usd", 0.0))
            elif e.kind == "guard" and e.payload.get("guard") == "checked":
                verdict = e.payload["result"]
                attempts.append({"ok": verdict["ok"], "reason": verdict["reason"][:OUTPUT_CAP]})
                if verdict["ok"]:
                    last_ok = verdict["detail"]
            elif e.kind == "transition":
                state = e.payload["target"]
            elif e.kind in ("run_finished", "run_failed", "run_cancelled"):
                status = e.kind.removeprefix("run_")
                failure = e.payload.get("message") or None
            elif e.kind in ("regen_approved", "regen_rejected"):
                decision = {"decision": e.kind.removeprefix("regen_"), **e.payload}
            elif e.kind in ("regen_reloaded", "regen_reload_failed"):
                reloads.append({"outcome": e.kind.removeprefix("regen_"), "at": e.at, **e.payload})
            elif e.kind == "regen_rolled_back":
                rolled_back = {"at": e.at, **e.payload}
        diff = None
        if last_ok is not None and decision is None:
            worktree = RegenWorktree.model_validate(record.data["worktree"])
            diff = await git(self.ctx.source, "diff", worktree.base, last_ok["commit"])
        return RunSummary(
            run_id=run_id,
            mad=record.data["mad"],
            started_by=str(record.principal),
            status=status,
            state=state,
            model=record.data["model"],
            llm_calls=calls,
            cost_usd=cost,
            attempts=attempts,
            report=last_ok["report"] if last_ok else None,
            tests=last_ok.get("tests") if last_ok else None,
            architecture_tests=last_ok.get("architecture_tests") if last_ok else None,
            migration_rehearsal=last_ok.get("migration_rehearsal") if last_ok else None,
            diff=diff,
            diff_hash=last_ok["diff_sha256"] if last_ok else None,
            decision=decision,
            failure=failure,
            reloads=reloads,
            rolled_back=rolled_back,
        )

    async def list_runs(self) -> list[str]:
        rows = await self.ctx.log.db.execute_fetchall(
            "SELECT id FROM runs WHERE workflow = ? ORDER BY id", ("regeneration",)
        )
        return [str(row[0]) for row in rows]

    async def approve(self, run_id: str, approver: Principal) -> str:
        """Merge an awaiting run's branch into the source and tag it; the merged commit."""
        summary = await self._decidable(run_id, approver)
        record = await self.ctx.log.run(run_id)
        assert record is not None
        worktree = RegenWorktree.model_validate(record.data["worktree"])
        merged = await self.ctx.worktrees.approve(worktree, str(approver))
        await self.ctx.log.append(
            run_id, "regen_approved", {"by": str(approver), "merged": merged, "diff_sha256": summary.diff_hash}
        )
        return merged

    async def reject(self, run_id: str, approver: Principal, reason: str = "") -> None:
        await self._decidable(run_id, approver)
        record = await self.ctx.log.run(run_id)
        assert record is not None
        await self.ctx.worktrees.discard(RegenWorktree.model_validate(record.data["worktree"]))
        await self.ctx.log.append(run_id, "regen_rejected", {"by": str(approver), "reason": reason[:2000]})

    async def rollback(self, mad: str, principal: Principal) -> str:
        """Return ``mad`` to its previous approved version; the new commit.

        The rollback is recorded on the run whose approved version it undoes (``regen_rolled_back``), so a
        running ecosystem that follows the log reloads the MAD with the restored code, as after an approval.
        """
        if not principal.is_operator:
            raise DecisionRefused(f"rollback: {principal} is not an operator")
        undone = await self._last_standing_approval(mad)
        commit = await self.ctx.worktrees.rollback(mad)
        if undone is not None:
            await self.ctx.log.append(undone, "regen_rolled_back", {"by": str(principal), "mad": mad, "commit": commit})
        return commit

    async def _last_standing_approval(self, mad: str) -> str | None:
        """The latest approved run of ``mad`` that no rollback has undone yet."""
        rows = await self.ctx.log.db.execute_fetchall(
            "SELECT e.run_id FROM entries e JOIN runs r ON r.id = e.run_id"
            " WHERE r.workflow = ? AND json_extract(r.data, '$.mad') = ? AND e.kind = 'regen_approved'"
            " AND NOT EXISTS (SELECT 1 FROM entries u WHERE u.run_id = e.run_id AND u.kind = 'regen_rolled_back')"
            " ORDER BY e.rowid DESC LIMIT 1",
            ("regeneration", mad),
        )
        rows = list(rows)
        return str(rows[0][0]) if rows else None

    async def _decidable(self, run_id: str, approver: Principal) -> RunSummary:
        if not approver.is_operator:
            raise DecisionRefused(f"approver: {approver} is not an operator")
        summary = await self.summary(run_id)
        if summary.decision is not None:
            raise DecisionRefused(f"run: {run_id} was already {summary.decision['decision']}")
        if summary.status != "finished" or summary.state != AWAITING:
            raise DecisionRefused(f"run: {run_id} is {summary.status} in {summary.state}, not awaiting approval")
        return summary


def _is_prompt_file(path: str, mad: str) -> bool:
    own = (f"mads/{mad}/", f"tests/mads/{mad}/")
    return (
        path.startswith(own)
        or path == f"requirements/{mad}.md"
        or (path.startswith("principles/") and path.endswith(".md"))
    )


def _as_dict(value: JsonValue) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        parsed = json.loads(value)
        if isinstance(parsed, dict):
            return parsed
    raise ValueError(f"fiedler: expected an object, got {type(value).__name__}")


def _write(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content, encoding="utf-8")


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
