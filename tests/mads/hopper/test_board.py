"""The board: stories with a task DAG (cycles refused), Kanban moves within WIP limits, priorities, trails."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from bus.envelope import Principal
from mads.hopper.board import Board, BoardError, StorySpec, WipLimitReached, find_cycle

ALICE = Principal(kind="user", name="alice")
BOB = Principal(kind="user", name="bob")


@pytest.fixture
async def board(tmp_path: Path) -> AsyncIterator[Board]:
    store = await Board.open(tmp_path / "board.db", {"in_progress": 2, "review": 1})
    try:
        yield store
    finally:
        await store.close()


def story(**overrides: Any) -> StorySpec:
    spec: dict[str, Any] = {
        "title": "parse and sum",
        "project": "demo",
        "acceptance": ["sum_csv('1,2') == 3"],
        "tasks": [
            {"key": "parse", "title": "parse"},
            {"key": "sum", "title": "sum", "depends_on": ["parse"]},
            {"key": "cli", "title": "cli", "depends_on": ["sum", "parse"]},
        ],
    }
    spec.update(overrides)
    return StorySpec.model_validate(spec)


def test_a_cycle_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match="dependency cycle a -> b -> c -> a"):
        story(
            tasks=[
                {"key": "a", "title": "a", "depends_on": ["b"]},
                {"key": "b", "title": "b", "depends_on": ["c"]},
                {"key": "c", "title": "c", "depends_on": ["a"]},
            ]
        )
    with pytest.raises(ValidationError, match=r"tasks.0.depends_on: unknown task\(s\) ghost"):
        story(tasks=[{"key": "a", "title": "a", "depends_on": ["ghost"]}])
    with pytest.raises(ValidationError, match="dependency cycle a -> a"):
        story(tasks=[{"key": "a", "title": "a", "depends_on": ["a"]}])
    assert find_cycle({"a": ["b"], "b": [], "c": ["a", "b"]}) is None


async def test_tasks_become_ready_in_dependency_order_and_the_story_closes_done(board: Board) -> None:
    filed = await board.file_story(story(), ALICE)
    columns = {t.key: t.column for t in await board.tasks(filed.id)}
    assert columns == {"parse": "ready", "sum": "backlog", "cli": "backlog"}
    for key in ("parse", "sum", "cli"):
        task_id = f"{filed.id}-{key}"
        await board.promote()
        assert (await board.task(task_id)).column == "ready"
        await board.move(task_id, "in_progress")
        await board.move(task_id, "review")
        await board.move(task_id, "done")
    done = await board.story(filed.id)
    assert done is not None and done.status == "done" and done.finished_at is not None
    metrics = await board.metrics()
    assert metrics["wip"]["done"] == 3 and metrics["lead_time"][filed.id]["status"] == "done"


async def test_a_failed_dependency_fails_its_dependants_and_the_story(board: Board) -> None:
    filed = await board.file_story(story(), ALICE)
    await board.move(f"{filed.id}-parse", "in_progress")
    await board.move(f"{filed.id}-parse", "failed", reason="attempts exhausted")
    await board.promote()
    await board.promote()
    assert {t.column for t in await board.tasks(filed.id)} == {"failed"}
    failed = await board.story(filed.id)
    assert failed is not None and failed.status == "failed"


async def test_a_move_into_a_full_column_is_refused_until_a_slot_frees(board: Board) -> None:
    ids = []
    for n in range(3):
        filed = await board.file_story(story(title=f"s{n}", tasks=[{"key": "only", "title": "t"}]), ALICE)
        ids.append(f"{filed.id}-only")
    await board.move(ids[0], "in_progress")
    await board.move(ids[1], "in_progress")
    with pytest.raises(WipLimitReached, match="in_progress holds 2 task"):
        await board.move(ids[2], "in_progress")
    assert (await board.task(ids[2])).column == "ready"
    await board.move(ids[0], "review")
    with pytest.raises(WipLimitReached):
        await board.move(ids[1], "review")
    await board.move(ids[2], "in_progress")
    assert (await board.metrics())["wip"]["in_progress"] == 2


async def test_moves_off_the_board_rules_are_refused(board: Board) -> None:
    filed = await board.file_story(story(), ALICE)
    with pytest.raises(BoardError, match="ready -> done is not a board move"):
        await board.move(f"{filed.id}-parse", "done")
    with pytest.raises(BoardError, match="backlog -> in_progress"):
        await board.move(f"{filed.id}-sum", "in_progress")


async def test_the_ready_queue_orders_by_story_then_task_priority(board: Board) -> None:
    low = await board.file_story(story(title="low", tasks=[{"key": "a", "title": "a"}]), ALICE)
    high = await board.file_story(
        story(
            title="high",
            priority=5,
            tasks=[{"key": "a", "title": "a"}, {"key": "b", "title": "b", "priority": 3}],
        ),
        BOB,
    )
    assert [t.id for t in await board.ready_queue()] == [f"{high.id}-b", f"{high.id}-a", f"{low.id}-a"]


async def test_retries_keep_the_trail_of_earlier_attempts(board: Board) -> None:
    filed = await board.file_story(story(tasks=[{"key": "a", "title": "a"}]), ALICE)
    task_id = f"{filed.id}-a"
    await board.move(task_id, "in_progress")
    await board.record(task_id, 1, "tests_red", {"failed_tests": ["test_x"], "report": "AssertionError: 2 != 3"})
    await board.move(task_id, "ready", reason="retry")
    await board.move(task_id, "in_progress")
    task = await board.task(task_id)
    assert task.attempts == 2
    trail = await board.trail(task_id)
    red = [e for e in trail if e["kind"] == "tests_red"]
    assert red == [
        {
            "attempt": 1,
            "kind": "tests_red",
            "failed_tests": ["test_x"],
            "report": "AssertionError: 2 != 3",
            "at": red[0]["at"],
        }
    ]


async def test_the_board_view_shows_a_person_only_their_stories(board: Board) -> None:
    await board.file_story(story(title="alice's"), ALICE)
    await board.file_story(story(title="bob's", tasks=[{"key": "x", "title": "x"}]), BOB)
    mine = await board.view(ALICE)
    assert [s["title"] for s in mine["stories"]] == ["alice's"]
    assert mine["columns"]["ready"]["count"] == 1 and mine["columns"]["backlog"]["count"] == 2
    assert mine["columns"]["in_progress"]["limit"] == 2
    everyone = await board.view()
    assert everyone["columns"]["ready"]["count"] == 2


async def test_unknown_wip_columns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="wip_limits: unknown column"):
        await Board.open(tmp_path / "b.db", {"doing": 1})


async def test_concurrent_promotions_move_each_task_once(board: Board) -> None:
    import asyncio

    filed = await board.file_story(story(), ALICE)
    await board.move(f"{filed.id}-parse", "in_progress")
    await board.move(f"{filed.id}-parse", "review")
    await board.move(f"{filed.id}-parse", "done")
    results = await asyncio.gather(*(board.promote() for _ in range(4)))
    assert sum(len(r) for r in results) == 1
    assert (await board.task(f"{filed.id}-sum")).column == "ready"
