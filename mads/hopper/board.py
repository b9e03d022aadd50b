"""The board: stories broken into tasks with a dependency DAG, on Kanban columns with WIP limits.

A story is filed with its acceptance criteria and its tasks at once; a dependency on an unknown
task or a cycle is refused before anything is stored. Tasks move between columns only along
:data:`MOVES`; a move into a column at its WIP limit is refused with :class:`WipLimitReached`
(the scheduler waits and tries again, it never exceeds the limit). A task whose dependencies are
all done becomes ready; one whose dependency failed fails with it. Every move and every attempt's
outcome (test output, errors, reviewer remarks) is kept in the task's trail, which the next
attempt is given.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, Literal

import aiosqlite
from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from bus.envelope import Principal
from bus.ids import new_id
from mads.core.sqlite import Migration, migrate, open_db, write_transaction

Column = Literal["backlog", "ready", "in_progress", "review", "done", "failed"]
COLUMNS: tuple[Column, ...] = ("backlog", "ready", "in_progress", "review", "done", "failed")
TERMINAL: frozenset[str] = frozenset({"done", "failed"})
MOVES: dict[str, frozenset[str]] = {
    "backlog": frozenset({"ready", "failed"}),
    "ready": frozenset({"in_progress", "failed"}),
    "in_progress": frozenset({"review", "ready", "failed"}),
    "review": frozenset({"done", "in_progress", "ready", "failed"}),
    "done": frozenset(),
    "failed": frozenset(),
}


class BoardError(Exception):
    """A refused board operation; ``code`` is the typed error (``invalid_move``, ``cycle``, ``not_found``…)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class WipLimitReached(BoardError):
    def __init__(self, column: str, limit: int) -> None:
        super().__init__("wip_limit", f"{column} holds {limit} task(s), its WIP limit")
        self.column = column
        self.limit = limit


