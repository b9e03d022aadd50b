"""Regeneration in the running ecosystem: runs started, shown and decided from the gateway, and approvals
(from the gateway or from ``ecosystem.py regenerate approve`` in another process) reloaded into the running MAD.

One :class:`RegenerationService` per process, composed by the entry point (:mod:`mad_ecosystem.app`) with
what it may not import itself: the host's ``reload`` (swap one running MAD for its code freshly imported
from disk) and the names of the MADs this process runs. Runs live in ``<data_dir>/regeneration/runs.db``,
the same log the command line uses, so a run started in one place is decided in the other.

How an approval reaches the running MAD, wherever it was given: approval merges the run's branch into
the source and appends ``regen_approved`` to the run log. Every running ecosystem *follows* that log
(:meth:`RegenerationService.follow`): it polls for ``regen_approved`` entries (and ``regen_rolled_back``,
written by ``regenerate --rollback``, which restores the previous approved version) newer than the ones it saw
at start-up (every ``interval`` seconds, a cheap indexed read; at once after an approval given in this
process), reloads each approved MAD it runs, and records ``regen_reloaded`` (or ``regen_reload_failed``
with the reason: the old code is kept running) with its process name. The other MADs are not touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sys
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from bus.envelope import Principal
from mads.core.workflow import Budget, RunLog
from regeneration.confinement import Confinement
from regeneration.pinning import PinnedModel
from regeneration.run import FiedlerCall, Regeneration, RegenerationContext, RunSummary, default_tests
from regeneration.worktree import WorktreeManager

log = logging.getLogger(__name__)

HOME = "regeneration"
RUNS_DB = "runs.db"
WORKTREES = "worktrees"
POLL_INTERVAL = 1.0
_TEST_PATH = re.compile(r"^tests/[A-Za-z0-9_][A-Za-z0-9_./-]*$")

Reload = Callable[[str], Awaitable[object]]


class RegenerationUnavailable(RuntimeError):
    """This process cannot regenerate: its source is not a git checkout."""


class StartRun(BaseModel):
    """What an operator gives to start a run: the MAD, the pinned model and the budget."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mad: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$", description="the MAD to regenerate")
    model: str = Field(min_length=1, max_length=64, description="Fiedler registry name of the pinned model")
    model_id: str = Field(
        min_length=3, max_length=200, description="the exact model id that name must be bound to (aliases refused)"
    )
    temperature: float = Field(0.0, ge=0, le=2)
    max_tokens: int = Field(16000, ge=1, le=1_000_000)
    max_calls: int = Field(5, ge=1, le=100, description="LLM calls the run may make")
    max_cost_usd: float | None = Field(None, gt=0, le=10_000, description="USD the run may spend")
    max_seconds: float = Field(1800.0, ge=10, le=86_400, description="wall-clock seconds the run may take")
    tests: list[str] | None = Field(
        None,
        min_length=1,
        max_length=50,
        description="test paths under tests/ run confined (default: tests/mads/<mad>); the architecture tests always",
    )

    @field_validator("tests")
    @classmethod
    def _test_paths(cls, paths: list[str] | None) -> list[str] | None:
        for path in paths or []:
            if not _TEST_PATH.match(path) or ".." in path.split("/"):
                raise ValueError(f"{path!r} is not a relative path under tests/")
        return paths


