"""Hopper, the software engineer: writes Python and runs it, and its tests, in the WASM sandbox."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from mads.core import names
from mads.core.base import MAD, MadContext
from mads.core.errors import ToolFailure
from mads.core.tools import Call, Tool, tool
from mads.hopper.board import BoardError, StorySpec
from mads.hopper.schemas import RunTestsResult, run_tests_args_model
from mads.hopper.society import Society, SocietyConfig
from sandbox import RunResult

if TYPE_CHECKING:
    from mads.core.sandbox_capability import SandboxCapability

DRIVER = Path(__file__).with_name("unittest_driver.py").read_text(encoding="utf-8")
MARKER = "@@hopper-run-tests@@"
REPORT_CHARS = 8000
RUN_TESTS_DESCRIPTION = (
    "Run unittest tests against a solution module in the sandbox: `solution` is importable as `solution`, "
    "`tests` is a unittest module importable as `test_solution`. Returns counts, failing test ids and the report."
)


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HopperConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    society: SocietyConfig = Field(default_factory=SocietyConfig)


class TaskArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: str = Field(min_length=1, max_length=200)


class StoryArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    story_id: str = Field(min_length=1, max_length=200)


class Hopper(MAD[HopperConfig]):
    name = names.HOPPER
    config_model = HopperConfig
    description = "The software engineer: writes Python and runs it (and its tests) in the WASM sandbox."
    role_prompt = (
        "You write and run code. Use run_python to execute Python 3.15 (with numpy, pandas, scipy, matplotlib "
        "and more) in a fresh sandbox with no network, processes or threads, and run_tests to check a module "
        "against unittest tests. Read stdout, stderr, exit_code and limit_hit before answering; if a limit was "
        "hit, say which and fix the code rather than asking for more. Never claim code works without having run it."
    )

    def __init__(self, ctx: MadContext, *, instance: str | None = None) -> None:
        super().__init__(ctx, instance=instance)
        capability = self.capability
        # run_python itself is granted by the host (SandboxCapability.grant); run_tests runs code too,
        # so it follows the same grant.
        if capability is not None and capability.granted(self.name):
            args_model = run_tests_args_model(capability.maxima)

            async def run_tests(args: BaseModel, call: Call) -> RunTestsResult:
                return await self.run_tests(call, **args.model_dump())

            self.add_tool(Tool.from_model("run_tests", RUN_TESTS_DESCRIPTION, args_model, run_tests))

        self.society = Society(self, self.config.society)

    async def on_start(self) -> None:
        if self.instance is None:  # the persistent Hopper runs the society; role instances do not
            await self.society.start()

    async def on_stop(self) -> None:
        if self.instance is None:
            await self.society.stop()

    # ---- the development society -------------------------------------------------------------

    @tool(
        "File a story for the development society: title, text, acceptance criteria, the project (a git "
        "repository Horace keeps), priority, and its tasks (key, title, description, depends_on, priority, "
        "tests: the unittest module the task's code must pass). A dependency cycle is refused."
    )
    async def file_story(self, args: StorySpec, call: Call) -> dict[str, JsonValue]:
        return await self.society.file_story(args, call.principal)

    @tool("The board: Kanban columns with their WIP counts and limits, the tasks in each, and your stories.")
    async def show_board(self, args: NoArgs, call: Call) -> dict[str, JsonValue]:
        board = self.society.board
        assert board is not None
        return await board.view(None if call.principal.is_operator else call.principal)

    @tool("A story's status and its tasks (column, attempts).")
    async def show_story(self, args: StoryArgs, call: Call) -> dict[str, JsonValue]:
        board = self.society.board
        assert board is not None
        story = await board.story(args.story_id)
        if story is None or not self._may_see(story.principal, call):
            raise ToolFailure("not_found", f"no story {args.story_id!r}")
        tasks = [t.model_dump(mode="json", exclude={"tests"}) for t in await board.tasks(story.id)]
        return {"story": story.model_dump(mode="json"), "tasks": tasks}

    @tool("A task's trail: every move, attempt, test run, review and failure, and its runs' steps.")
    async def show_trail(self, args: TaskArgs, call: Call) -> dict[str, JsonValue]:
        board = self.society.board
        assert board is not None
        try:
            task = await board.task(args.task_id)
        except BoardError:
            raise ToolFailure("not_found", f"no task {args.task_id!r}") from None
        story = await board.story(task.story_id)
        if story is None or not self._may_see(story.principal, call):
            raise ToolFailure("not_found", f"no task {args.task_id!r}")
        return {"task": task.model_dump(mode="json"), "trail": await self.society.trail(task.id)}

    @tool("Society metrics: WIP per column, lead time per story, counters, LLM calls and cost per story.")
    async def society_metrics(self, args: NoArgs) -> dict[str, JsonValue]:
        return await self.society.metrics()

    @staticmethod
    def _may_see(owner: object, call: Call) -> bool:
        return call.principal.is_operator or owner == call.principal

    @property
    def capability(self) -> SandboxCapability | None:
        return self.ctx.capabilities.get("sandbox")

    @tool("The sandbox in this process: state, whether the compiled module came from the cache, active runs.")
    async def sandbox_status(self, args: NoArgs) -> dict[str, JsonValue]:
        capability = self.capability
        if capability is None:
            return {"state": "absent", "granted": False}
        return {**capability.status(), "granted": capability.granted(self.name)}

    async def run_tests(
        self, call: Call, *, solution: str, tests: str, limits: dict[str, JsonValue] | None
    ) -> RunTestsResult:
        capability = self.capability
        assert capability is not None  # the tool exists only with the grant
        result = await capability.run(
            self,
            call,
            "run_tests",
            code=DRIVER,
            input_files={"solution.py": solution, "test_solution.py": tests},
            limits=limits,
        )
        return summarise(result)


def summarise(result: RunResult) -> RunTestsResult:
    """Turn the driver's output into counts; without a summary line the run is reported as not ok."""
    head, marker, tail = result.stdout.rpartition("\n" + MARKER)
    stdout = head if marker else result.stdout
    summary: dict[str, JsonValue] = {}
    if marker:
        try:
            loaded = json.loads(tail.splitlines()[0])
            summary = loaded if isinstance(loaded, dict) else {}
        except (json.JSONDecodeError, IndexError):
            summary = {}
    base = {
        "report": result.stderr[-REPORT_CHARS:],
        "stdout": stdout[-REPORT_CHARS:],
        "exit_code": result.exit_code,
        "limit_hit": result.limit_hit,
        "duration_ms": result.duration_ms,
    }
    try:
        counted = RunTestsResult.model_validate({**summary, **base, "ok": False})
    except ValidationError:
        counted = RunTestsResult.model_validate({**base, "ok": False})
    ok = result.ok and bool(summary) and counted.failures == 0 and counted.errors == 0 and counted.tests_run > 0
    return counted.model_copy(update={"ok": ok})
