"""Horace: a git repository per project, confined file tools, task branches merged to main, claims."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.mads.horace.conftest import HoraceClient
from tests.support.waiting import eventually_async


async def project_with_branch(horace: HoraceClient, branch: str = "task/t1-a1") -> None:
    created = await horace.call("create_project", project="demo")
    assert created["created"] is True
    await horace.call("create_branch", project="demo", branch=branch)


async def test_a_task_branch_is_written_committed_and_merged_into_main(horace: HoraceClient) -> None:
    await project_with_branch(horace)
    await horace.call("claim", project="demo", path="pkg/solution.py", holder="a1", group="t1")
    await horace.call(
        "write_file", project="demo", branch="task/t1-a1", path="pkg/solution.py", holder="a1", content="X = 1\n"
    )
    read = await horace.call("read_file", project="demo", branch="task/t1-a1", path="pkg/solution.py")
    assert read["content"] == "X = 1\n"
    assert (await horace.call("list_files", project="demo", branch="task/t1-a1"))["files"] == ["pkg/solution.py"]
    diff = (await horace.call("diff", project="demo", branch="task/t1-a1"))["diff"]
    assert "+X = 1" in diff
    commit = await horace.call("commit", project="demo", branch="task/t1-a1", message="t1: X", step="r1:s3")
    assert commit["created"] is True and commit["diff_lines"] == 1
    again = await horace.call("commit", project="demo", branch="task/t1-a1", message="t1: X", step="r1:s3")
    assert (again["sha"], again["created"]) == (commit["sha"], False)
    assert (await horace.call("list_files", project="demo"))["files"] == []
    merged = await horace.call("merge", project="demo", branch="task/t1-a1", message="merge t1")
    assert merged["merged"] is True
    assert (await horace.call("merge", project="demo", branch="task/t1-a1", message="merge t1"))["merged"] is False
    main = await horace.call("read_file", project="demo", path="pkg/solution.py")
    assert main["content"] == "X = 1\n"
    log = (await horace.call("log", project="demo"))["commits"]
    assert log[0]["subject"] == "merge t1" and len(log[0]["parents"].split()) == 2


async def test_writing_needs_a_claim_and_main_is_never_written_directly(horace: HoraceClient) -> None:
    await project_with_branch(horace)
    unclaimed = await horace.error(
        "write_file", project="demo", branch="task/t1-a1", path="a.py", holder="a1", content="x"
    )
    assert unclaimed.code == "not_claimed" and "a1 must claim demo:a.py" in unclaimed.message
    await horace.call("claim", project="demo", path="a.py", holder="a1")
    on_main = await horace.error("write_file", project="demo", branch="main", path="a.py", holder="a1", content="x")
    assert on_main.code == "forbidden"


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../outside.py", "leaves the project"),
        ("/etc/passwd", "is absolute"),
        (".git/config", "inside .git"),
        ("a/../../b", "leaves the project"),
        ("we ird.py", "must match"),
    ],
)
async def test_paths_outside_the_workspace_are_refused(horace: HoraceClient, path: str, reason: str) -> None:
    await project_with_branch(horace)
    for tool, extra in (("read_file", {}), ("claim", {"holder": "a1"})):
        error = (
            await horace.error(tool, project="demo", branch="task/t1-a1", path=path, **extra)
            if tool == ("read_file")
            else await horace.error(tool, project="demo", path=path, **extra)
        )
        assert error.code == "path_refused" and reason in error.message, (tool, error)


async def test_a_symlink_out_of_the_workspace_is_never_followed(horace: HoraceClient, tmp_path: Path) -> None:
    await project_with_branch(horace)
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    worktree = horace.horace.repository("demo").worktree("task/t1-a1")
    os.symlink(secret, worktree / "link.txt")
    os.symlink(tmp_path, worktree / "dir")
    read = await horace.error("read_file", project="demo", branch="task/t1-a1", path="link.txt")
    assert read.code == "path_refused" and "symbolic link" in read.message
    await horace.call("claim", project="demo", path="dir/x.py", holder="a1")
    write = await horace.error(
        "write_file", project="demo", branch="task/t1-a1", path="dir/x.py", holder="a1", content="pwned"
    )
    assert write.code == "path_refused"
    assert not (tmp_path / "x.py").exists()
    assert (await horace.call("list_files", project="demo", branch="task/t1-a1"))["files"] == []


async def test_a_conflicting_claim_is_refused_naming_the_holder_until_it_is_released(horace: HoraceClient) -> None:
    await horace.call("create_project", project="demo")
    await horace.call("claim", project="demo", path="a.py", holder="t1-a1", group="t1")
    await horace.call("claim", project="demo", path="a.py", holder="t1-a2", group="t1")  # a parallel attempt
    conflict = await horace.error("claim", project="demo", path="a.py", holder="t2-a1", group="t2")
    assert conflict.code == "claim_conflict" and "claimed by t1-a1 (task t1)" in conflict.message
    assert conflict.retryable is True
    released = await horace.call("release", group="t1", reason="completed")
    assert released == {"released": 2, "reason": "completed"}
    await horace.call("claim", project="demo", path="a.py", holder="t2-a1", group="t2")
    held = (await horace.call("claims", project="demo"))["claims"]
    assert [c["holder"] for c in held] == ["t2-a1"]
    assert await horace.horace.claims_store.released("t1-a1") == ["completed"]


async def test_an_expired_claim_is_released_as_a_timeout(horace: HoraceClient) -> None:
    await horace.call("create_project", project="demo")
    await horace.call("claim", project="demo", path="a.py", holder="slow", ttl_s=0.01)

    async def free() -> bool:
        return (await horace.reply("claim", project="demo", path="a.py", holder="next")).error is None

    await eventually_async(free, what="the expired claim to stop excluding others")
    await horace.call("claims", project="demo")
    assert await horace.horace.claims_store.released("slow") == ["timeout"]


async def test_a_merge_that_conflicts_is_refused_and_main_is_unchanged(horace: HoraceClient) -> None:
    await project_with_branch(horace, "task/a")
    await horace.call("create_branch", project="demo", branch="task/b")
    await horace.call("claim", project="demo", path="f.py", holder="a", group="shared")
    await horace.call("claim", project="demo", path="f.py", holder="b", group="shared")
    for branch, holder in (("task/a", "a"), ("task/b", "b")):
        await horace.call("write_file", project="demo", branch=branch, path="f.py", holder=holder, content=branch)
        await horace.call("commit", project="demo", branch=branch, message=branch)
    first = await horace.call("merge", project="demo", branch="task/a", message="merge a")
    conflict = await horace.error("merge", project="demo", branch="task/b", message="merge b")
    assert conflict.code == "merge_conflict"
    assert (await horace.call("log", project="demo"))["commits"][0]["sha"] == first["main"]
    assert (await horace.call("read_file", project="demo", path="f.py"))["content"] == "task/a"
    await horace.call("discard_branch", project="demo", branch="task/b")
    assert (await horace.error("read_file", project="demo", branch="task/b", path="f.py")).code == "not_found"


async def test_people_cannot_run_horaces_internal_tools(horace: HoraceClient) -> None:
    for tool, args in (
        ("create_project", {"project": "demo"}),
        ("release", {"group": "t1", "reason": "completed"}),
        ("merge", {"project": "demo", "branch": "task/x", "message": "m"}),
    ):
        error = await horace.error(tool, sender="user.mallory", **args)
        assert error.code == "forbidden", tool


async def test_an_unknown_project_is_not_found(horace: HoraceClient) -> None:
    error = await horace.error("read_file", project="nope", path="a.py")
    assert error.code == "not_found" and "no project 'nope'" in error.message