class RunBrief(BaseModel):
    """One line of the run list."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    mad: str
    started_by: str
    status: str
    state: str
    decision: str | None
    llm_calls: int
    cost_usd: float
    awaiting_approval: bool


class Decided(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    decision: str
    merged: str | None = None
    reloaded: list[str] = Field(default_factory=list, description="the MADs reloaded in this process")


def is_git_checkout(path: Path) -> bool:
    return (path / ".git").exists()


class RegenerationService:
    """Starts, lists, shows and decides runs over ``<data_dir>/regeneration/runs.db``; follows approvals into the
    running MADs."""

    def __init__(
        self,
        source: Path,
        data_dir: Path,
        *,
        python: str = sys.executable,
        confinement: Confinement | None = None,
        interval: float = POLL_INTERVAL,
    ) -> None:
        self.source = source
        self.data_dir = data_dir
        """The ecosystem's data: a change adding a migration is rehearsed on a copy of its MAD's databases."""
        self.home = data_dir / HOME
        self.python = python
        self.confinement = confinement or Confinement()
        self.interval = interval
        self._log: RunLog | None = None
        self._opening = asyncio.Lock()
        self._checking = asyncio.Lock()
        self._runs: dict[str, Regeneration] = {}
        self._seen = 0
        self._reload: Reload | None = None
        self._running: Callable[[], Iterable[str]] = lambda: ()
        self._process = ""
        self._task: asyncio.Task[None] | None = None

    # ---- the log, opened when first needed ------------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self.home / RUNS_DB

    async def _opened(self, create: bool = True) -> RunLog | None:
        async with self._opening:
            if self._log is None:
                if not create and not await asyncio.to_thread(self.db_path.exists):
                    return None
                await asyncio.to_thread(self.home.mkdir, parents=True, exist_ok=True)
                self._log = await RunLog.open(self.db_path)
            return self._log

    async def _decider(self) -> Regeneration:
        log_ = await self._opened()
        assert log_ is not None
        return self._regeneration(log_, PinnedModel(name="unset", model_id="unset"), Budget(llm_calls=1), _no_llm)

    def _regeneration(self, log_: RunLog, model: PinnedModel, budget: Budget, fiedler: FiedlerCall) -> Regeneration:
        if not is_git_checkout(self.source):
            raise RegenerationUnavailable(f"source: {self.source} is not a git checkout; cannot regenerate here")
        return Regeneration(
            RegenerationContext(
                source=self.source,
                worktrees=WorktreeManager(self.source, self.home / WORKTREES),
                confinement=self.confinement,
                log=log_,
                fiedler=fiedler,
                model=model,
                budget=budget,
                python=self.python,
                data_dir=self.data_dir,
            )
        )

    # ---- runs ------------------------------------------------------------------------------------

    async def start(self, request: StartRun, principal: Principal, fiedler: FiedlerCall) -> str:
        """Start a run for ``principal`` (who must be an operator); it is driven in the background."""
        if not principal.is_operator:
            raise PermissionError(f"regeneration: {principal} is not an operator")
        log_ = await self._opened()
        assert log_ is not None
        pinned = PinnedModel(
            name=request.model,
            model_id=request.model_id,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
        )
        budget = Budget(llm_calls=request.max_calls, cost_usd=request.max_cost_usd, wall_s=request.max_seconds)
        regen = self._regeneration(log_, pinned, budget, fiedler)
        tests = request.tests
        if tests is not None:
            regen.ctx.tests = lambda mad: list(tests)
        else:
            regen.ctx.tests = default_tests
        run_id = await regen.start(request.mad, principal)
        self._runs[run_id] = regen
        return run_id

    async def wait(self, run_id: str) -> None:
        """Until a run started here reached its end (awaiting approval, failed …)."""
        regen = self._runs.get(run_id)
        if regen is not None:
            await regen.wait(run_id)

    async def runs(self) -> list[RunBrief]:
        log_ = await self._opened(create=False)
        if log_ is None:
            return []
        decider = await self._decider()
        briefs = []
        for run_id in reversed(await decider.list_runs()):
            s = await decider.summary(run_id)
            briefs.append(
                RunBrief(
                    run_id=s.run_id,
                    mad=s.mad,
                    started_by=s.started_by,
                    status=s.status,
                    state=s.state,
                    decision=str(s.decision["decision"]) if s.decision else None,
                    llm_calls=s.llm_calls,
                    cost_usd=s.cost_usd,
                    awaiting_approval=s.decision is None and s.status == "finished" and s.state == "awaiting_approval",
                )
            )
        return briefs

    async def summary(self, run_id: str) -> RunSummary:
        """The run as shown to a person; ``KeyError`` if there is none."""
        if await self._opened(create=False) is None:
            raise KeyError(f"run: no regeneration run {run_id!r}")
        return await (await self._decider()).summary(run_id)

    async def approve(self, run_id: str, principal: Principal) -> Decided:
        """Merge the run's branch, then reload the MAD here at once (other processes follow the log)."""
        async with self._checking:  # the poll must not take this approval's reload from the answer
            merged = await (await self._decider()).approve(run_id, principal)
            reloaded = await self._check()
        return Decided(run_id=run_id, decision="approved", merged=merged, reloaded=reloaded)

    async def reject(self, run_id: str, principal: Principal, reason: str = "") -> Decided:
        await (await self._decider()).reject(run_id, principal, reason)
        return Decided(run_id=run_id, decision="rejected")

    # ---- following approvals -------------------------------------------------------------------------

    async def follow(self, reload: Reload, running: Callable[[], Iterable[str]], process: str) -> None:
        """Reload the MADs of this process when a run for them is approved from now on (here or elsewhere)."""
        self._reload, self._running, self._process = reload, running, process
        try:
            self._seen = await self._last_approval()
        except Exception:  # the ecosystem runs on; approvals are not followed and the operator is told why
            log.exception("regeneration: %s cannot be read; approvals will not be reloaded here", self.db_path)
            self._reload = None
            return
        self._task = asyncio.create_task(self._poll(), name="regeneration:follow-approvals")

    async def _last_approval(self) -> int:
        log_ = await self._opened(create=False)
        if log_ is None:
            return 0
        async with log_.db.execute(
            "SELECT COALESCE(MAX(rowid), 0) FROM entries WHERE kind IN ('regen_approved', 'regen_rolled_back')"
        ) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except Exception:
                log.exception("regeneration: following approvals failed; trying again")

    async def check(self) -> list[str]:
        """Reload every MAD of this process approved since the last check; the MADs reloaded."""
        async with self._checking:
            return await self._check()

    async def _check(self) -> list[str]:
        if self._reload is None:
            return []
        log_ = await self._opened(create=False)
        if log_ is None:
            return []
        async with log_.db.execute(
            "SELECT rowid, run_id, kind FROM entries"
            " WHERE kind IN ('regen_approved', 'regen_rolled_back') AND rowid > ? ORDER BY rowid",
            (self._seen,),
        ) as cur:
            approvals = [(int(row[0]), str(row[1]), str(row[2])) for row in await cur.fetchall()]
        reloaded = []
        for rowid, run_id, kind in approvals:
            after = {"after": "rollback"} if kind == "regen_rolled_back" else {}
            self._seen = rowid
            record = await log_.run(run_id)
            if record is None:
                continue
            mad = str(record.data["mad"])
            if mad not in set(self._running()):
                continue
            try:
                await self._reload(mad)
            except Exception as exc:  # the old code keeps running; the reason is on the run's record
                log.error("regeneration: reloading %s for run %s failed: %s", mad, run_id, exc)
                await log_.append(
                    run_id,
                    "regen_reload_failed",
                    {"mad": mad, "process": self._process, "error": f"{type(exc).__name__}: {exc}"[:2000], **after},
                )
                continue
            log.info("regeneration: reloaded %s (run %s approved)", mad, run_id)
            await log_.append(run_id, "regen_reloaded", {"mad": mad, "process": self._process, **after})
            reloaded.append(mad)
        return reloaded

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for regen in self._runs.values():
            await regen.engine.close()
        self._runs.clear()
        if self._log is not None:
            await self._log.close()
            self._log = None


async def _no_llm(tool: str, arguments: dict[str, object]) -> object:
    raise RuntimeError("deciding a run calls no LLM")
