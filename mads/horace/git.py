"""The git repository of one project: a main worktree and one worktree per branch, driven by the git CLI.

Every command runs as a subprocess with a fixed identity, no hooks, no pager, no network
remotes and no user configuration (``GIT_CONFIG_GLOBAL=/dev/null``), so a project's
history is the same whoever's machine it is on.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from pathlib import Path

MAIN = "main"
_BRANCH = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}(/[a-z0-9][a-z0-9._-]{0,99}){0,3}$")
RUN_STEP = "Run-Step"


class GitError(Exception):
    """A git command failed; ``code`` says how (``merge_conflict``, ``no_branch``, ``git_failed``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_branch(name: str) -> str:
    if name == MAIN:
        return name
    if not _BRANCH.match(name) or ".." in name or name.endswith(".lock"):
        raise GitError("bad_branch", f"branch {name!r} must match {_BRANCH.pattern} (no '..', no '.lock')")
    return name


@dataclass(frozen=True)
class Done:
    out: str
    err: str
    code: int


def _env() -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_SYSTEM": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Horace",
        "GIT_AUTHOR_EMAIL": "horace@mad-ecosystem.invalid",
        "GIT_COMMITTER_NAME": "Horace",
        "GIT_COMMITTER_EMAIL": "horace@mad-ecosystem.invalid",
        "LC_ALL": "C",
    }


async def git(cwd: Path, *args: str, check: bool = True) -> Done:
    if not await asyncio.to_thread(cwd.is_dir):
        raise GitError("no_branch", f"{cwd.name}: no such worktree (the branch was discarded)")
    process = await asyncio.create_subprocess_exec(
        "git",
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "core.symlinks=false",
        *args,
        cwd=cwd,
        env=_env(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    done = Done(out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), process.returncode or 0)
    if check and done.code != 0:
        raise GitError("git_failed", f"git {' '.join(args[:2])} failed: {done.err.strip()[:500]}")
    return done


class Repository:
    """A project's repository: ``<root>/main`` is main's worktree, ``<root>/branches/<b>`` each branch's."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.main = root / "main"
        self._lock = asyncio.Lock()

    async def exists(self) -> bool:
        return await asyncio.to_thread((self.main / ".git").exists)

    async def init(self) -> str:
        """Create the repository with an empty first commit on ``main``; returns main's head."""
        await asyncio.to_thread(self.main.mkdir, parents=True, exist_ok=True, mode=0o700)
        await git(self.main, "init", "-q", "-b", MAIN)
        await git(self.main, "commit", "-q", "--allow-empty", "-m", "project created")
        return await self.head(MAIN)

    def worktree(self, branch: str) -> Path:
        check_branch(branch)
        return self.main if branch == MAIN else self.root / "branches" / branch.replace("/", "__")

    async def branches(self) -> list[str]:
        done = await git(self.main, "for-each-ref", "--format=%(refname:short)", "refs/heads")
        return sorted(done.out.split())

    async def create_branch(self, branch: str, start: str = MAIN) -> str:
        """Create ``branch`` from ``start`` with its own worktree (idempotent); returns its head."""
        check_branch(branch)
        if branch == MAIN:
            raise GitError("bad_branch", "main exists already; work happens on task branches")
        async with self._lock:
            path = self.worktree(branch)
            if branch not in await self.branches():
                await git(self.main, "worktree", "add", "-q", "-b", branch, str(path), start)
            elif not await asyncio.to_thread(path.exists):
                await git(self.main, "worktree", "add", "-q", str(path), branch)
        return await self.head(branch)

    async def head(self, branch: str) -> str:
        done = await git(self.main, "rev-parse", "--verify", "-q", f"refs/heads/{check_branch(branch)}", check=False)
        if done.code != 0:
            raise GitError("no_branch", f"no branch {branch!r}")
        return done.out.strip()

    async def commit(self, branch: str, message: str, step: str | None = None) -> tuple[str, bool]:
        """Commit everything in the branch's worktree; ``(sha, created)``.

        With ``step`` (a workflow step key) the commit carries a ``Run-Step`` trailer, and a second
        call with the same key returns the first commit instead of committing again.
        """
        path = self.worktree(branch)
        await self.head(branch)
        if step is not None:
            found = await git(self.main, "log", "--format=%H", f"--grep=^{RUN_STEP}: {re.escape(step)}$", branch)
            if found.out.strip():
                return found.out.split()[0], False
        await git(path, "add", "-A")
        status = await git(path, "status", "--porcelain")
        if not status.out.strip():
            return await self.head(branch), False
        body = f"{message}\n\n{RUN_STEP}: {step}" if step is not None else message
        await git(path, "commit", "-q", "-m", body)
        return await self.head(branch), True

    async def diff(self, branch: str, base: str = MAIN) -> str:
        """The branch's committed and uncommitted changes against ``base``'s head."""
        path = self.worktree(branch)
        await git(path, "add", "-A", "--intent-to-add")
        done = await git(path, "diff", "--no-color", "--no-ext-diff", await self.head(base))
        return done.out

    async def diff_size(self, branch: str, base: str = MAIN) -> int:
        """Lines added plus removed by ``branch`` since it left ``base`` (ties between attempts go to the smaller)."""
        done = await git(self.main, "diff", "--numstat", f"{base}...{branch}")
        total = 0
        for line in done.out.splitlines():
            added, removed, _ = line.split("\t", 2)
            total += int(added) if added.isdigit() else 0
            total += int(removed) if removed.isdigit() else 0
        return total

    async def merge(self, branch: str, message: str) -> tuple[str, bool]:
        """Merge ``branch`` into main (no fast-forward); ``(main head, merged now)``. A conflict is aborted and
        raised as ``merge_conflict``; a branch already in main returns main's head unchanged."""
        async with self._lock:
            tip = await self.head(branch)
            contained = await git(self.main, "merge-base", "--is-ancestor", tip, MAIN, check=False)
            if contained.code == 0:
                return await self.head(MAIN), False
            done = await git(self.main, "merge", "--no-ff", "-q", "-m", message, branch, check=False)
            if done.code != 0:
                await git(self.main, "merge", "--abort", check=False)
                raise GitError("merge_conflict", f"merging {branch} into main conflicts: {done.out.strip()[:300]}")
            return await self.head(MAIN), True

    async def remove_branch(self, branch: str) -> None:
        """Discard a branch and its worktree (a losing attempt)."""
        check_branch(branch)
        if branch == MAIN:
            raise GitError("bad_branch", "main cannot be discarded")
        async with self._lock:
            path = self.worktree(branch)
            if await asyncio.to_thread(path.exists):
                await git(self.main, "worktree", "remove", "--force", str(path))
            await git(self.main, "branch", "-q", "-D", branch, check=False)

    async def log(self, branch: str = MAIN, limit: int = 50) -> list[dict[str, str]]:
        done = await git(self.main, "log", f"-{limit}", "--format=%H%x1f%s%x1f%P", branch)
        entries = []
        for line in done.out.splitlines():
            sha, subject, parents = line.split("\x1f")
            entries.append({"sha": sha, "subject": subject, "parents": parents})
        return entries
