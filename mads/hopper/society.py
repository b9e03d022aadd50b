"""Hopper's development society: the board, the workflow engine and the roles, wired together.

A story filed on the board is worked task by task, in dependency order and priority, each task
by one run of :data:`~mads.hopper.workflows.TASK` on its own branch in Horace. The scheduler
moves a ready task to ``in_progress`` only within the column's WIP limit (otherwise the task
waits), starts a run for the principal who filed the story, and drives it; every role step is an
ephemeral role MAD asked under that principal's authority, so Fiedler books and bounds the LLM
calls on their budget. The run's hooks claim and write files, commit, run the tests (the guard),
move the task across columns, merge to main and, however the run ends, release its claims and
settle the task (done, back to ready for another attempt with the trail, or failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from bus.envelope import Principal
from bus.topics import WORKFLOW
from mads.core import authority, names
from mads.core.base import MadContext
from mads.core.errors import RemoteError
from mads.core.workflow import (
    Engine,
    Entry,
    GuardVerdict,
    RoleReply,
    RoleRequest,
    RunLog,
    RunRecord,
    StepContext,
)
from mads.hopper.board import Board, BoardError, Column, StorySpec, WipLimitReached
from mads.hopper.roles import prompt, route
from mads.hopper.verdict import run_verdict
from mads.hopper.workflows import TASK

if TYPE_CHECKING:
    from mads.hopper.mad import Hopper

log = logging.getLogger(__name__)

RELEASE_REASON = {"finished": "completed", "failed": "failed", "cancelled": "cancelled"}
EVENT_KINDS = frozenset(
    {
        "transition",
        "validation_failed",
        "guard_refused",
        "hook_failed",
        "run_started",
        "run_finished",
        "run_failed",
        "run_cancelled",
        "llm_call",
    }
)


class SocietyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wip_limits: dict[str, int] = Field(
        default_factory=lambda: {"in_progress": 4, "review": 4}, description="most tasks a column may hold"
    )
    max_attempts: int = Field(3, ge=1, le=20, description="attempts per task before it fails")
    role_timeout_s: float = Field(120.0, gt=0, description="seconds one role step may take")


class Society:
    """Owned by Hopper: opens the board and the run log, schedules ready tasks, runs and resumes them."""

    def __init__(self, hopper: Hopper, config: SocietyConfig) -> None:
        self.hopper = hopper
        self.config = config
        self.board: Board | None = None
        self.log: RunLog | None = None
        self.engine: Engine | None = None
        self._wake = asyncio.Event()
        self._changed = asyncio.Condition()
        self._scheduler: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._task_runs: dict[str, str] = {}
        self.counters: Counter[str] = Counter()
        self.per_story: dict[str, Counter[str]] = defaultdict(Counter)

    # ---- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        data = self.hopper.data_dir
        self.board = await Board.open(data / "board.db", self.config.wip_limits)
        self.log = await RunLog.open(data / "runs.db")
        self.engine = Engine(
            self.log,
            self.run_role,
            guards={"tests_green": self.tests_green},
            hooks={
                "write_files": self.write_files,
                "to_review": self.to_review,
                "to_in_progress": self.to_in_progress,
                "merge": self.merge,
                "release_claims": self.release_claims,
                "settle": self.settle,
            },
            observer=self.observe,
        )
        await self._recover()
        self._scheduler = asyncio.create_task(self._schedule(), name="society-scheduler")

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        if self.engine is not None:
            await self.engine.close()  # runs stay unfinished in the log and resume at the next start
        if self.log is not None:
            await self.log.close()
        if self.board is not None:
            await self.board.close()

    async def _recover(self) -> None:
        """After a restart: resume unfinished runs; a task left in progress without a run goes back to ready."""
        assert self.board is not None and self.log is not None
        live: set[str] = set()
        for run_id in await self.log.unfinished():
            record = await self.log.run(run_id)
            if record is not None:
                live.add(record.subject)
                self._launch(run_id, record.principal, record.subject)
        for column in ("in_progress", "review"):
            for task in await self.board.tasks(column=column):
                if task.id not in live:
                    await self.board.move(task.id, "ready", reason="recovered after a restart")

    # ---- stories ------------------------------------------------------------------------------

    async def file_story(self, spec: StorySpec, principal: Principal) -> dict[str, JsonValue]:
        assert self.board is not None
        await self.hopper.call(names.HORACE, "create_project", {"project": spec.project})
        story = await self.board.file_story(spec, principal)
        self.counters["stories_filed"] += 1
        await self.hopper.emit(WORKFLOW, {"kind": "story_filed", "story": story.id, "principal": str(principal)})
        self._wake.set()
        return story.model_dump(mode="json")

    # ---- scheduling ---------------------------------------------------------------------------

    async def _schedule(self) -> None:
        assert self.board is not None and self.engine is not None
        while True:
            self._wake.clear()
            try:
                await self._unstick()
                await self.board.promote()
                for task in await self.board.ready_queue():
                    try:
                        await self.board.move(task.id, "in_progress", reason="scheduled")
                    except WipLimitReached:
                        break  # waits for a slot: the next settle wakes the scheduler
                    await self._notify()
                    story = await self.board.story(task.story_id)
                    assert story is not None
                    started = await self.board.task(task.id)
                    run_id = await self.engine.start(
                        TASK,
                        principal=story.principal,
                        subject=task.id,
                        data={
                            "task_id": task.id,
                            "story_id": story.id,
                            "project": story.project,
                            "attempt": started.attempts,
                            "branch": f"task/{task.id}-a{started.attempts}",
                        },
                    )
                    await self.board.record(task.id, started.attempts, "attempt_started", {"run_id": run_id})
                    self._launch(run_id, story.principal, task.id)
            except Exception:
                log.exception("society scheduler pass failed")
            await self._wake.wait()

    async def _unstick(self) -> None:
        """A task in progress or in review whose run has ended without settling it (its settle hook failed)
        goes back to ready, or fails once its attempts are spent: no task waits for a run that is gone."""
        assert self.board is not None
        for column in ("in_progress", "review"):
            for task in await self.board.tasks(column=column):
                run = self._running.get(self._task_runs.get(task.id, ""))
                if run is not None and not run.done():
                    continue
                retry = task.attempts < self.config.max_attempts
                with contextlib.suppress(BoardError):
                    await self.board.move(task.id, "ready" if retry else "failed", reason="its run ended unsettled")
                    await self._notify()

    def _launch(self, run_id: str, principal: Principal, task_id: str) -> None:
        assert self.engine is not None
        self._task_runs[task_id] = run_id
        if run_id in self._running and not self._running[run_id].done():
            return
        # The run's task inherits the story's principal: every request it makes is that person's work.
        with authority.acting_for(principal):
            task = self.engine.drive(run_id)
        self._running[run_id] = task
        task.add_done_callback(lambda _t: self._wake.set())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _move_waiting(self, task_id: str, to: Column, reason: str) -> None:
        """Move a task, waiting (never exceeding) while the target column is at its WIP limit.

        The move is tried under the condition's lock, so a slot freed between a refused move and
        the wait cannot be missed."""
        assert self.board is not None
        async with self._changed:
            while True:
                try:
                    await self.board.move(task_id, to, reason=reason)
                except WipLimitReached:
                    self.counters["wip_waits"] += 1
                    await self._changed.wait()
                else:
                    self._changed.notify_all()
                    return

    # ---- roles --------------------------------------------------------------------------------

    async def run_role(self, request: RoleRequest) -> RoleReply:
        """One step: an ephemeral role MAD, asked in prose for the story's principal, then discarded."""
        assert self.board is not None
        task = await self.board.task(request.data["task_id"])
        story = await self.board.story(task.story_id)
        trail = [
            {k: v for k, v in entry.items() if k != "at"}
            for entry in await self.board.trail(task.id)
            if entry["kind"] in ("verdict", "review", "attempt_failed")
        ][-6:]
        files = await self._files(request.data["project"], "main")
        context = {
            "title": task.title,
            "description": task.description,
            "tests": task.tests,
            "acceptance": story.acceptance if story else [],
            "files": sorted(files),
        }
        role = route(request.role)
        ctx = MadContext(
            bus=self.hopper.ctx.bus,
            data_dir=self.hopper.ctx.data_dir,
            capabilities={},
            redactor=self.hopper.ctx.redactor,
        )
        self.per_story[task.story_id]["llm_steps"] += 1
        async with role.ephemeral(ctx) as mad:
            reply = await self.hopper.ask(
                mad.address, prompt(request, context, trail), timeout=self.config.role_timeout_s
            )
        if reply.error is not None:
            raise RemoteError(mad.address, reply.error)
        return RoleReply(text=reply.text())

    # ---- hooks and the guard ------------------------------------------------------------------

    async def write_files(self, ctx: StepContext) -> JsonValue:
        assert self.board is not None
        data = ctx.run.data
        task = await self.board.task(data["task_id"])
        project, branch = data["project"], data["branch"]
        await self.hopper.call(names.HORACE, "create_branch", {"project": project, "branch": branch})
        files: dict[str, str] = dict(ctx.output["files"])
        if task.tests:
            files[f"test_{task.key.replace('-', '_')}.py"] = task.tests
        for path, content in sorted(files.items()):
            await self.hopper.call(
                names.HORACE,
                "claim",
                {"project": project, "path": path, "holder": ctx.run.id, "group": task.id},
            )
            await self.hopper.call(
                names.HORACE,
                "write_file",
                {"project": project, "branch": branch, "path": path, "holder": ctx.run.id, "content": content},
            )
        commit = await self.hopper.call(
            names.HORACE,
            "commit",
            {
                "project": project,
                "branch": branch,
                "message": f"{task.id}: {task.title} (attempt {data['attempt']})",
                "step": f"{ctx.run.id}:s{ctx.step}",
            },
        )
        return commit

    async def tests_green(self, ctx: StepContext) -> GuardVerdict:
        assert self.board is not None
        data = ctx.run.data
        task = await self.board.task(data["task_id"])
        files = await self._files(data["project"], data["branch"])
        capability = self.hopper.capability
        if capability is None:
            return GuardVerdict(ok=False, reason="the sandbox is not available to run the tests")
        sources = {name: text for name, text in files.items() if not name.startswith("test_")}
        verdict = await run_verdict(capability, self.hopper, None, solution=sources, tests=task.tests or "")
        self.counters["test_runs"] += 1
        self.counters["tests_green" if verdict.green else "tests_red"] += 1
        summary = {
            "green": verdict.green,
            "reason": verdict.reason,
            "failures": verdict.failures,
            "errors": verdict.errors,
            "report": verdict.report[-2000:],
        }
        await self.board.record(task.id, data["attempt"], "verdict", summary)
        await self.hopper.emit(WORKFLOW, {"kind": "test_run", "run_id": ctx.run.id, "task": task.id, **summary})
        return GuardVerdict(ok=verdict.green, reason=verdict.reason, detail={"failures": verdict.failures})

    async def to_review(self, ctx: StepContext) -> JsonValue:
        await self._move_waiting(ctx.run.data["task_id"], "review", "tests green")
        return "review"

    async def to_in_progress(self, ctx: StepContext) -> JsonValue:
        assert self.board is not None
        remarks = str(ctx.output.get("remarks", ""))[:2000]
        await self.board.record(ctx.run.data["task_id"], ctx.run.data["attempt"], "review", {"remarks": remarks})
        await self._move_waiting(ctx.run.data["task_id"], "in_progress", "review rejected")
        return "in_progress"

    async def merge(self, ctx: StepContext) -> JsonValue:
        assert self.board is not None
        data = ctx.run.data
        task = await self.board.task(data["task_id"])
        merged = await self.hopper.call(
            names.HORACE,
            "merge",
            {"project": data["project"], "branch": data["branch"], "message": f"merge {task.id}: {task.title}"},
        )
        assert isinstance(merged, dict)
        await self.board.record(task.id, data["attempt"], "merged", {"main": merged["main"], "run_id": ctx.run.id})
        return merged

    async def release_claims(self, ctx: StepContext) -> JsonValue:
        reason = RELEASE_REASON.get(ctx.ending or "", "failed")
        return await self.hopper.call(names.HORACE, "release", {"holder": ctx.run.id, "reason": reason})

    async def settle(self, ctx: StepContext) -> JsonValue:
        """Done, another attempt (back to ready, with the trail), or failed; idempotent on resume."""
        assert self.board is not None
        data = ctx.run.data
        task = await self.board.task(data["task_id"])
        succeeded = ctx.ending == "finished" and ctx.state == "done"
        if task.column in ("done", "failed", "ready", "backlog"):
            return task.column
        if succeeded:
            if task.column == "in_progress":
                await self._move_waiting(task.id, "review", "approved")
            await self.board.move(task.id, "done", reason=f"merged by run {ctx.run.id}")
            to: str = "done"
        else:
            await self.board.record(
                task.id,
                data["attempt"],
                "attempt_failed",
                {"run_id": ctx.run.id, "ending": ctx.ending, "reason": ctx.ending_message[:1000]},
            )
            with contextlib.suppress(RemoteError):
                await self.hopper.call(
                    names.HORACE, "discard_branch", {"project": data["project"], "branch": data["branch"]}
                )
            retry = ctx.ending != "cancelled" and task.attempts < self.config.max_attempts
            to = "ready" if retry else "failed"
            await self.board.move(task.id, "ready" if retry else "failed", reason=ctx.ending_message[:200])
        await self._notify()
        await self.board.promote()
        story = await self.board.story(task.story_id)
        if story is not None and story.status != "open":
            await self.hopper.emit(WORKFLOW, {"kind": "story_" + story.status, "story": story.id})
        self._wake.set()
        return to

    # ---- views, events, metrics ---------------------------------------------------------------

    async def _files(self, project: str, branch: str) -> dict[str, str]:
        listing = await self.hopper.call(names.HORACE, "list_files", {"project": project, "branch": branch})
        assert isinstance(listing, dict)
        files: dict[str, str] = {}
        for path in listing["files"]:
            if "/" in path or not path.endswith(".py"):
                continue
            read = await self.hopper.call(
                names.HORACE, "read_file", {"project": project, "branch": branch, "path": path}
            )
            assert isinstance(read, dict)
            files[path] = read["content"]
        return files

    async def observe(self, kind: str, entry: Entry, record: RunRecord) -> None:
        """Every run entry: counted; the significant ones published on ``events.workflow`` (McNamara audits)."""
        self.counters[kind] += 1
        story = str(record.data.get("story_id", ""))
        if kind == "llm_call":
            self.per_story[story]["llm_calls"] += int(entry.payload.get("llm_calls", 1))
            self.per_story[story]["cost_usd_micro"] += int(float(entry.payload.get("cost_usd", 0.0)) * 1e6)
        if kind not in EVENT_KINDS:
            return
        payload: dict[str, JsonValue] = {
            "kind": kind,
            "run_id": record.id,
            "task": record.subject,
            "story": story,
            "state": entry.state,
            "at": time.time(),
        }
        if kind == "transition":
            payload.update({"source": entry.payload["source"], "target": entry.payload["target"]})
        elif kind in ("validation_failed", "guard_refused", "hook_failed"):
            payload["reason"] = str(entry.payload.get("reason") or entry.payload.get("error") or "")[:500]
        await self.hopper.emit(WORKFLOW, payload)

    async def metrics(self) -> dict[str, JsonValue]:
        assert self.board is not None
        board = await self.board.metrics()
        return {
            **board,
            "counters": dict(self.counters),
            "per_story": {story: dict(c) for story, c in self.per_story.items()},
        }

    async def trail(self, task_id: str) -> list[dict[str, Any]]:
        assert self.board is not None and self.log is not None
        trail = await self.board.trail(task_id)
        runs = [e["run_id"] for e in trail if e["kind"] == "attempt_started"]
        steps = []
        for run_id in runs:
            for entry in await self.log.entries(run_id):
                if entry.kind in EVENT_KINDS and entry.kind != "llm_call":
                    steps.append(
                        {
                            "run_id": run_id,
                            "seq": entry.seq,
                            "kind": entry.kind,
                            "state": entry.state,
                            "at": entry.at,
                            **{k: v for k, v in entry.payload.items() if k != "hooks"},
                        }
                    )
        return [*trail, *steps]
