"""Worktrees of the ecosystem's source: real git, a clone of the current tree as the source."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from regeneration.gitrepo import git
from regeneration.worktree import ChangeRefused, ProposedChange, WorktreeManager

MAD_FILE = "mads/mcnamara/schemas.py"


@pytest.fixture
def manager(ecosystem_source: Path, tmp_path: Path) -> WorktreeManager:
    return WorktreeManager(ecosystem_source, tmp_path / "worktrees")


async def _head(repo: Path) -> str:
    return (await git(repo, "rev-parse", "HEAD")).strip()


async def _read(path: Path) -> str:
    return await asyncio.to_thread(path.read_text)


async def test_a_run_gets_its_own_branch_and_directory_and_the_source_is_untouched(
    manager: WorktreeManager, ecosystem_source: Path
) -> None:
    before = await _head(ecosystem_source)
    original = await _read(ecosystem_source / MAD_FILE)

    wt = await manager.create("mcnamara", "run1")
    commit = await manager.apply(wt, ProposedChange(files={MAD_FILE: "# regenerated\n"}, message="new schemas"))

    assert wt.branch == "regen/mcnamara/run1"
    assert not wt.path.is_relative_to(ecosystem_source)
    assert (await git(wt.path, "branch", "--show-current")).strip() == wt.branch
    assert await _read(wt.path / MAD_FILE) == "# regenerated\n"
    assert (await git(wt.path, "log", "-1", "--format=%s", commit)).strip() == "new schemas"
    # The running tree: same commit, same file.
    assert await _head(ecosystem_source) == before
    assert await _read(ecosystem_source / MAD_FILE) == original


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("bus/memory.py", "not declared"),
        ("../escape.py", "'..'"),
        ("/etc/passwd", "relative"),
        ("mads/mcnamara/../../bus/memory.py", "'..'"),
        (".git/config", ".git"),
        ("mads/mcnamara/.git/hooks/x", ".git"),
    ],
)
async def test_a_change_outside_the_allowed_paths_is_refused_whole(
    manager: WorktreeManager, path: str, reason: str
) -> None:
    wt = await manager.create("mcnamara", "run2")
    change = ProposedChange(files={MAD_FILE: "# would be fine\n", path: "x"})
    with pytest.raises(ChangeRefused, match=reason) as refused:
        await manager.apply(wt, change)
    assert "files[" in str(refused.value)
    assert (await git(wt.path, "status", "--porcelain")).strip() == ""


async def test_a_declared_outside_path_may_be_written(manager: WorktreeManager) -> None:
    wt = await manager.create("mcnamara", "run3")
    await manager.apply(wt, ProposedChange(files={"principles/extra.md": "x\n"}, declared=["principles/extra.md"]))
    assert await _read(wt.path / "principles/extra.md") == "x\n"


async def test_reject_leaves_everything_as_it_was(manager: WorktreeManager, ecosystem_source: Path) -> None:
    before = await _head(ecosystem_source)
    wt = await manager.create("mcnamara", "run4")
    await manager.apply(wt, ProposedChange(files={MAD_FILE: "# rejected\n"}))
    await manager.discard(wt)
    assert await _head(ecosystem_source) == before
    assert not wt.path.exists()
    assert (await git(ecosystem_source, "branch", "--list", wt.branch)).strip() == ""
    assert await manager.versions("mcnamara") == []


async def test_approve_fast_forwards_tags_and_rollback_returns_to_the_previous_version(
    manager: WorktreeManager, ecosystem_source: Path
) -> None:
    original = await _read(ecosystem_source / MAD_FILE)
    first = await manager.create("mcnamara", "a")
    await manager.apply(first, ProposedChange(files={MAD_FILE: "# v1\n", "mads/mcnamara/new.py": "X = 1\n"}))
    merged = await manager.approve(first, "ops")
    assert merged == await _head(ecosystem_source)
    assert await _read(ecosystem_source / MAD_FILE) == "# v1\n"
    assert await manager.versions("mcnamara") == ["regen/mcnamara/v0", "regen/mcnamara/v1"]

    # The source moves on meanwhile: the next approval is a merge commit.
    await asyncio.to_thread((ecosystem_source / "NOTES.md").write_text, "unrelated\n")
    second = await manager.create("mcnamara", "b")
    await git(ecosystem_source, "add", "NOTES.md")
    await git(ecosystem_source, "commit", "-q", "-m", "unrelated work")
    await manager.apply(second, ProposedChange(files={MAD_FILE: "# v2\n", "mads/mcnamara/new.py": None}))
    merged = await manager.approve(second, "ops")
    parents = (await git(ecosystem_source, "log", "-1", "--format=%P", merged)).split()
    assert len(parents) == 2
    assert await _read(ecosystem_source / MAD_FILE) == "# v2\n"
    assert not (ecosystem_source / "mads/mcnamara/new.py").exists()
    assert await manager.versions("mcnamara") == [f"regen/mcnamara/v{n}" for n in range(3)]

    await manager.rollback("mcnamara")
    assert await _read(ecosystem_source / MAD_FILE) == "# v1\n"
    assert await _read(ecosystem_source / "mads/mcnamara/new.py") == "X = 1\n"
    assert await _read(ecosystem_source / "NOTES.md") == "unrelated\n"  # only the MAD's files go back
    await manager.rollback("mcnamara")
    assert await _read(ecosystem_source / MAD_FILE) == original
    assert not (ecosystem_source / "mads/mcnamara/new.py").exists()
    with pytest.raises(ValueError, match="no previous approved version"):
        await manager.rollback("mcnamara")


def test_worktrees_never_live_around_the_running_tree(ecosystem_source: Path) -> None:
    with pytest.raises(ValueError, match="running tree"):
        WorktreeManager(ecosystem_source, ecosystem_source)


async def test_a_branch_named_regen_is_named_as_the_obstacle(manager: WorktreeManager, ecosystem_source: Path) -> None:
    await git(ecosystem_source, "branch", "regen")
    with pytest.raises(ValueError, match="a branch named 'regen' exists"):
        await manager.create("mcnamara", "run5")
