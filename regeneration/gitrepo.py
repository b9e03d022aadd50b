"""Running git: one async helper, errors raised with git's own message."""

from __future__ import annotations

import asyncio
from pathlib import Path

# The regeneration's worktrees are handed to ``nobody`` while confined commands run in them;
# git must not refuse them afterwards as owned by someone else.
_SAFE = ("-c", "safe.directory=*")


class GitError(RuntimeError):
    """A git command failed; the message carries the command and git's stderr."""


async def git(repo: Path, *args: str, stdin: bytes | None = None) -> str:
    """``git -C repo args…``'s stdout; :class:`GitError` when it fails."""
    process = await asyncio.create_subprocess_exec(
        "git",
        *_SAFE,
        "-C",
        str(repo),
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate(stdin)
    if process.returncode != 0:
        raise GitError(f"git {' '.join(args)}: {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")
