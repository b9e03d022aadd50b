"""A regeneration's own git worktree of the ecosystem's source: never the running tree.

Each run gets a worktree on a new branch ``regen/<mad>/<run>``, branched from the source's
current commit, in a directory outside the source tree. The LLM's change (path → content) is
written there only for the MAD's own paths and the paths it declared, and committed. Approval
merges the branch into the source (fast-forward, else a merge commit) and tags the approved
version ``regen/<mad>/v<N>`` (the version before the first approval is tagged ``v0``);
rejection removes the worktree and the branch and leaves the source as it was. Rollback
restores the MAD's files from the previous approved version in a new commit.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field

from regeneration.gitrepo import git

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_RUN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
AUTHOR = ("-c", "user.name=regeneration", "-c", "user.email=regeneration@localhost")


class ChangeRefused(ValueError):
    """The LLM's change names a path it may not write; nothing of it was written."""


class ProposedChange(BaseModel):
    """What an LLM proposes: whole files by path (``None`` deletes), the outside paths it declares, a message."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    files: dict[str, str | None] = Field(min_length=1)
    declared: list[str] = Field(default_factory=list)
    message: str = Field("regenerate", min_length=1, max_length=2000)


class RegenWorktree(BaseModel):
    model_config = ConfigDict(frozen=True)

    mad: str
    run: str
    branch: str
    path: Path
    base: str


def own_paths(mad: str) -> tuple[str, ...]:
    """The paths a regeneration of ``mad`` may touch without declaring them (prefixes end with ``/``)."""
    return (f"mads/{mad}/", f"tests/mads/{mad}/", f"requirements/{mad}.md")


def _is_own(path: str, mad: str) -> bool:
    return any(path.startswith(p) if p.endswith("/") else path == p for p in own_paths(mad))


class WorktreeManager:
    """Worktrees, merges, approved-version tags and rollbacks for one source repository."""

    def __init__(self, source: Path, root: Path) -> None:
        self.source = source.resolve()
        self.root = root.resolve()
        if self.root == self.source or self.source.is_relative_to(self.root):
            raise ValueError(f"root: {root} would contain the running tree {source}")

    async def create(self, mad: str, run: str) -> RegenWorktree:
        """A new worktree on ``regen/<mad>/<run>`` from the source's current commit."""
        if not _NAME.match(mad):
            raise ValueError(f"mad: {mad!r} is not a MAD name")
        if not _RUN.match(run):
            raise ValueError(f"run: {run!r} must be letters, digits, '-' or '_'")
        base = (await git(self.source, "rev-parse", "HEAD")).strip()
        if (await git(self.source, "branch", "--list", "regen")).strip():
            raise ValueError("source: a branch named 'regen' exists, so git cannot create regen/<mad>/<run>; rename it")
        branch = f"regen/{mad}/{run}"
        path = self.root / f"{mad}-{run}"
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        await git(self.source, "worktree", "add", "-q", "-b", branch, str(path), base)
        return RegenWorktree(mad=mad, run=run, branch=branch, path=path, base=base)

    async def apply(self, worktree: RegenWorktree, change: ProposedChange) -> str:
        """Write ``change`` into the worktree and commit it; the new commit's id.

        Every path is checked before anything is written: relative, inside the tree, not under
        ``.git``, and either the MAD's own or declared.
        """
        declared = {_checked_path("declared", p) for p in change.declared}
        for path in change.files:
            clean = _checked_path(f"files[{path!r}]", path)
            if not (_is_own(clean, worktree.mad) or clean in declared):
                raise ChangeRefused(f"files[{path!r}]: outside {', '.join(own_paths(worktree.mad))} and not declared")
        await asyncio.to_thread(_write_files, worktree.path, change.files)
        await git(worktree.path, "add", "-A")
        status = await git(worktree.path, "status", "--porcelain")
        if not status.strip():
            raise ChangeRefused("files: the change is identical to the current tree")
        await git(worktree.path, *AUTHOR, "commit", "-q", "-m", change.message)
        return (await git(worktree.path, "rev-parse", "HEAD")).strip()

    async def approve(self, worktree: RegenWorktree, approver: str) -> str:
        """Merge the run's branch into the source (fast-forward, else a merge commit) and tag the version."""
        versions = await self.versions(worktree.mad)
        if not versions:
            await git(self.source, "tag", f"regen/{worktree.mad}/v0", worktree.base)
        try:
            await git(self.source, "merge", "--ff-only", "-q", worktree.branch)
        except RuntimeError:
            message = f"regenerate {worktree.mad} ({worktree.run}), approved by {approver}"
            await git(self.source, *AUTHOR, "merge", "--no-ff", "-q", "-m", message, worktree.branch)
        merged = (await git(self.source, "rev-parse", "HEAD")).strip()
        number = len(await self.versions(worktree.mad))
        await git(self.source, "tag", f"regen/{worktree.mad}/v{number}", merged)
        await self.discard(worktree, delete_branch=False)
        return merged

    async def discard(self, worktree: RegenWorktree, *, delete_branch: bool = True) -> None:
        """Remove the worktree (and, on rejection, its branch); the source is left as it was."""
        await git(self.source, "worktree", "remove", "--force", str(worktree.path))
        if delete_branch:
            await git(self.source, "branch", "-D", "-q", worktree.branch)

    async def versions(self, mad: str) -> list[str]:
        """Approved version tags of ``mad``, oldest first (``regen/<mad>/v0`` … ``vN``)."""
        listed = await git(self.source, "tag", "--list", f"regen/{mad}/v*")
        tags = [t for t in listed.split() if re.fullmatch(rf"regen/{re.escape(mad)}/v\d+", t)]
        return sorted(tags, key=lambda t: int(t.rsplit("v", 1)[1]))

    async def rollback(self, mad: str) -> str:
        """Restore ``mad``'s files from the previous approved version, in a new commit on the source.

        The version rolled back from keeps its commit but its tag moves to ``regen/<mad>/rolled-back/vN``,
        so a second rollback goes one version further back.
        """
        versions = await self.versions(mad)
        if len(versions) < 2:
            raise ValueError(f"mad: {mad} has no previous approved version to return to")
        current, previous = versions[-1], versions[-2]
        paths = await self._own_paths_in(mad, current, previous)
        await git(self.source, "rm", "-r", "-q", "--ignore-unmatch", "--", *paths)
        present = await self._own_paths_in(mad, previous)
        if present:
            await git(self.source, "checkout", previous, "--", *present)
        await git(self.source, *AUTHOR, "commit", "-q", "--allow-empty", "-m", f"rollback {mad} to {previous}")
        number = current.rsplit("v", 1)[1]
        await git(self.source, "tag", f"regen/{mad}/rolled-back/v{number}", current)
        await git(self.source, "tag", "-d", current)
        return (await git(self.source, "rev-parse", "HEAD")).strip()

    async def _own_paths_in(self, mad: str, *commits: str) -> list[str]:
        found: set[str] = set()
        for commit in commits:
            for path in own_paths(mad):
                listed = await git(self.source, "ls-tree", "-r", "--name-only", commit, "--", path.rstrip("/"))
                found.update(listed.split())
        return sorted(found)


def _checked_path(field: str, path: str) -> str:
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or "\\" in path:
        raise ChangeRefused(f"{field}: must be a relative POSIX path inside the source tree")
    if any(part in ("..", "") for part in path.split("/")) or ".." in pure.parts:
        raise ChangeRefused(f"{field}: must not contain '..' or empty parts")
    if pure.parts[0] == ".git" or ".git" in pure.parts:
        raise ChangeRefused(f"{field}: must not be inside .git")
    return str(pure)


def _write_files(root: Path, files: dict[str, str | None]) -> None:
    resolved_root = root.resolve()
    for path in files:  # every path checked before anything is written
        target = root / path
        # A symlink in the tree must not carry a write outside it.
        if not target.parent.resolve().is_relative_to(resolved_root):
            raise ChangeRefused(f"files[{path!r}]: resolves outside the worktree")
        if target.is_symlink():
            raise ChangeRefused(f"files[{path!r}]: is a symbolic link")
    for path, content in files.items():
        target = root / path
        if content is None:
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