class TaskSpec(BaseModel):
    """One task of a story as filed: ``key`` names it inside the story, ``depends_on`` names other keys."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=8000)
    depends_on: list[str] = Field(default_factory=list, max_length=20)
    priority: int = Field(0, ge=-100, le=100)
    tests: str | None = Field(None, max_length=64_000, description="unittest module the work must pass")


class StorySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    text: str = Field("", max_length=16_000)
    acceptance: list[str] = Field(default_factory=list, max_length=50)
    project: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    priority: int = Field(0, ge=-100, le=100)
    tasks: list[TaskSpec] = Field(min_length=1, max_length=50)

    @model_validator(mode="after")
    def _dag(self) -> StorySpec:
        keys = [t.key for t in self.tasks]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"tasks: duplicate key(s) {', '.join(duplicates)}")
        for index, task in enumerate(self.tasks):
            unknown = [d for d in task.depends_on if d not in keys]
            if unknown:
                raise ValueError(f"tasks.{index}.depends_on: unknown task(s) {', '.join(unknown)}")
        cycle = find_cycle({t.key: t.depends_on for t in self.tasks})
        if cycle:
            raise ValueError(f"tasks: dependency cycle {' -> '.join(cycle)}")
        return self


def find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A cycle of ``graph`` (node -> its dependencies) as a closed path, or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for dep in graph.get(node, []):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if state.get(dep) is None:
                found = visit(dep)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in graph:
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


class Task(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    story_id: str
    key: str
    title: str
    description: str
    tests: str | None
    depends_on: list[str]
    priority: int
    column: Column
    attempts: int
    created_at: float
    updated_at: float


class Story(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    title: str
    text: str
    acceptance: list[str]
    project: str
    priority: int
    principal: Principal
    status: Literal["open", "done", "failed"]
    created_at: float
    finished_at: float | None


MIGRATIONS = (
    Migration(
        1,
        "board",
        """
        CREATE TABLE stories (
            id TEXT PRIMARY KEY, title TEXT NOT NULL, text TEXT NOT NULL, acceptance TEXT NOT NULL,
            project TEXT NOT NULL, priority INTEGER NOT NULL, principal TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'open', created_at REAL NOT NULL, finished_at REAL
        );
        CREATE TABLE tasks (
            id TEXT PRIMARY KEY, story_id TEXT NOT NULL REFERENCES stories(id), key TEXT NOT NULL,
            title TEXT NOT NULL, description TEXT NOT NULL, tests TEXT, depends_on TEXT NOT NULL,
            priority INTEGER NOT NULL, col TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL, updated_at REAL NOT NULL, UNIQUE (story_id, key)
        );
        CREATE INDEX tasks_col ON tasks(col);
        CREATE TABLE trail (
            id INTEGER PRIMARY KEY AUTOINCREMENT, task_id TEXT NOT NULL REFERENCES tasks(id),
            attempt INTEGER NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL, at REAL NOT NULL
        );
        CREATE INDEX trail_task ON trail(task_id, id);
        CREATE TRIGGER trail_append_only_update BEFORE UPDATE ON trail
            BEGIN SELECT RAISE(ABORT, 'the trail is append-only'); END;
        CREATE TRIGGER trail_append_only_delete BEFORE DELETE ON trail
            BEGIN SELECT RAISE(ABORT, 'the trail is append-only'); END;
        """,
    ),
)


class BoardStoreError(Exception):
    pass


class Board:
    """The board's SQLite store. ``wip_limits`` maps a column to the most tasks it may hold at once."""

    def __init__(self, db: aiosqlite.Connection, wip_limits: dict[str, int]) -> None:
        self.db = db
        self._lock = asyncio.Lock()
        # One connection: its transactions must not interleave between coroutines.
        self.wip_limits = dict(wip_limits)

    @classmethod
    async def open(cls, path: Path, wip_limits: dict[str, int]) -> Board:
        unknown = sorted(set(wip_limits) - set(COLUMNS))
        if unknown:
            raise ValueError(f"wip_limits: unknown column(s) {', '.join(unknown)}")
        db = await open_db(path)
        try:
            await migrate(db, MIGRATIONS, error=BoardStoreError, label="hopper board")
        except BaseException:
            await db.close()
            raise
        return cls(db, wip_limits)

    async def close(self) -> None:
        await self.db.close()

    # ---- stories --------------------------------------------------------------------------------

    async def file_story(self, spec: StorySpec, principal: Principal) -> Story:
        """Store a story and its tasks (the DAG was checked by :class:`StorySpec`); tasks with no
        dependency are ready at once."""
        now = time.time()
        story_id = f"s-{new_id()[-10:].lower()}"
        ids = {t.key: f"{story_id}-{t.key}" for t in spec.tasks}
        async with self._lock, write_transaction(self.db):
            await self.db.execute(
                "INSERT INTO stories (id, title, text, acceptance, project, priority, principal, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    story_id,
                    spec.title,
                    spec.text,
                    json.dumps(spec.acceptance),
                    spec.project,
                    spec.priority,
                    principal.model_dump_json(),
                    now,
                ),
            )
            for task in spec.tasks:
                column = "backlog" if task.depends_on else "ready"
                await self.db.execute(
                    "INSERT INTO tasks (id, story_id, key, title, description, tests, depends_on, priority, col,"
                    " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        ids[task.key],
                        story_id,
                        task.key,
                        task.title,
                        task.description,
                        task.tests,
                        json.dumps([ids[d] for d in task.depends_on]),
                        task.priority,
                        column,
                        now,
                        now,
                    ),
                )
                await self._trail(ids[task.key], 0, "filed", {"column": column}, now)
        story = await self.story(story_id)
        assert story is not None
        return story

    async def story(self, story_id: str) -> Story | None:
        async with self.db.execute(
            "SELECT id, title, text, acceptance, project, priority, principal, status, created_at, finished_at"
            " FROM stories WHERE id = ?",
            (story_id,),
        ) as cur:
            row = await cur.fetchone()
        return _story(row) if row else None

    async def stories(self, *, principal: Principal | None = None, status: str | None = None) -> list[Story]:
        sql = (
            "SELECT id, title, text, acceptance, project, priority, principal, status, created_at, finished_at"
            " FROM stories WHERE 1=1"
        )
        params: list[Any] = []
        if principal is not None:
            sql += " AND principal = ?"
            params.append(principal.model_dump_json())
        if status is not None:
            sql += " AND status = ?"
            params.append(status)
        async with self.db.execute(sql + " ORDER BY created_at", params) as cur:
            return [_story(row) for row in await cur.fetchall()]

    # ---- tasks ----------------------------------------------------------------------------------

    async def task(self, task_id: str) -> Task:
        async with self.db.execute(f"SELECT {_TASK_COLUMNS} FROM tasks t WHERE id = ?", (task_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise BoardError("not_found", f"no task {task_id!r}")
        return _task(row)

    async def tasks(self, story_id: str | None = None, column: str | None = None) -> list[Task]:
        sql = f"SELECT {_TASK_COLUMNS} FROM tasks t WHERE 1=1"
        params: list[Any] = []
        if story_id is not None:
            sql += " AND story_id = ?"
            params.append(story_id)
        if column is not None:
            sql += " AND col = ?"
            params.append(column)
        async with self.db.execute(sql + " ORDER BY created_at, key", params) as cur:
            return [_task(row) for row in await cur.fetchall()]

    async def ready_queue(self) -> list[Task]:
        """Ready tasks, most urgent first: story priority, then task priority, then age."""
        async with self.db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks t JOIN stories s ON s.id = t.story_id WHERE t.col = 'ready'"
            " ORDER BY s.priority DESC, t.priority DESC, t.created_at, t.key"
        ) as cur:
            return [_task(row) for row in await cur.fetchall()]

    async def move(self, task_id: str, to: Column, *, reason: str = "", attempt: int | None = None) -> Task:
        """Move a task along :data:`MOVES`, within the target column's WIP limit."""
        now = time.time()
        async with self._lock, write_transaction(self.db):
            task = await self.task(task_id)
            if to not in MOVES[task.column]:
                raise BoardError("invalid_move", f"{task_id}: {task.column} -> {to} is not a board move")
            limit = self.wip_limits.get(to)
            if limit is not None:
                async with self.db.execute("SELECT COUNT(*) FROM tasks WHERE col = ?", (to,)) as cur:
                    row = await cur.fetchone()
                if row is not None and int(row[0]) >= limit:
                    raise WipLimitReached(to, limit)
            attempts = task.attempts + 1 if to == "in_progress" and task.column == "ready" else task.attempts
            await self.db.execute(
                "UPDATE tasks SET col = ?, attempts = ?, updated_at = ? WHERE id = ?", (to, attempts, now, task_id)
            )
            await self._trail(
                task_id,
                attempt if attempt is not None else attempts,
                "moved",
                {"from": task.column, "to": to, "reason": reason},
                now,
            )
            await self._settle(task.story_id, now)
        return await self.task(task_id)

    async def promote(self) -> list[Task]:
        """Backlog tasks whose dependencies are all done become ready; those with a failed one fail."""
        moved: list[Task] = []
        for task in await self.tasks(column="backlog"):
            columns = [(await self.task(dep)).column for dep in task.depends_on]
            to: Column | None = None
            if "failed" in columns:
                to = "failed"
            elif all(c == "done" for c in columns):
                to = "ready"
            if to is None:
                continue
            try:
                moved.append(
                    await self.move(task.id, to, reason="dependencies " + ("failed" if to == "failed" else "done"))
                )
            except BoardError:
                continue  # a concurrent promote moved it first
        return moved

    async def record(self, task_id: str, attempt: int, kind: str, payload: dict[str, JsonValue]) -> None:
        """Add an attempt's outcome to the task's trail (test output, errors, reviewer remarks)."""
        async with self._lock, write_transaction(self.db):
            await self._trail(task_id, attempt, kind, payload, time.time())

    async def trail(self, task_id: str) -> list[dict[str, Any]]:
        async with self.db.execute(
            "SELECT attempt, kind, payload, at FROM trail WHERE task_id = ? ORDER BY id", (task_id,)
        ) as cur:
            rows = await cur.fetchall()
        return [{"attempt": r[0], "kind": r[1], **json.loads(r[2]), "at": r[3]} for r in rows]

    async def _trail(self, task_id: str, attempt: int, kind: str, payload: dict[str, Any], at: float) -> None:
        await self.db.execute(
            "INSERT INTO trail (task_id, attempt, kind, payload, at) VALUES (?, ?, ?, ?, ?)",
            (task_id, attempt, kind, json.dumps(payload), at),
        )

    async def _settle(self, story_id: str, now: float) -> None:
        """Close the story when every task is terminal: done if all are done, failed otherwise."""
        async with self.db.execute("SELECT col FROM tasks WHERE story_id = ?", (story_id,)) as cur:
            columns = [row[0] for row in await cur.fetchall()]
        if columns and all(c in TERMINAL for c in columns):
            status = "done" if all(c == "done" for c in columns) else "failed"
            await self.db.execute(
                "UPDATE stories SET status = ?, finished_at = ? WHERE id = ? AND status = 'open'",
                (status, now, story_id),
            )

    # ---- views ----------------------------------------------------------------------------------

    async def view(self, principal: Principal | None = None) -> dict[str, Any]:
        """Columns with their tasks, WIP counts and limits (a person sees their own stories' tasks)."""
        stories = {s.id: s for s in await self.stories(principal=principal)}
        columns: dict[str, Any] = {c: {"limit": self.wip_limits.get(c), "count": 0, "tasks": []} for c in COLUMNS}
        for task in await self.tasks():
            if task.story_id not in stories:
                continue
            column = columns[task.column]
            column["count"] += 1
            column["tasks"].append(
                {
                    "id": task.id,
                    "story": task.story_id,
                    "title": task.title,
                    "attempts": task.attempts,
                    "priority": task.priority,
                }
            )
        return {
            "columns": columns,
            "stories": [
                {"id": s.id, "title": s.title, "status": s.status, "project": s.project} for s in stories.values()
            ],
        }

    async def metrics(self) -> dict[str, Any]:
        """WIP per column (all stories) and lead time per finished story (seconds)."""
        async with self.db.execute("SELECT col, COUNT(*) FROM tasks GROUP BY col") as cur:
            wip = {c: 0 for c in COLUMNS} | {row[0]: int(row[1]) for row in await cur.fetchall()}
        async with self.db.execute(
            "SELECT id, status, finished_at - created_at FROM stories WHERE finished_at IS NOT NULL"
        ) as cur:
            lead = {row[0]: {"status": row[1], "lead_time_s": row[2]} for row in await cur.fetchall()}
        return {"wip": wip, "lead_time": lead}


_TASK_COLUMNS = (
    "t.id, t.story_id, t.key, t.title, t.description, t.tests, t.depends_on, t.priority, t.col, t.attempts,"
    " t.created_at, t.updated_at"
)


def _task(row: Any) -> Task:
    return Task(
        id=row[0],
        story_id=row[1],
        key=row[2],
        title=row[3],
        description=row[4],
        tests=row[5],
        depends_on=json.loads(row[6]),
        priority=row[7],
        column=row[8],
        attempts=row[9],
        created_at=row[10],
        updated_at=row[11],
    )


def _story(row: Any) -> Story:
    return Story(
        id=row[0],
        title=row[1],
        text=row[2],
        acceptance=json.loads(row[3]),
        project=row[4],
        priority=row[5],
        principal=Principal.model_validate_json(row[6]),
        status=row[7],
        created_at=row[8],
        finished_at=row[9],
    )
